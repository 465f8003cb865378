"""The documentation: API coverage, navigation, runnable pages, the build hooks, the pages in a browser.

The strict MkDocs build itself runs in ``make test`` (``mkdocs build --strict``); these tests
check what a build does not: that every public name has an API entry, that every page and
notebook is reachable, that the code on the how-to pages runs, that the committed notebooks are
small and free of errors, that the hooks convert what they claim to, and, in headless Chromium
over localhost (where ``chromium`` is installed; CI sets ``REQUIRE_BROWSER=1``), that every page
shows typeset math and no raw TeX, its table of contents included, with nothing fetched from
elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import functools
import html.parser
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import types
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import nbformat
import pytest
import torch
import yaml

import survae_flowify as ffn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"
# Pages whose ```python blocks run as one script, in order (they define what they use).
RUNNABLE = [
    "getting-started.md", "howto/custom-surjection.md", "howto/flowify.md", "howto/train.md",
]
MAX_NOTEBOOK_BYTES = 200_000


def _load(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hooks_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


notebook_hook = _load("notebooks")
griffe_rst = _load("griffe_rst")


def _api_text() -> str:
    return "\n".join(p.read_text() for p in sorted((DOCS / "api").glob("*.md")))


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    if isinstance(node, list):
        return [p for v in node for p in _nav_pages(v)]
    return []


def _config() -> dict:
    # mkdocs.yml holds no custom YAML tags, so the safe loader reads it.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


# ---------------------------------------------------------------------------- API reference


def _resolve(target: str) -> object:
    """The object an mkdocstrings identifier names: the longest importable module, then attributes."""
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                raise AssertionError(f"{target}: {'.'.join(parts[:split])} has no {'.'.join(parts[split:])}")
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"{target}: no importable module")


def _documented() -> list[object]:
    return [_resolve(t) for t in re.findall(r"^::: (\S+)", _api_text(), re.M)]


@pytest.mark.parametrize("name", sorted(ffn.__all__))
def test_every_public_name_has_an_api_entry(name: str) -> None:
    public = getattr(ffn, name)
    assert any(obj is public for obj in _documented()), (
        f"survae_flowify.{name} is public (in __all__) but no docs/api page documents it "
        f"(add '::: survae_flowify.{name}' or the path where it is defined)"
    )


@pytest.mark.parametrize("module", ["testing", "models", "data", "training", "cli", "conversion"])
def test_public_submodules_have_an_api_page(module: str) -> None:
    documented = _documented()
    assert any(obj is importlib.import_module(f"survae_flowify.{module}") for obj in documented)


def test_api_directives_point_at_existing_objects() -> None:
    assert len(_documented()) > 40


# ---------------------------------------------------------------------------- navigation


def test_every_page_and_notebook_is_in_the_nav() -> None:
    nav = set(_nav_pages(_config()["nav"]))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    notebooks = {f"notebooks/{p.stem}.md" for p in NOTEBOOKS.glob("*.ipynb")}
    assert pages | notebooks == nav, (
        f"missing from the nav: {sorted((pages | notebooks) - nav)}; "
        f"in the nav without a page: {sorted(nav - pages - notebooks)}"
    )


def test_math_uses_arithmatex_not_sphinx_roles() -> None:
    extensions = _config()["markdown_extensions"]
    assert any(isinstance(e, dict) and "pymdownx.arithmatex" in e for e in extensions)
    for page in DOCS.rglob("*.md"):
        assert ":math:`" not in page.read_text(), f"{page}: use $…$, not :math: roles"


# ---------------------------------------------------------------------------- the built site


# The build finds node (KaTeX renders the math at build time) on the caller's PATH, nothing else.
BUILD_ENV = {"NO_MKDOCS_2_WARNING": "1", "PATH": os.environ.get("PATH", "")}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT, check=True, env=BUILD_ENV, timeout=300,
    )
    return out


def _build(config_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", *flags, "-d", str(config_dir / "out")],
        cwd=config_dir, env=BUILD_ENV, timeout=300,
        capture_output=True, text=True,
    )


def test_strict_quiet_build_still_fails_on_a_warning(tmp_path: Path) -> None:
    """`mkdocs build --strict -q` (as in make test) must not let a broken link through."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\nSee [a missing page](missing.md).\n")
    hook = (DOCS / "hooks" / "notebooks.py").as_posix()
    (tmp_path / "mkdocs.yml").write_text(f"site_name: t\nhooks:\n  - {hook}\n")
    assert _build(tmp_path, "-q").returncode == 0  # not strict: a warning only
    strict = _build(tmp_path, "--strict", "-q")
    assert strict.returncode != 0 and "missing.md" in strict.stdout + strict.stderr


