"""The ``survae-flowify`` command line end to end, on tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from survae_flowify.cli import PRESETS, build_parser, main, runs
from survae_flowify.cli.train import run_settings
from survae_flowify.training import load_checkpoint, read_jsonl, save_checkpoint
from tests.data.writers import write_idx_set

REPO = Path(__file__).resolve().parents[1]
MOONS = ["--dataset", "moons", "--model", "small-mlp", "--subset", "256", "--batch-size", "64",
         "--log-every", "1", "--device", "cpu"]


def _train(out: Path, *extra: str) -> int:
    return main(["train", *MOONS, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits"
    rc = main(["train", "--dataset", "digits", "--model", "small-mlp", "--max-steps", "3",
               "--batch-size", "32", "--plot-samples", "4", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def _subparsers():
    parser = build_parser()
    return parser._subparsers._group_actions[0].choices


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    for name, sub in _subparsers().items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    text = _subparsers()["train"].format_help()
    for option in ("--model", "--dataset", "--epochs", "--device", "--data-dir", "--out", "--seed",
                   "--resume", "--quiet", "--preset", "--eval-samples"):
        assert option in text


def test_train_digits_end_to_end(digits_run, capsys):
    summary = json.loads((digits_run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["model"] == "small-mlp" and summary["device"] == "cpu"
    assert 0 < summary["test_bpd"] < 20 and summary["parameters"] > 0
    for name in ("samples.png", "reconstructions.png", "loss.png", "checkpoint.pt", "metrics.jsonl"):
        assert (digits_run / name).is_file()


def test_train_prints_test_metric_and_grid_and_no_bar_off_terminal(tmp_path, capsys):
    assert _train(tmp_path / "r", "--max-steps", "2") == 0
    out, err = capsys.readouterr()
    assert "test nats:" in out and f"density: {tmp_path / 'r' / 'density.png'}" in out
    assert "validation" in err and "step/s" not in err and "s/step" not in err  # no tqdm bar


def test_quiet_prints_nothing_on_stderr(tmp_path, capsys):
    assert _train(tmp_path / "r", "--max-steps", "2", "--quiet", "--no-plots") == 0
    out, err = capsys.readouterr()
    assert err == "" and "test nats:" in out


def test_evaluate_matches_an_independent_evaluation(tmp_path, capsys):
    assert _train(tmp_path / "r", "--max-steps", "3", "--quiet", "--no-plots") == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "r"), "--eval-samples", "2"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    checkpoint = load_checkpoint(tmp_path / "r")
    flow = runs.flow_from_checkpoint(checkpoint, torch.device("cpu"))
    data = runs.load_data(checkpoint["spec"], None)
    with torch.no_grad():
        direct = -flow.log_prob(data.test).double().mean().item()
    assert result["nats"] == pytest.approx(direct, rel=1e-5)
    assert result["iw_nats"] == pytest.approx(direct, rel=1e-5)  # exact flow
    assert read_jsonl(tmp_path / "r" / "evaluations.jsonl")[-1] == result


def test_sample_writes_grid_and_tensors_and_never_overwrites(digits_run, capsys):
    assert main(["sample", str(digits_run), "-n", "6", "--seed", "3"]) == 0
    png = digits_run / "samples-step3-n6-seed3.png"
    samples = torch.load(png.with_suffix(".pt"))
    assert png.read_bytes()[:4] == b"\x89PNG"
    for key in ("mean", "stochastic"):
        x = samples[key]
        assert x.shape == (6, 1, 8, 8) and torch.equal(x, x.round()) and 0 <= x.min() and x.max() <= 16
    before = png.read_bytes()
    assert main(["sample", str(digits_run), "-n", "6", "--seed", "3"]) == 2
    assert "already exists" in capsys.readouterr().err and png.read_bytes() == before


def test_resume_continues_exactly(tmp_path, capsys):
    assert _train(tmp_path / "a", "--max-steps", "6", "--quiet", "--no-plots") == 0
    assert _train(tmp_path / "b", "--max-steps", "6", "--stop-after", "3", "--quiet", "--no-plots") == 0
    assert "paused after step 3" in capsys.readouterr().err
    assert not (tmp_path / "b" / "summary.json").exists()
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet", "--no-plots"]) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name])
    before = (tmp_path / "b" / "summary.json").read_bytes()
    assert main(["train", "--resume", str(tmp_path / "b")]) == 0  # finished: nothing to do
    assert "already finished" in capsys.readouterr().err
    assert (tmp_path / "b" / "summary.json").read_bytes() == before
    lrs = [[(r["step"], r["lr"]) for r in read_jsonl(tmp_path / run / "metrics.jsonl")
            if r["split"] == "train"] for run in ("a", "b")]
    assert lrs[0] == lrs[1] and [s for s, _ in lrs[0]] == [1, 2, 3, 4, 5, 6]


def test_resume_conflicts_are_usage_errors(tmp_path, capsys):
    assert _train(tmp_path / "b", "--max-steps", "4", "--stop-after", "1", "--quiet", "--no-plots") == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "b"), "--model", "small-conv"]) == 2
    assert "does not match the checkpoint" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "b"), "--lr", "0.1"]) == 2
    assert "different schedule" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()
    assert load_checkpoint(tmp_path / "b")["step"] == 1  # untouched


def test_existing_output_directory_is_left_alone(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    assert _train(out, "--max-steps", "1") == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(("flag", "value", "choices"), [
    ("--model", "resnet", "fmlp, fconv1, fconv2, fconv1-nsf, fconv2-nsf, tabular-mlp"),
    ("--dataset", "imagenet", "digits, fashion-mnist, mnist, cifar10, power, gas, hepmass"),
])
def test_unknown_names_list_the_choices(tmp_path, capsys, flag, value, choices):
    assert main(["train", flag, value, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert value in err and choices in err and not (tmp_path / "r").exists()


@pytest.mark.parametrize(("dataset", "hint"), [
    ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
    ("mnist", "t10k-images-idx3-ubyte.gz"),
    ("cifar10", "cifar-10-python.tar.gz"),
    ("hepmass", "zenodo"),
])
def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, dataset, hint):
    missing = tmp_path / "no-such-dir"
    proc = subprocess.run(
        [sys.executable, "-m", "survae_flowify.cli", "train", "--dataset", dataset, "--data-dir",
         str(missing), "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and hint in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_bad_checkpoints_are_clear_errors(tmp_path, digits_run, capsys):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((digits_run / "checkpoint.pt").read_bytes()[:500])
    for path, text in ((tmp_path / "garbage.pt", "not a"), (truncated, "corrupt or truncated"),
                       (tmp_path / "none.pt", "no checkpoint at")):
        assert main(["evaluate", str(path)]) == 2
        assert text in capsys.readouterr().err
    # a checkpoint whose weights do not fit the model its spec describes
    good = load_checkpoint(digits_run)
    good["spec"] = {**good["spec"], "model_options": {"widths": [64, 32]}}
    save_checkpoint(tmp_path / "mismatch.pt", {k: v for k, v in good.items() if k not in ("path",)})
    assert main(["evaluate", str(tmp_path / "mismatch.pt")]) == 2
    assert "does not fit this model" in capsys.readouterr().err


def test_mnist_from_idx_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_idx_set(tmp_path / "mnist", rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
                  rng.integers(0, 256, (10, 8, 8), dtype=np.uint8))
    rc = main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--model", "small-mlp",
               "--max-steps", "2", "--batch-size", "16", "--out", str(tmp_path / "r"), "--quiet",
               "--no-plots"])
    assert rc == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["data_shape"] == [1, 8, 8] and 0 < summary["test_bpd"] < 20


def test_tabular_default_model(tmp_path, capsys):
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", np.random.default_rng(0).normal(size=(300, 5)))
    rc = main(["train", "--dataset", "miniboone", "--data-dir", str(tmp_path), "--max-steps", "2",
               "--batch-size", "64", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["model"] == "tabular-mlp" and np.isfinite(summary["test_nats"])
    assert (tmp_path / "r" / "samples.png").is_file()


def test_presets():
    args = build_parser().parse_args(["train", "--preset", "paper", "--dataset", "mnist"])
    spec, config = run_settings(args, None)
    assert (config["epochs"], config["batch_size"], config["lr"]) == (200, 256, 5e-4)
    assert spec["model"] == "fconv1"
    args = build_parser().parse_args(["train", "--preset", "paper", "--dataset", "cifar10", "--epochs", "3"])
    assert run_settings(args, None)[1]["epochs"] == 3  # flags override the preset
    args = build_parser().parse_args(["train", "--preset", "demo"])
    spec, config = run_settings(args, None)
    assert spec["dataset"] == "digits" and spec["levels"] == 17 and spec["model"] == "small-conv"


def test_demo_is_a_fixed_schedule_on_the_chosen_threads(tmp_path, capsys):
    # a fixed number of epochs, no time budget: the result cannot depend on the machine's load
    args = build_parser().parse_args(["train", "--preset", "demo"])
    config = run_settings(args, None)[1]
    assert "time_budget_s" not in config and config["epochs"] == 300
    assert PRESETS["demo"]["threads"] == 1
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["train", "--preset", "demo", "--max-steps", "2", "--out", str(tmp_path / "d"),
                     "--quiet", "--no-plots"]) == 0
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert used == 1 and summary["threads"] == 1 and summary["time_budget_s"] is None


def test_paper_preset_on_other_data_is_a_usage_error(capsys):
    assert main(["train", "--preset", "paper", "--dataset", "moons"]) == 2
    assert "--preset paper is defined for" in capsys.readouterr().err


def test_demo_preset_runs_briefly(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["train", "--preset", "demo", "--max-steps", "2", "--out", str(out), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test bits/dim:" in out and f"sample grid: {tmp_path / 'd' / 'samples.png'}" in out
    assert json.loads((tmp_path / "d" / "config.json").read_text())["spec"]["model"] == "small-conv"


def test_bench_and_list(capsys):
    assert main(["bench", "--model", "small-mlp", "--dataset", "digits", "--steps", "1",
                 "--batch-size", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_step_ms"] > 0 and result["parameters"] > 0 and result["batch_size"] == 8
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("fconv2-nsf", "small-conv", "bsds300", "two-spirals", "demo"):
        assert name in text


def test_bad_numbers_and_devices(capsys):
    assert main(["train", "--epochs", "0"]) == 2
    assert "--epochs must be a positive int, got 0" in capsys.readouterr().err
    assert main(["sample", "x", "-n", "0"]) == 2
    if not torch.cuda.is_available():
        assert main(["bench", "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "survae_flowify.cli", "train", *MOONS, "--max-steps", "100000",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "metrics.jsonl").exists() and read_jsonl(out / "metrics.jsonl"):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
    checkpoint = load_checkpoint(out)
    assert checkpoint["step"] >= 1 and f"interrupted at step {checkpoint['step']} " in err


# ------------------------------------------------------------------ issue 8, items 11–16
def test_second_training_into_the_same_out_is_refused_while_the_first_prepares(tmp_path, capsys,
                                                                                monkeypatch):
    # The race forced deterministically: the second training starts after the first has chosen
    # its directory but before it has written anything there (while it builds its trainer).
    from survae_flowify import training

    out, codes = tmp_path / "r", []
    original = training.Trainer.__init__

    def second_starts_now(self, *args, **kwargs):
        if not codes:
            codes.append(None)
            codes.append(_train(out, "--max-steps", "2", "--quiet", "--no-plots", "--seed", "7"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "__init__", second_starts_now)
    first = _train(out, "--max-steps", "2", "--quiet", "--no-plots")
    assert (first, codes[1]) == (0, 2)
    assert "already" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 0  # the first's


@pytest.mark.slow
def test_two_processes_into_the_same_out_one_is_refused(tmp_path):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "survae_flowify.cli", "train", *MOONS, "--max-steps", "3",
           "--quiet", "--no-plots", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path, env=env) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 2)
    assert "already" in loser and "Traceback" not in loser
    assert load_checkpoint(out)["step"] == 3


def test_blow_up_is_the_diverged_path(tmp_path, capsys):
    out = tmp_path / "r"
    assert _train(out, "--lr", "1e6", "--max-steps", "40", "--quiet", "--no-plots") == 1
    err = capsys.readouterr().err
    assert "non-finite" in err and "--lr" in err and "Traceback" not in err
    assert read_jsonl(out / "metrics.jsonl")[-1]["split"] == "error"
    assert not (out / "summary.json").exists()


def test_tiny_image_set_is_a_usage_error_and_leaves_no_directory(tmp_path, capsys):
    rng = np.random.default_rng(0)
    write_idx_set(tmp_path / "mnist", rng.integers(0, 256, (1, 8, 8), dtype=np.uint8),
                  rng.integers(0, 256, (1, 8, 8), dtype=np.uint8))
    out = tmp_path / "r"
    args = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--model", "small-mlp",
            "--max-steps", "2", "--out", str(out), "--quiet", "--no-plots"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "too small" in err and "train 0" in err and not out.exists()


def test_tiny_table_is_a_usage_error_and_leaves_no_directory(tmp_path, capsys):
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", np.random.default_rng(0).normal(size=(9, 5)))
    out = tmp_path / "r"
    assert main(["train", "--dataset", "miniboone", "--data-dir", str(tmp_path), "--max-steps", "2",
                 "--out", str(out), "--quiet", "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "too small" in err and "test 0" in err and not out.exists()


@pytest.mark.parametrize(("flag", "value"), [
    ("--weight-decay", "nan"), ("--weight-decay", "-1"), ("--seed", str(10**30)), ("--seed", "-1"),
    ("--checkpoint-minutes", "0"), ("--checkpoint-minutes", "-2"), ("--checkpoint-minutes", "nan"),
    ("--lr", "inf"), ("--clip-grad", "nan"), ("--time-budget", "0"), ("--valid-every", "-1"),
    ("--max-steps", "0"), ("--threads", "0"), ("--log-every", "0"),
])
def test_bad_numbers_are_usage_errors_naming_the_flag(tmp_path, capsys, flag, value):
    out = tmp_path / "r"
    assert _train(out, flag, value) == 2
    err = capsys.readouterr().err
    assert flag in err and value in err and "Traceback" not in err and not out.exists()


def test_model_option_that_no_layer_uses_is_refused(tmp_path, capsys):
    # moons (2-D) with small-mlp: every Linear is square, so noise options reach no layer
    assert _train(tmp_path / "r", "--model-option", "noise=uniform", "--max-steps", "1") == 2
    err = capsys.readouterr().err
    assert "noise" in err and "no layer" in err and not (tmp_path / "r").exists()


def test_resume_refuses_a_changed_subset_or_model_option(tmp_path, capsys):
    assert _train(tmp_path / "b", "--max-steps", "4", "--stop-after", "1", "--quiet", "--no-plots") == 0
    capsys.readouterr()
    for extra in (["--subset", "128"], ["--model-option", "widths=[2,2]"]):
        assert main(["train", "--resume", str(tmp_path / "b"), *extra]) == 2
        assert extra[0] in capsys.readouterr().err
    # the same values as the checkpoint's are fine
    assert main(["train", "--resume", str(tmp_path / "b"), "--subset", "256", "--quiet",
                 "--no-plots"]) == 0


def test_run_files_honour_the_umask(tmp_path, capsys):
    previous = os.umask(0o027)
    try:
        assert _train(tmp_path / "r", "--max-steps", "2", "--quiet") == 0
    finally:
        os.umask(previous)
    for name in ("checkpoint.pt", "summary.json", "config.json", "metrics.jsonl", "density.png"):
        assert (tmp_path / "r" / name).stat().st_mode & 0o777 == 0o640, name


def test_help_says_how_the_time_budget_relates_to_epochs():
    text = " ".join(_subparsers()["train"].format_help().split())
    assert "--time-budget" in text and "--epochs" in text
    budget = text[text.rindex("--time-budget SECONDS"):]  # the entry, not the usage line
    assert "--epochs" in budget[:400] and "90%" in budget[:400]


def test_runs_module_from_python(digits_run, tmp_path):
    flow, checkpoint = runs.load_run(digits_run)
    assert not flow.training and checkpoint["step"] == 3
    for name, value in flow.state_dict().items():
        assert torch.equal(value, checkpoint["model"][name])
    data = runs.load_data(checkpoint["spec"])
    assert data.name == "digits" and data.shape == (1, 8, 8) and data.levels == 17
    spec = {**runs.new_spec("small-mlp", "digits"), "data_shape": [1, 8, 8]}
    fresh = runs.build_flow(spec)  # the same architecture, new weights
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in checkpoint["model"].items()}
    assert runs.default_model("moons") == "small-mlp"
    assert runs.parse_model_option("widths=[64,32]") == ("widths", [64, 32])
    with pytest.raises(runs.RunError, match="unknown model 'resnet'"):
        runs.new_spec("resnet", "digits")
    out = runs.create_run_dir(tmp_path / "mine")
    with pytest.raises(runs.RunError, match="already exists"):
        runs.create_run_dir(out)
    runs.release_run_dir(out)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runs.create_run_dir(empty) == empty  # an empty directory may be claimed


def test_demo_schedule_is_reproducible_and_thread_independent(tmp_path, capsys):
    def demo(name: str, *extra: str) -> float:
        assert main(["train", "--preset", "demo", "--max-steps", "20", "--out", str(tmp_path / name),
                     "--quiet", "--no-plots", *extra]) == 0
        return json.loads((tmp_path / name / "summary.json").read_text())["test_bpd"]

    before = torch.get_num_threads()
    try:
        first, again, two_threads = demo("a"), demo("b"), demo("c", "--threads", "2")
    finally:
        torch.set_num_threads(before)
    assert first == again  # same seed, same threads: the same number, bit for bit
    assert two_threads == pytest.approx(first, rel=1e-5, abs=0)  # float noise at most


def test_a_run_that_cannot_start_leaves_no_directory(tmp_path, capsys, monkeypatch):
    from survae_flowify import training

    def refuse(self, *args, **kwargs):
        raise training.ConfigError("the trainer refused")

    monkeypatch.setattr(training.Trainer, "__init__", refuse)
    assert _train(tmp_path / "r", "--max-steps", "1") == 2
    assert "the trainer refused" in capsys.readouterr().err and not (tmp_path / "r").exists()
    monkeypatch.undo()
    assert _train(tmp_path / "r", "--max-steps", "1", "--quiet", "--no-plots") == 0  # the retry runs


def test_generated_run_names_never_collide(tmp_path, monkeypatch, capsys):
    """Two runs without --out started in the same second get distinct directories."""
    import survae_flowify.cli.train as train_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_command.time, "strftime", lambda fmt: "20260101-000000")
    taken = tmp_path / "runs" / "small-mlp-moons-20260101-000000"
    taken.mkdir(parents=True)
    (taken / "checkpoint.pt").write_text("another run's")
    args = ["train", *MOONS, "--max-steps", "1", "--quiet", "--no-plots"]
    assert main(args) == 0
    assert (taken / "checkpoint.pt").read_text() == "another run's"
    assert (tmp_path / "runs" / "small-mlp-moons-20260101-000000-2" / "checkpoint.pt").is_file()
    assert main(args) == 0
    assert (tmp_path / "runs" / "small-mlp-moons-20260101-000000-3" / "checkpoint.pt").is_file()


def test_out_that_cannot_be_created_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert _train(blocker / "run", "--max-steps", "1", "--quiet") == 2
    err = capsys.readouterr().err
    assert "cannot create the run directory" in err and "Traceback" not in err


# ----------------------------------------------------------- class-conditional runs (--conditional)
COND = ["--dataset", "digits", "--model", "small-conv", "--subset", "200", "--batch-size", "32",
        "--max-steps", "4", "--quiet", "--device", "cpu", "--conditional"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", *COND, "--plot-samples", "20", "--out", str(out)]) == 0
    return out


def test_conditional_run_records_itself_and_evaluate_rebuilds_it(conditional_run, capsys):
    checkpoint = load_checkpoint(conditional_run)
    assert checkpoint["spec"]["conditional"] is True and checkpoint["spec"]["num_classes"] == 10
    summary = json.loads((conditional_run / "summary.json").read_text())
    assert summary["conditional"] is True and "samples" in summary["figures"]
    capsys.readouterr()
    assert main(["evaluate", str(conditional_run), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    # an independent evaluation: the rebuilt flow given the test labels, one batch by hand
    flow, _ = runs.load_run(conditional_run)
    data = runs.load_data(checkpoint["spec"])
    with torch.no_grad():
        nll = -flow.log_prob(data.test, data.labels.test).double().mean().item()
    assert result["bpd"] == pytest.approx(nll / (64 * np.log(2)), abs=0.05)  # ELBO: one noise draw
    with torch.no_grad():  # the labels matter: other labels give another bound
        other = -flow.log_prob(data.test, (data.labels.test + 5) % 10).double().mean().item()
    assert abs(other - nll) > 1e-3


def test_conditional_sample_grid_has_one_row_per_class_and_label_picks_one(conditional_run, capsys):
    assert main(["sample", str(conditional_run), "-n", "20", "--seed", "1"]) == 0
    grid = torch.load(conditional_run / "samples-step4-n20-seed1.pt")
    assert grid["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    assert grid["mean"].shape == (20, 1, 8, 8)
    for label in (3, 7):
        out = conditional_run / f"label{label}.png"
        assert main(["sample", str(conditional_run), "-n", "20", "--label", str(label),
                     "--out", str(out)]) == 0
    three, seven = (torch.load(conditional_run / f"label{k}.pt") for k in (3, 7))
    assert three["labels"].tolist() == [3] * 20 and three["mean"].shape == (20, 1, 8, 8)
    # Same seed, another class. After 4 steps the label moves ~1 in 160 quantized pixels (a probe),
    # so 5 images (320 pixels) could show none: 20 images make the check about the label.
    assert not torch.equal(three["mean"], seven["mean"])
    capsys.readouterr()
    bad = conditional_run / "x.png"
    assert main(["sample", str(conditional_run), "--label", "10", "--out", str(bad)]) == 2
    assert "0 … 9 (10 classes), got 10" in capsys.readouterr().err


def test_label_on_an_unconditional_run_is_a_usage_error(digits_run, capsys):
    assert main(["sample", str(digits_run), "--label", "1", "--out", str(digits_run / "l.png")]) == 2
    assert "not class-conditional" in capsys.readouterr().err
    assert not (digits_run / "l.png").exists()


def test_conditional_without_labels_or_without_a_variant_is_exit_2(tmp_path, capsys):
    assert main(["train", *MOONS, "--conditional", "--out", str(tmp_path / "m")]) == 2
    assert "'moons' has none" in capsys.readouterr().err and not (tmp_path / "m").exists()
    write_idx_set(tmp_path / "mnist", np.zeros((40, 8, 8), np.uint8), np.zeros((10, 8, 8), np.uint8),
                  labels=False)
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--model", "small-mlp",
                 "--conditional", "--out", str(tmp_path / "u")]) == 2
    assert "'mnist' has none" in capsys.readouterr().err and not (tmp_path / "u").exists()
    assert main(["train", "--dataset", "digits", "--model", "tabular-mlp", "--conditional",
                 "--out", str(tmp_path / "t")]) == 2
    assert "no class-conditional variant" in capsys.readouterr().err


def test_conditional_mnist_labels_reach_the_run(tmp_path):
    rng = np.random.default_rng(0)
    write_idx_set(tmp_path / "mnist", rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
                  rng.integers(0, 256, (10, 8, 8), dtype=np.uint8),
                  train_labels=rng.integers(0, 10, 40).astype(np.uint8),
                  test_labels=rng.integers(0, 10, 10).astype(np.uint8))
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--model", "small-mlp",
                 "--conditional", "--max-steps", "2", "--batch-size", "16", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "r")]) == 0
    assert load_checkpoint(tmp_path / "r")["spec"]["num_classes"] == 10


def test_conditional_resume_continues_exactly_and_keeps_the_flag(tmp_path, capsys):
    base = [a for a in COND if a != "--max-steps" and a != "4"] + ["--max-steps", "6", "--no-plots"]
    assert main(["train", *base, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *base, "--stop-after", "3", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--quiet", "--no-plots"]) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert b["spec"]["conditional"] is True and a["step"] == b["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name])
    assert main(["train", *MOONS, "--max-steps", "4", "--stop-after", "1", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "plain"), "--conditional"]) == 2
    assert "--conditional" in capsys.readouterr().err
