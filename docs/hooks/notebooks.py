"""MkDocs hook: render ``notebooks/*.ipynb`` as pages, from their committed outputs.

Every notebook ``notebooks/<name>.ipynb`` becomes the page ``notebooks/<name>.md`` (markdown cells
as they are, code cells as Python blocks, text outputs as text blocks, PNG outputs as image files
next to the page) plus a downloadable copy ``notebooks/<name>.ipynb``. Nothing is executed here:
``make test`` executes the notebooks (``pytest --nbmake notebooks``), and the docs show the outputs
saved in git. A notebook that stored an error output fails the build.

The hook also keeps ``--strict`` strict under ``-q``: MkDocs' ``--quiet`` raises the log level to
ERROR, so warnings (a broken link, a missing page) never reach the counter that ``--strict`` uses
and the build passes. Here ``-q`` still silences the INFO lines, but warnings are printed and
counted (see :func:`on_config`).

Converting with ``nbformat`` alone (rather than a plugin such as mkdocs-jupyter) keeps the build
free of an extra dependency and of a second markdown renderer: the pages go through the same
extensions (arithmatex for ``$…$``) and the same ``--strict`` link checks as every other page.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

import nbformat
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.notebooks")

NOTEBOOK_DIR = "notebooks"
MAX_TEXT_LINES = 60


def _fence(text: str, lang: str) -> str:
    """A fenced block long enough not to be closed by backticks inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}\n"


def _clip(text: str) -> str:
    lines = text.rstrip("\n").split("\n")
    if len(lines) <= MAX_TEXT_LINES:
        return "\n".join(lines)
    return "\n".join([*lines[:MAX_TEXT_LINES], f"... ({len(lines) - MAX_TEXT_LINES} more lines)"])


def _text(value: str | list[str]) -> str:
    return value if isinstance(value, str) else "".join(value)


def _link_pages(markdown: str, names: set[str]) -> str:
    """Links between notebooks (``other.ipynb``) point to their pages (``other.md``)."""
    return re.sub(
        r"\]\(([\w-]+)\.ipynb(#[^)]*)?\)",
        lambda m: f"]({m.group(1)}.md{m.group(2) or ''})" if m.group(1) in names else m.group(0),
        markdown,
    )


def render(
    notebook: nbformat.NotebookNode, name: str, names: set[str] = frozenset()
) -> tuple[str, dict[str, bytes]]:
    """Markdown of a notebook and its images ``{relative path: PNG bytes}``.

    ``names``: the other notebooks, whose ``.ipynb`` links become links to their pages.
    """
    parts = [
        f'!!! note "Notebook"\n    Rendered from [`notebooks/{name}.ipynb`]({name}.ipynb) with the outputs '
        "saved in git; `make test` executes it (`pytest --nbmake notebooks`).\n"
    ]
    images: dict[str, bytes] = {}
    for index, cell in enumerate(notebook.cells):
        source = _text(cell.source)
        if cell.cell_type == "markdown":
            parts.append(_link_pages(source.strip(), set(names)) + "\n")
            continue
        if cell.cell_type != "code" or not source.strip():
            continue
        parts.append(_fence(source, "python"))
        for output in cell.get("outputs", []):
            kind = output.output_type
            if kind == "error":
                raise ValueError(
                    f"notebooks/{name}.ipynb: cell {index} stored an error ({output.ename}); "
                    "re-run the notebook before committing it"
                )
            if kind == "stream":
                parts.append(_fence(_clip(_text(output.text)), "text"))
                continue
            data = output.get("data", {})
            if "image/png" in data:
                path = f"{name}/cell{index}_{len(images)}.png"
                images[path] = base64.b64decode(_text(data["image/png"]))
                parts.append(f"![output of cell {index}]({path})\n")
            elif "text/markdown" in data:
                parts.append(_text(data["text/markdown"]).strip() + "\n")
            elif "text/plain" in data:
                parts.append(_fence(_clip(_text(data["text/plain"])), "text"))
    return "\n".join(parts), images


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Under ``--strict``, let warnings through even with ``-q`` (which only hides INFO here)."""
    logger = logging.getLogger("mkdocs")
    if config.strict and logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    return config


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    root = Path(config.config_file_path).parent / NOTEBOOK_DIR
    paths = sorted(root.glob("*.ipynb"))
    names = {path.stem for path in paths}
    for path in paths:
        name = path.stem
        page, images = render(nbformat.read(path, as_version=4), name, names)
        files.append(File.generated(config, f"{NOTEBOOK_DIR}/{name}.md", content=page))
        files.append(File.generated(config, f"{NOTEBOOK_DIR}/{name}.ipynb", content=path.read_bytes()))
        for rel, png in images.items():
            files.append(File.generated(config, f"{NOTEBOOK_DIR}/{rel}", content=png))
        log.debug("rendered %s (%d images)", path, len(images))
    return files