def _math_site(tmp_path: Path, page: str) -> subprocess.CompletedProcess:
    """A one-page site with our math setup (arithmatex and the KaTeX hook), built strictly."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(page)
    hook = (DOCS / "hooks" / "katex.py").as_posix()
    (tmp_path / "mkdocs.yml").write_text(
        f"site_name: t\nhooks:\n  - {hook}\nmarkdown_extensions:\n  - toc\n"
        "  - pymdownx.arithmatex:\n      generic: true\n")
    return _build(tmp_path, "--strict", "-q")


def test_katex_hook_typesets_text_display_math_and_headings(tmp_path: Path) -> None:
    done = _math_site(tmp_path, "# Home\n\n## Size $N$\n\nInline $a < b$ and\n\n$$\n\\frac{1}{2}\n$$\n")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "out" / "index.html").read_text()
    article = html[html.find('<h1 id="home">'):]
    # KaTeX's own markup, with the TeX kept only as the MathML annotation for screen readers:
    assert article.count('<span class="katex">') == 3 and '<span class="katex-display">' in article
    assert '<annotation encoding="application/x-tex">a &lt; b</annotation>' in article
    shown = re.sub(r"<annotation.*?</annotation>", "", html, flags=re.S)
    assert "\\(" not in shown and "\\[" not in shown and "$" not in shown
    assert (tmp_path / "out" / "assets" / "katex" / "katex.min.css").is_file()
    assert any((tmp_path / "out" / "assets" / "katex" / "fonts").glob("KaTeX_Main-Regular.woff2"))


def test_katex_hook_fails_the_build_on_math_it_cannot_parse(tmp_path: Path) -> None:
    done = _math_site(tmp_path, "# Home\n\nBroken: $\\frac{1$.\n")
    assert done.returncode != 0
    assert "index.md" in done.stderr and "\\frac{1" in done.stderr and "KaTeX" in done.stderr


def _article(page: Path) -> str:
    html = page.read_text()
    body = html[html.find("<article"):html.find("</article>")]
    return re.sub(r"<(pre|code)\b.*?</\1>", "", body, flags=re.S)


def test_built_pages_have_no_unrendered_math_or_lists(site: Path) -> None:
    for page in sorted(site.rglob("index.html")):
        body = _article(page)
        assert "$$" not in body, f"{page.relative_to(site)}: a $$ block was not rendered (blank lines?)"
        assert not re.search(r"(<p>|\n)\s*\* ", body), f"{page.relative_to(site)}: a list was not rendered"


def test_search_index_reads_each_formula_once(site: Path) -> None:
    """Search takes the formula's visible text once (not again from its MathML and TeX annotation)."""
    index = json.loads((site / "search" / "search_index.json").read_text())
    titles = {entry["title"] for entry in index["docs"]}
    assert {"3. The bounds as K grows", "2. Unfold and the multiplicities N"} <= titles
    layers = next(e["text"] for e in index["docs"] if e["location"] == "concepts/layers/")
    assert "contribution V(x,z), with" in layers and "\\mathcal" not in layers


