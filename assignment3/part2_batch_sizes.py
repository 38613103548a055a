"""Assignment 3, Part II.2: how the batch size (128, 256, 512, 1024) affects the MLP GAN.

Everything but the batch size is fixed (architecture, Adam lr 2e-4 and beta1 0.5, seed, epochs,
the same fixed noise). A larger batch makes fewer updates per epoch, so the study compares the
runs two ways, and every figure says which:

* at EQUAL EPOCHS (every run sees the data ``--epochs`` times): per-epoch loss curves, Frechet
  distance per epoch, the final samples, the stability measures;
* at EQUAL UPDATES: per-step loss curves and Frechet distance against the number of updates,
  up to the budget U of the largest batch (``--epochs`` x its updates per epoch); every run is
  also evaluated exactly after U updates (the ``fd_at_equal_updates`` column).

Stability (``stability_measures``): spread (std) of G's loss over the last 20% of the
updates and of its per-epoch means, mean D(x) - D(G(z)) gap, divergence epochs (mean D loss
< 0.1 or mean G loss > 5) and collapse events (drops of the judge's class entropy). The least
stable batch size (most events, then the largest spread of G's per-epoch loss) is written to
``metrics.json`` for Part II.3.

Outputs in ``outputs/assignment3/batch_sizes/<name>/``: ``losses_equal_epochs.png``,
``losses_equal_updates.png``, ``quality.png``, ``fd_equal_updates.png``, ``samples.png``, ``stability.png``,
``batch_sizes.md``/``.csv``, ``metrics.json``, ``config.json``, one ``bs_<B>/`` run folder each.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

import torch

import mlp_gan as M
from common.cli import parse_config, run_main
from common.metrics import Evaluator
from common.paths import run_dir
from common.plotting import plot_bars, plot_curves, plot_panels, save_grid
from common.summary import Headline, write_summary
from common.tables import write_table
from common.training import Run, get_device, resolve_precision, resolved, seed_everything

FD = "Frechet distance"
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (Headline("runs.*.fd_equal_epochs", "batch {}: Fréchet distance", floor="frechet_floor_train_vs_test", fmt=".2f",
                     better="lower"),
            Headline("least_stable_batch_size", "least stable batch size"))


@dataclass
class BatchConfig(M.GanConfig):
    epochs: int = 25
    eval_every: int = dataclasses.field(default=2, metadata={"help": "epochs between judge evaluations"})
    batch_sizes: typing.List[int] = dataclasses.field(default_factory=lambda: [128, 256, 512, 1024])
    n_show: int = dataclasses.field(default=10, metadata={"help": "samples per batch size in samples.png"})
    name: str = "default"

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "n_eval": 256, "eval_every": 1, "batch_sizes": [32, 64, 128, 256]}


def main(argv=None) -> dict:
    cfg = parse_config(BatchConfig, argv, __doc__.splitlines()[0])
    device = get_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    x, _, source = M.load_mnist(cfg, device)
    folder = run_dir("assignment3", "batch_sizes", cfg.name, cfg.out_dir, quick=cfg.quick)
    study = Run(folder, {**cfg.to_dict(), **resolved(device, precision, source)})
    evaluator = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root)
    z_eval = M.fixed_noise(cfg.n_eval, cfg.latent_dim, seed=cfg.seed + 1, device=device)
    z_show = M.fixed_noise(cfg.n_show, cfg.latent_dim, seed=cfg.seed + 2, device=device)
    sizes = sorted(cfg.batch_sizes)
    budget = cfg.epochs * math.ceil(len(x) / sizes[-1])  # U: updates of the largest batch
    results = {}
    for bs in sizes:
        sub = dataclasses.replace(cfg, batch_size=bs)
        run = Run(folder / f"bs_{bs}", {**sub.to_dict(), **resolved(device, precision, source)})
        out = M.fit(sub, run, x, device, precision, evaluator, z_eval, eval_every=cfg.eval_every,
                    eval_steps=(budget // 4, budget // 2, budget), label=f"bs {bs}")
        out["seconds"] = out["history"].training_seconds()
        out["samples"] = M.sample(out["G"], z_show)
        out["measures"] = M.stability_measures(out["history"], out["evals"])
        at_u = [e for e in out["evals"] if e["step"] == budget]
        out["fd_equal_updates"] = at_u[0][FD.lower().replace(" ", "_")] if at_u else math.nan
        results[bs] = out

    # ---- figures: equal epochs
    def per_epoch(bs, key):
        h = results[bs]["history"]
        return h.series("epoch", "epoch"), h.series(key, "epoch")

    def gap_epoch(bs):
        h = results[bs]["history"]
        return h.series("epoch", "epoch"), [a - b for a, b in zip(h.series("d_real", "epoch"), h.series("d_fake", "epoch"))]

    plot_panels({"D loss": {f"batch {bs}": per_epoch(bs, "d_loss") for bs in sizes},
                 "G loss": {f"batch {bs}": per_epoch(bs, "g_loss") for bs in sizes},
                 "D(x) - D(G(z))": {f"batch {bs}": gap_epoch(bs) for bs in sizes}},
                study.path("losses_equal_epochs.png"), xlabel="epoch",
                title="Equal epochs: per-epoch mean losses and D's real-fake gap",
                ylabels={"D loss": "BCE loss", "G loss": "BCE loss", "D(x) - D(G(z))": "mean probability gap"})

    # ---- figures: equal updates (first U updates of every run)
    def per_step(bs, key):
        h = results[bs]["history"]
        steps, vals = h.series("step"), h.series(key)
        return steps[:budget], vals[:budget]

    plot_panels({"D loss": {f"batch {bs}": per_step(bs, "d_loss") for bs in sizes},
                 "G loss": {f"batch {bs}": per_step(bs, "g_loss") for bs in sizes}},
                study.path("losses_equal_updates.png"), xlabel="update (optimizer step)", window=25,
                title=f"Equal updates: per-step losses over the first {budget} updates (smoothed over 25)",
                ylabels={"D loss": "BCE loss", "G loss": "BCE loss"})

    key = "frechet_distance"
    plot_panels({
        f"{FD} at equal epochs": {f"batch {bs}": ([e["epoch"] for e in results[bs]["evals"] if e["epoch"] == int(e["epoch"])],
                                                  [e[key] for e in results[bs]["evals"] if e["epoch"] == int(e["epoch"])])
                                  for bs in sizes},
        "class diversity at equal epochs": {f"batch {bs}": ([e["epoch"] for e in results[bs]["evals"] if e["epoch"] == int(e["epoch"])],
                                                            [e["class_entropy"] for e in results[bs]["evals"] if e["epoch"] == int(e["epoch"])])
                                            for bs in sizes},
    }, study.path("quality.png"), xlabel="epoch", ncols=2,
        title=f"Judge-based quality ({cfg.n_eval} samples; FD floor real train vs test {evaluator.floor:.2f})",
        ylabels={f"{FD} at equal epochs": "FD (lower is better)",
                 "class diversity at equal epochs": "class entropy (nats, max 2.30)"},
        logy=[f"{FD} at equal epochs"])
    plot_curves({f"batch {bs}": ([e["step"] for e in results[bs]["evals"] if e["step"] <= budget],
                                 [e[key] for e in results[bs]["evals"] if e["step"] <= budget]) for bs in sizes},
                study.path("fd_equal_updates.png"), title=f"Equal updates: {FD} over the first {budget} updates",
                xlabel="update (optimizer step)", ylabel="FD on judge features (lower is better)", logy=True)

    save_grid(torch.cat([results[bs]["samples"] for bs in sizes]), study.path("samples.png"), nrow=cfg.n_show,
              title=f"Equal epochs: samples after {cfg.epochs} epochs (same noise)",
              row_labels=[f"batch {bs}" for bs in sizes], xlabel="fixed noise vector", ylabel="batch size")
    plot_bars({f"batch {bs}": results[bs]["measures"]["g_loss_std_last"] for bs in sizes},
              study.path("stability.png"), title="Equal epochs: std of G's per-step loss, last 20% of updates",
              ylabel="std of G loss", xlabel="batch size")

    # ---- table and metrics
    rows = []
    for bs in sizes:
        r, m = results[bs], results[bs]["measures"]
        last = r["evals"][-1]
        rows.append({"batch_size": bs, "updates_per_epoch": r["steps_per_epoch"],
                     "updates_total": r["steps_per_epoch"] * cfg.epochs,
                     "seconds_per_epoch": round(r["seconds"] / cfg.epochs, 1),
                     "fd_equal_epochs": last[key], f"fd_at_{budget}_updates": r["fd_equal_updates"],
                     "judge_confidence": last["judge_confidence"], "class_entropy": last["class_entropy"] + 0.0,
                     **{k: m[k] for k in ("g_loss_std_last", "g_loss_epoch_std_last", "gap_last",
                                          "divergence_epochs", "collapse_events")}})
    least = min(sizes, key=lambda bs: M.instability_key(results[bs]["measures"]))
    write_table(rows, study.path("batch_sizes"),
                title=f"Batch sizes after {cfg.epochs} epochs (FD floor {evaluator.floor:.2f}); least stable: {least}")
    metrics = {"runs": {str(r["batch_size"]): r for r in rows}, "equal_updates_budget": budget,
               "least_stable_batch_size": least,
               "least_stable_rule": "most divergence + collapse events, then largest std of G's per-epoch loss "
                                    "over the last 20% of epochs",
               "frechet_floor_train_vs_test": evaluator.floor, "judge_test_accuracy": evaluator.judge_info["test_accuracy"],
               "epochs": cfg.epochs, "quick": cfg.quick}
    study.write_metrics(metrics)
    write_summary(study.dir, HEADLINE)
    print(f"batch sizes: least stable {least}; table {study.path('batch_sizes.md')}")
    return metrics


if __name__ == "__main__":
    run_main(main)
