"""Griffe extension: turn the reStructuredText bits of our docstrings into Markdown.

The docstrings are written for readers of the source first. The API pages render them as
Markdown (``docstring_style: null``), where a few reST constructs would show up raw:

* roles ``:class:`~pkg.mod.Name``` (also ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``,
  ``:data:``, ``:obj:``, ``:exc:``) become code spans (``~`` keeps the last component);
* ``:math:`…``` becomes ``$…$`` and ``.. math::`` blocks become ``$$…$$`` (arithmatex);
* simple tables (rows framed by ``=====  =====`` rules) become Markdown tables;
* Google-style sections (``Args:``, ``Returns:``, ``Raises:``, ``Attributes:``) become a bold
  title and a bullet list, one bullet per ``name: description`` entry;
* a paragraph ending in ``::`` (a literal block follows) ends in ``:``; the indented block is
  already a Markdown code block.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")
_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Returns|Raises|Attributes):\s*$")
_ENTRY = re.compile(r"^([\w*][\w*, .()\[\]|]*?):\s+(.*)$")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped.startswith(".. math::"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        body = [stripped[len(".. math::"):].strip()]
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
            body.append(lines[i].strip())
            i += 1
        out.append(f"{indent}$$ {' '.join(b for b in body if b)} $$")
        out.append("")
    return out


def _split_row(row: str, starts: list[int]) -> list[str]:
    """Cells of a simple-table row; a cell that overflows its column ends at the next space."""
    cuts, position = [], 0
    for start in starts[1:]:
        cut = max(start, position)
        while cut < len(row) and cut > 0 and not row[cut - 1].isspace():
            cut += 1
        cuts.append(cut)
        position = cut
    bounds = [0, *cuts, len(row)]
    return [row[a:b].strip() for a, b in itertools.pairwise(bounds)]


def _table(lines: list[str], rules: list[int]) -> list[str]:
    """One reST simple table (``lines[rules[0]] … lines[rules[-1]]``) as a Markdown table.

    With three rules the header is the row between the first two; with two there is no header
    (the Markdown header row stays empty). A row whose first cell is blank continues the row
    above it.
    """
    starts = [m.start() for m in re.finditer(r"=+", lines[rules[0]])]
    header, rows = [""] * len(starts), []
    for index in range(rules[0] + 1, rules[-1]):
        line = lines[index]
        if index in rules:
            if len(rules) == 3 and rows:
                header, rows = rows[0], []
            continue
        if not line.strip():
            continue
        cells = _split_row(line, starts)
        if rows and not cells[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    table = [f"| {' | '.join(header)} |", "|" + " --- |" * len(starts)]
    return ["", *table, *(f"| {' | '.join(row)} |" for row in rows), ""]


def _tables(lines: list[str]) -> list[str]:
    """Every simple table: it opens with a rule and closes with the rule before a blank line."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _RULE.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        rules = [i]
        j = i + 1
        while j < len(lines) and lines[j].strip():
            if _RULE.match(lines[j]):
                rules.append(j)
                if j + 1 >= len(lines) or not lines[j + 1].strip():
                    break
            j += 1
        if len(rules) < 2 or len(rules) > 3:
            out.append(lines[i])
            i += 1
            continue
        out += _table(lines, rules)
        i = rules[-1] + 1
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _sections(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _SECTION.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        base = len(match.group(1))
        body = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            i -= 1
            body.pop()
        out += [f"{match.group(1)}**{match.group(2)}**", ""]
        entry_indent = min((_indent(b) for b in body if b.strip()), default=0)
        for line in body:
            text = line.strip()
            if not text:
                continue
            entry = _ENTRY.match(text) if _indent(line) == entry_indent else None
            if entry:
                out.append(f"{match.group(1)}* `{entry.group(1)}`: {entry.group(2)}")
            elif _indent(line) == entry_indent:
                out.append(f"{match.group(1)}* {text}")
            else:
                out.append(f"{match.group(1)}  {text}")
        out.append("")
    return out


def _literal_markers(lines: list[str]) -> list[str]:
    return [line[:-1] if line.rstrip().endswith("::") and not line.strip().startswith("..") else line
            for line in (ln.rstrip() for ln in lines)]


def convert(text: str) -> str:
    """The Markdown form of one docstring."""
    lines = _tables(_math_blocks(text.split("\n")))
    text = "\n".join(_literal_markers(_sections(lines)))
    return _ROLE.sub(_role, _MATH_ROLE.sub(r"$\1$", text))


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)