def test_built_notebook_pages_show_their_figures(site: Path) -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        figures = sum("image/png" in o.get("data", {}) for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs)
        page = site / "notebooks" / path.stem / "index.html"
        sources = re.findall(r'<img[^>]+src="([^"]+\.png)"', page.read_text())
        assert len(sources) == figures
        assert all((page.parent / src).is_file() for src in sources)
        assert (site / "notebooks" / path.name).is_file()  # the downloadable notebook


# ---------------------------------------------------------------------------- the site in a browser
#
# The pages are loaded over localhost in headless Chromium, as a reader without network would see
# them: the math must be typeset (KaTeX's or MathJax's output elements), no TeX source may be left
# in the visible text (the table of contents included), and nothing may be fetched from elsewhere.

# Flags for a machine without network: no background fetches, a fresh profile per page.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Control words, math delimiters and dollars: none belongs in the visible text outside code.
RAW_TEX = re.compile(r"\\[A-Za-z]+|\\[()\[\]]|\$")
# Math in the Markdown sources: $$…$$ blocks, then $…$ inline, outside code.
SOURCE_MATH = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$(?!\s)[^$\n]+?(?<!\s)\$", re.S)
SOURCE_CODE = re.compile(r"^(`{3,}).*?^\1|`[^`\n]+`", re.S | re.M)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but there is no `chromium` on PATH (apt-get install -y chromium)")
        pytest.skip("no `chromium` on PATH: the in-browser docs check needs it (apt-get install -y chromium)")
    return path


