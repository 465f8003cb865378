"""The final report of a run: test and validation metrics, figures and ``summary.json``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch

from survae_flowify.training.evaluation import evaluate, nll_to_metric, parameter_count
from survae_flowify.training.records import write_json

if TYPE_CHECKING:
    from survae_flowify.training.loop import Trainer

__all__ = ["draw_figures", "final_summary"]


def final_summary(trainer: Trainer, wall_s: float) -> dict[str, Any]:
    """Evaluate the trained flow and write ``summary.json`` (main rank); every rank returns it.

    ``test_<metric>`` and ``valid_<metric>``: the ELBO (exact for exact flows) in bits/dim for
    images, nats otherwise; with ``eval_samples=K`` also ``test_iw_<metric>``, the
    importance-weighted bound.
    """
    flow, data, config, dist = trainer.flow, trainer.data, trainer.config, trainer.dist
    eval_kw = {"batch_size": config.eval_batch_size or config.batch_size, "dist": dist}
    metric = data.metric
    summary: dict[str, Any] = {
        "model": trainer.spec.get("model"), "dataset": data.name, "metric": metric,
        f"test_{metric}": nll_to_metric(
            evaluate(flow, data.test, context=trainer.context("test"), **eval_kw), data),
        f"valid_{metric}": nll_to_metric(
            evaluate(flow, data.valid, context=trainer.context("valid"), **eval_kw), data),
        "bound": "exact" if flow.exact else "ELBO: an upper bound on the true metric",
        "conditional": flow.context_features is not None,
    }
    if config.eval_samples:
        k = config.eval_samples
        iw = evaluate(flow, data.test, context=trainer.context("test"), num_samples=k, **eval_kw)
        summary.update({f"test_iw_{metric}": nll_to_metric(iw, data), "eval_samples": k})
    summary.update({
        "parameters": parameter_count(flow), "steps": trainer.step,
        "epochs": round(trainer.step / trainer.steps_per_epoch, 3),
        "time_budget_s": config.time_budget_s, "train_time_s": round(trainer.train_time, 3),
        "wall_time_s": round(wall_s, 3), "device": str(dist.device), "world_size": dist.world_size,
        "threads": torch.get_num_threads(), "checkpoint": str(trainer.checkpoints.path),
        "data_shape": list(data.shape),
    })
    if dist.enabled:
        summary["ranks_in_sync"] = ranks_in_sync(trainer)
    if dist.is_main:
        trainer.log.record(split="test", step=trainer.step,
                           **{k: v for k, v in summary.items() if k.startswith("test_")})
        summary["figures"] = draw_figures(trainer)
        write_json(trainer.out / "summary.json", summary)
    dist.barrier()
    return summary


def ranks_in_sync(trainer: Trainer) -> bool:
    """Whether every DDP rank holds the same parameters (checksums compared across ranks)."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in trainer.flow.parameters()])
    sums = [float(flat.sum()), float(flat.square().sum())]
    highest = trainer.dist.max(sums)
    lowest = [-v for v in trainer.dist.max([-v for v in sums])]
    return highest == lowest


def draw_figures(trainer: Trainer) -> dict[str, str]:
    """Write the run's PNGs; a plotting failure is reported, never fatal (the run is saved)."""
    if not trainer.config.plots:
        return {}
    from survae_flowify.training import plots

    flow, data, out, n = trainer.flow, trainer.data, trainer.out, trainer.config.plot_samples
    figures: dict[str, str] = {}
    flow.eval()
    try:
        figures["loss"] = str(plots.save_loss_curve(trainer.log.records(), out / "loss.png",
                                                    metric=data.metric))
        if data.kind == "image":
            figures["samples"] = str(plots.save_sample_grids(
                flow, out / "samples.png", n=n, levels=data.levels, num_classes=data.num_classes))
            x = data.test[:min(n, 32)].to(trainer.dist.device)
            labels = trainer.context("test")
            labels = None if labels is None else labels[:len(x)].to(x.device)
            figures["reconstructions"] = str(plots.save_reconstructions(
                flow, x, out / "reconstructions.png", levels=data.levels, labels=labels))
        elif data.shape == (2,):
            from survae_flowify.data import TOY_BOUND

            figures["density"] = str(plots.save_density_map(
                flow, data.test, out / "density.png", bound=TOY_BOUND,
                num_samples=trainer.config.eval_samples))
        else:
            with torch.no_grad():
                samples = flow.sample(min(len(data.test), 2000))
            figures["samples"] = str(plots.save_scatter(
                out / "samples.png", [("data", data.test[:2000]), ("model samples", samples)]))
    except Exception as err:  # figures are a convenience: report and keep the run's results
        print(f"warning: could not draw the figures ({type(err).__name__}: {err})", file=sys.stderr)
    finally:
        flow.train()
    return figures
