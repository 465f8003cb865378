"""nflows is an optional extra: the package, every model and the command line work without it.

Each test runs a fresh interpreter in which a meta-path finder makes ``import nflows`` (and every
``nflows.*`` submodule) raise ``ImportError``, as on a machine where nflows is not installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK_NFLOWS = textwrap.dedent("""
    import sys

    class _NoNflows:
        def find_spec(self, name, path=None, target=None):
            if name == "nflows" or name.startswith("nflows."):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, _NoNflows())
""")


def _run_without_nflows(code: str, *, timeout: float = 600) -> subprocess.CompletedProcess:
    script = BLOCK_NFLOWS + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=False)


def test_the_blocker_really_blocks_nflows() -> None:
    """Guards the tests below: in the blocked interpreter nflows cannot be imported."""
    result = _run_without_nflows("""
        try:
            import nflows.transforms
        except ImportError as error:
            print("blocked:", error)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "blocked: No module named 'nflows" in result.stdout


def test_import_and_native_layers_without_nflows() -> None:
    result = _run_without_nflows("""
        import torch
        import survae_flowify as ffn
        assert "nflows" not in sys.modules or sys.modules["nflows"] is None
        flow = ffn.Flow(ffn.StandardNormal(4), ffn.Sequential(
            ffn.RqCoupling(4, hidden=8), ffn.Reverse(), ffn.RqSpline(), ffn.AffineCoupling(4, hidden=8)))
        print("log_prob shape", tuple(flow.log_prob(torch.randn(3, 4)).shape))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "log_prob shape (3,)" in result.stdout


def test_nflows_adapter_says_how_to_install_nflows() -> None:
    result = _run_without_nflows("""
        import survae_flowify as ffn
        for get in (lambda: ffn.NflowsBijection,
                    lambda: __import__("survae_flowify.transforms", fromlist=["x"]).NflowsBijection):
            try:
                get()
            except ImportError as error:
                print("ImportError:", error)
        try:
            ffn.RqSpline(backend="nflows")
        except ImportError as error:
            print("ImportError:", error)
        from survae_flowify import *  # the star-import leaves out what needs nflows
        print("star import ok")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line for line in result.stdout.splitlines() if line.startswith("ImportError:")]
    assert len(errors) == 3, result.stdout
    assert all("pip install survae_flowify[nflows]" in line for line in errors), result.stdout
    assert sum("NflowsBijection" in line for line in errors) == 2, result.stdout
    assert "RqSpline" in errors[2] and "backend" in errors[2], result.stdout
    assert "star import ok" in result.stdout


@pytest.mark.slow  # builds every model (MNIST shapes), ~20–60 s under load
def test_every_model_trains_one_step_without_nflows() -> None:
    result = _run_without_nflows("""
        import torch
        torch.set_num_threads(1)
        import survae_flowify as ffn
        from survae_flowify import models
        torch.manual_seed(0)
        VECTOR = {"tabular-mlp": (6,), "survae-abs": (2,)}
        for name in models.MODEL_NAMES:
            shape = VECTOR.get(name, (1, 28, 28))
            levels = {} if name in VECTOR else {"levels": 256}
            flow = models.build(name, shape, **levels)
            x = torch.randn(2, *shape) if name in VECTOR else torch.randint(0, 256, (2, *shape)).float()
            loss = -flow.log_prob(x).mean()
            loss.backward()
            grads = [p.grad for p in flow.parameters() if p.requires_grad]
            assert torch.isfinite(loss), name
            assert any(g is not None and g.abs().sum() > 0 for g in grads), name
            print("ok", name, models.parameter_count(flow))
        assert "nflows" not in sys.modules or sys.modules["nflows"] is None
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    from survae_flowify import models

    done = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert done == list(models.MODEL_NAMES), result.stdout


def test_command_line_lists_and_trains_without_nflows(tmp_path: Path) -> None:
    result = _run_without_nflows(f"""
        import torch
        torch.set_num_threads(1)
        from survae_flowify.cli import main
        assert main(["list"]) == 0
        assert main(["train", "--dataset", "digits", "--model", "small-mlp", "--max-steps", "2",
                     "--batch-size", "16", "--out", {str(tmp_path / "run")!r}, "--quiet",
                     "--no-plots"]) == 0
        print("trained")
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fconv2-nsf" in result.stdout and "trained" in result.stdout


def _toml_list(text: str, key: str) -> list[str]:
    """The quoted strings of ``key = [...]`` in pyproject.toml (tomllib is new in Python 3.11)."""
    match = re.search(rf"^{re.escape(key)} = \[(.*?)\]$", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no {key} = [...] in pyproject.toml"
    return re.findall(r'"([^"]+)"', re.sub(r"#[^\n]*", "", match.group(1)))


def test_nflows_is_an_extra_not_a_dependency() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    dependencies = _toml_list(text, "dependencies")
    assert "numpy>=1.23" in dependencies  # the parse found the list
    assert not any(d.startswith("nflows") for d in dependencies), dependencies
    assert _toml_list(text, "nflows") == ["nflows>=0.14"]
    assert "survae_flowify[nflows]" in _toml_list(text, "dev")  # the spline's test oracle


def test_notebooks_do_not_use_nflows() -> None:
    """``make test`` executes the notebooks; they must run where nflows is not installed."""
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "nflows" not in code.lower(), f"{path.name} uses nflows (or NflowsBijection)"