class _LoggingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site and records every request with its status (fonts and styles included)."""

    def log_request(self, code: object = "-", size: object = "-") -> None:
        self.server.requests.append((self.path, int(code)))

    def log_message(self, format: str, *args: object) -> None:  # quiet: the log above is enough
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_LoggingHandler, directory=str(site)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server.requests
    finally:
        server.shutdown()
        server.server_close()


class _Dom(html.parser.HTMLParser):
    """What a reader sees of a page: visible text (all of it and the TOC's), typeset formulas, loads."""

    HIDDEN: ClassVar[set[str]] = {
        "head", "script", "style", "template", "noscript", "annotation", "pre", "code", "textarea",
    }

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.toc: list[str] = []
        self.formulas = 0  # KaTeX or MathJax output elements inside the article
        self.toc_formulas = 0
        self.loads: list[str] = []  # what the page fetches: scripts, styles, images, frames
        self._hidden = self._article = 0
        self._navs: list[bool] = []  # open <nav>s: is it the page's table of contents?
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag in self.HIDDEN:
            self._hidden += 1
        if tag == "article":
            self._article += 1
        if tag == "nav":
            self._navs.append("md-nav--secondary" in classes)
        typeset = "katex" in classes or tag == "mjx-container"
        self.formulas += typeset and self._article > 0
        self.toc_formulas += typeset and any(self._navs)
        if tag in {"script", "img", "iframe"} and attributes.get("src"):
            self.loads.append(attributes["src"])
        if tag == "link" and attributes.get("href") and "canonical" not in (attributes.get("rel") or ""):
            self.loads.append(attributes["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden -= 1
        if tag == "article":
            self._article -= 1
        if tag == "nav" and self._navs:
            self._navs.pop()

    def handle_data(self, data: str) -> None:
        if self._hidden == 0:
            self.text.append(data)
            if any(self._navs):
                self.toc.append(data)


def _site_pages(site: Path) -> list[str]:
    """Every page, as its path under the site root ("" for the home page)."""
    return sorted(p.parent.relative_to(site).as_posix().removeprefix(".") for p in site.rglob("index.html"))


def _load_in_browser(chromium: str, url: str, profile: Path) -> str:
    """The page's DOM once its scripts ran (Chromium lays it out: the fonts it needs are loaded)."""
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0 and "</html>" in done.stdout, f"{url}: chromium failed: {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def browsed(chromium: str, site: Path, served: tuple, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base, _ = served
    profiles = tmp_path_factory.mktemp("chromium")
    pages = _site_pages(site)

    def load(page: str) -> str:
        url = base + (page + "/" if page else "")
        return _load_in_browser(chromium, url, profiles / (page.replace("/", "_") or "home"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:  # two cores
        return {page: _Dom(dom) for page, dom in zip(pages, pool.map(load, pages))}


def _source_formulas() -> dict[str, int]:
    """Formulas per page, counted in the Markdown sources and the notebooks' Markdown cells."""
    sources = {str(p.relative_to(DOCS).with_suffix("")): p.read_text()
               for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    for path in NOTEBOOKS.glob("*.ipynb"):
        cells = nbformat.read(path, as_version=4).cells
        sources[f"notebooks/{path.stem}"] = "\n\n".join(c.source for c in cells if c.cell_type == "markdown")
    counts = {page.removesuffix("index").rstrip("/"): len(SOURCE_MATH.findall(SOURCE_CODE.sub("", text)))
              for page, text in sources.items()}
    return {page: n for page, n in counts.items() if n}


def test_browser_shows_no_raw_tex_on_any_page(browsed: dict) -> None:
    raw = {page: RAW_TEX.findall("".join(dom.text)) for page, dom in browsed.items()}
    raw = {page: found for page, found in raw.items() if found}
    assert len(browsed) >= 20
    assert not raw, "raw TeX in the visible text: " + "; ".join(
        f"{page or 'home'}: {len(found)} ({' '.join(found[:6])} …)" for page, found in raw.items())


def test_browser_toc_shows_typeset_math(browsed: dict) -> None:
    raw = {page: RAW_TEX.findall("".join(dom.toc)) for page, dom in browsed.items()}
    assert not {page: found for page, found in raw.items() if found}, f"raw TeX in the TOC: {raw}"
    # The notebooks put math in headings ("The bounds as $K$ grows"): their TOC entries are typeset.
    assert browsed["notebooks/augmentation_gaps"].toc_formulas > 0
    assert browsed["notebooks/convolutions"].toc_formulas > 0


def test_browser_typesets_every_formula_of_the_sources(browsed: dict) -> None:
    expected = _source_formulas()
    assert sum(expected.values()) > 300 and "concepts/layers" in expected
    typeset = {page: browsed[page].formulas for page in expected}
    assert typeset == expected, "formulas typeset in the browser (left) vs in the Markdown sources (right)"


def test_browser_loads_only_local_files_and_the_math_fonts(browsed: dict, served: tuple) -> None:
    remote = {page: [u for u in dom.loads if urllib.parse.urlsplit(u).hostname not in {None, "127.0.0.1"}]
              for page, dom in browsed.items()}
    assert not {page: urls for page, urls in remote.items() if urls}, f"fetched from elsewhere: {remote}"
    _, requests = served
    failed = sorted({(path, code) for path, code in requests if code >= 400})
    assert not failed, f"requests that failed: {failed}"
    fetched = {path for path, code in requests if code == 200}
    assert any(re.search(r"katex[^/]*\.css$", path) for path in fetched), "KaTeX's style sheet was not loaded"
    assert any(re.search(r"/KaTeX_[\w-]+\.woff2$", path) for path in fetched), "no KaTeX font was loaded"


# ---------------------------------------------------------------------------- runnable pages


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_code_runs(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / page).read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert blocks, f"{page} has no python blocks"
    # A real module, so that classes defined on the page pickle with torch.save.
    module = types.ModuleType(f"docs_page_{Path(page).stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: threads only contend
    try:
        for block in blocks:
            exec(compile(block, str(DOCS / page), "exec"), module.__dict__)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- notebooks


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebook_is_small_and_clean(path: Path) -> None:
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name}: outputs too large, clear them"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert any(c.outputs for c in code), f"{path.name}: run it before committing (the docs show its outputs)"
    for cell in code:
        kinds = {o.output_type for o in cell.outputs}
        assert "error" not in kinds, f"{path.name}: a cell stored an error"
    page, images = notebook_hook.render(notebook, path.stem)
    assert page.count("```python") == len([c for c in code if c.source.strip()])
    assert all(png.startswith(b"\x89PNG") for png in images.values())


def test_renderer_converts_cells_outputs_and_links() -> None:
    nb = nbformat.v4.new_notebook()
    png = b"\x89PNG\r\n\x1a\nfake"
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\nSee [the other](other.ipynb) and [x](unknown.ipynb)."),
        nbformat.v4.new_code_cell("print(1)", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="1\n"),
            nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgpmYWtl"}),
            nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1),
        ]),
    ]
    page, images = notebook_hook.render(nb, "demo", {"demo", "other"})
    assert "[the other](other.md)" in page and "[x](unknown.ipynb)" in page
    assert "```python\nprint(1)\n```" in page
    assert "```text\n1\n```" in page and "```text\n42\n```" in page
    assert images == {"demo/cell1_0.png": png}
    assert "![output of cell 1](demo/cell1_0.png)" in page


def test_renderer_refuses_a_stored_error() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1/0", outputs=[
        nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[]),
    ])]
    with pytest.raises(ValueError, match="ZeroDivisionError"):
        notebook_hook.render(nb, "broken")


