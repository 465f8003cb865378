"""MkDocs hook: typeset the math at build time with KaTeX, so that pages need no script and no network.

``pymdownx.arithmatex`` (generic mode) marks each formula of a page, docstrings and notebooks
included, as ``<span class="arithmatex">\\(…\\)</span>`` or ``<div class="arithmatex">\\[…\\]</div>``.
This hook replaces every such formula, and every formula in a heading's table-of-contents entry,
by the HTML that KaTeX makes of it (one ``node katex_render.cjs`` per page, all formulas of the
page in one batch), and ships KaTeX's style sheet and fonts with the site. A formula KaTeX cannot
parse fails the build, naming the page and the formula.

KaTeX comes from the npm registry, at the version ``package-lock.json`` beside this file pins:
``npm ci --prefix docs/hooks`` (``make docs`` and ``make unit`` run it) installs it into
``docs/hooks/node_modules``. Nothing is fetched while building or viewing the site.
"""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from mkdocs.structure.toc import AnchorLink

log = logging.getLogger("mkdocs.hooks.katex")

HERE = Path(__file__).resolve().parent
RENDERER = HERE / "katex_render.cjs"
DIST = HERE / "node_modules" / "katex" / "dist"
SITE_DIR = "assets/katex"  # where the style sheet and fonts land in the site
STYLE = "katex.min.css"
INSTALL = "npm ci --prefix docs/hooks (or make docs)"

# arithmatex's markers: the element, and the escaped TeX with its delimiters inside it.
_MARKED = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
# In a TOC entry arithmatex's element is gone: only the escaped text \(…\) of the heading is left.
_IN_TITLE = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise PluginError("katex hook: the docs build needs Node.js (`node`) on PATH to typeset the math")
    return node


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    _node()
    if not (DIST / STYLE).is_file():
        raise PluginError(f"katex hook: KaTeX is not installed in {DIST.parent}; run `{INSTALL}`")
    config.extra_css.append(f"{SITE_DIR}/{STYLE}")
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """The style sheet and its fonts join the site (the sheet finds them at ``fonts/…``)."""
    for path in [DIST / STYLE, *sorted((DIST / "fonts").iterdir())]:
        uri = f"{SITE_DIR}/{path.relative_to(DIST).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _unwrap(marked: str) -> tuple[str, bool]:
    """The TeX of an arithmatex element and whether it is a display formula."""
    tex = html.unescape(marked).strip()
    if tex.startswith("\\(") and tex.endswith("\\)"):
        return tex[2:-2], False
    if tex.startswith("\\[") and tex.endswith("\\]"):
        return tex[2:-2], True
    return tex, True  # a bare environment block, \begin{align}…\end{align}


def render(formulas: list[tuple[str, bool]], where: str) -> list[str]:
    """KaTeX's HTML for each ``(tex, display)``, in one node process; errors name ``where``."""
    if not formulas:
        return []
    done = subprocess.run(
        [_node(), str(RENDERER)], input=json.dumps(formulas), capture_output=True, text=True,
        cwd=HERE, timeout=300,
    )
    if done.returncode != 0:
        raise PluginError(f"katex hook: the renderer failed on {where}: {done.stderr.strip()}")
    if done.stderr.strip():  # KaTeX's warnings (e.g. text it does not know in math mode): --strict fails
        log.warning("katex hook: KaTeX warned on %s: %s", where, done.stderr.strip())
    results = json.loads(done.stdout)
    errors = [f"  {tex!r}: {r['error']}" for (tex, _), r in zip(formulas, results) if "error" in r]
    if errors:
        raise PluginError(f"katex hook: KaTeX cannot typeset {len(errors)} formula(s) on {where}:\n"
                          + "\n".join(errors))
    return [r["html"] for r in results]


def _toc_entries(links: list[AnchorLink]) -> list[AnchorLink]:
    return [entry for link in links for entry in [link, *_toc_entries(link.children)]]


def on_page_content(content: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    marked = list(_MARKED.finditer(content))
    titled = [entry for entry in _toc_entries(list(page.toc)) if _IN_TITLE.search(entry.title)]
    in_titles = [match for entry in titled for match in _IN_TITLE.finditer(entry.title)]
    formulas = [_unwrap(m.group(2)) for m in marked]
    formulas += [(html.unescape(m.group(1) or m.group(2)), m.group(2) is not None) for m in in_titles]
    # The search index takes one copy of each formula's text, the visible one: without this it also
    # took the MathML's and its TeX annotation's ("as KKK grows").
    mathml = '<span class="katex-mathml">'
    rendered = iter(markup.replace(mathml, mathml[:-1] + " data-search-exclude>")
                    for markup in render(formulas, page.file.src_uri))

    def typeset(match: re.Match) -> str:
        return f'<{match.group(1)} class="arithmatex">{next(rendered)}</{match.group(1)}>'

    content = _MARKED.sub(typeset, content)
    for entry in titled:
        entry.title = _IN_TITLE.sub(lambda _: next(rendered), entry.title)
    return content
