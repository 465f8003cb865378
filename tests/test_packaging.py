"""The package as released: the wheel carries the licence, the typing marker and one version.

``make package`` (run by CI) goes further: it installs this wheel, not editable, into a fresh
environment and runs ``survae-flowify list`` from there.
"""

from __future__ import annotations

import configparser
import email.parser
import importlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import survae_flowify as ffn

ROOT = Path(__file__).resolve().parents[1]


def _build_wheel(source: Path, out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("survae_flowify-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    with zipfile.ZipFile(_build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info") and n.endswith(name)]
    return wheel.read(member).decode()


def test_wheel_ships_the_mit_license(wheel: zipfile.ZipFile) -> None:
    text = _dist_info(wheel, "/licenses/LICENSE")
    assert text.startswith("MIT License") and "the survae_flowify authors" in text
    assert "Permission is hereby granted, free of charge" in text
    metadata = email.parser.Parser().parsestr(_dist_info(wheel, "/METADATA"))
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]


def test_wheel_ships_the_typing_marker(wheel: zipfile.ZipFile) -> None:
    assert "survae_flowify/py.typed" in wheel.namelist()


def test_wheel_ships_the_spline_kernel_source(wheel: zipfile.ZipFile) -> None:
    """The C loops are compiled on the user's machine, from the source the wheel carries."""
    assert "survae_flowify/transforms/_rq_native.c" in wheel.namelist()


def _version(wheel: zipfile.ZipFile) -> str:
    return email.parser.Parser().parsestr(_dist_info(wheel, "/METADATA"))["Version"]


def test_version_is_defined_once(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """The one version is ``__version__`` in ``survae_flowify/__init__.py``: change it, the wheel follows."""
    assert _version(wheel) == ffn.__version__
    source = tmp_path / "source"
    source.mkdir()
    for name in ["pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "survae_flowify", source / "survae_flowify",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = source / "survae_flowify" / "__init__.py"
    init.write_text(re.sub(r'(?m)^__version__ = ".*"$', '__version__ = "7.8.9.dev1"', init.read_text()))
    with zipfile.ZipFile(_build_wheel(source, tmp_path / "out")) as moved:
        assert _version(moved) == "7.8.9.dev1"


def test_wheel_holds_the_package_and_its_command(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "survae_flowify/__init__.py" in names and not any(n.startswith("tests/") for n in names)
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(wheel, "/entry_points.txt"))
    module, _, function = entry_points["console_scripts"]["survae-flowify"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