def test_renderer_fences_survive_backticks_and_long_outputs() -> None:
    nb = nbformat.v4.new_notebook()
    text = "\n".join(f"line {i}" for i in range(200))
    nb.cells = [nbformat.v4.new_code_cell('s = "```"', outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=text),
    ])]
    page, _ = notebook_hook.render(nb, "fences")
    assert '````python\ns = "```"\n````' in page
    assert "line 59\n... (140 more lines)" in page and "line 60" not in page


# ---------------------------------------------------------------------------- docstrings


def test_rst_roles_and_math_become_markdown() -> None:
    convert = griffe_rst.convert
    assert convert("See :class:`~survae_flowify.layers.pad.Pad`.") == "See `Pad`."
    assert convert("See :func:`survae_flowify.noise_off`.") == "See `survae_flowify.noise_off`."
    assert convert("so :math:`a^2` holds") == "so $a^2$ holds"
    assert convert("Sum:\n\n.. math:: V = \\sum_i V_i\n\nDone.") == "Sum:\n\n$$ V = \\sum_i V_i $$\n\nDone."
    assert convert("Use it::\n\n    code()") == "Use it:\n\n    code()"


def test_rst_table_becomes_markdown_table() -> None:
    table = "\n".join([
        "Intro.",
        "======  =====",
        "class   kind",
        "======  =====",
        ":class:`Bijection` exact",
        "Slice   exact",
        "======  =====",
    ])
    assert griffe_rst.convert(table).split("\n") == [
        "Intro.", "", "| class | kind |", "| --- | --- |", "| `Bijection` | exact |",
        "| Slice | exact |", "",
    ]


def test_headerless_rst_tables_with_continuation_lines() -> None:
    text = "\n".join([
        "=======  =====",
        "a        first line",
        "         continued",
        "b        one",
        "=======  =====",
        "",
        "Between.",
        "",
        "==  ==",
        "c   d",
        "==  ==",
    ])
    assert griffe_rst.convert(text).split("\n") == [
        "", "|  |  |", "| --- | --- |", "| a | first line continued |", "| b | one |", "",
        "", "Between.", "",
        "", "|  |  |", "| --- | --- |", "| c | d |", "",
    ]


def test_google_sections_become_lists() -> None:
    text = "Head.\n\nArgs:\n    a, b: sizes.\n    noise: the noise,\n        normal or uniform.\n\nTail."
    assert griffe_rst.convert(text).split("\n") == [
        "Head.", "", "**Args**", "", "* `a, b`: sizes.", "* `noise`: the noise,",
        "  normal or uniform.", "", "", "Tail.",
    ]
