"""Assignment 3, Part II.3: learning-rate schedules against the instability found in Part II.2.

Three runs of the MLP GAN at the least stable batch size of Part II.2, identical but for the
schedule applied (to both optimizers, stepped once per update):

* ``constant``: the Part I setting, lr 2e-4 throughout;
* ``step_decay``: lr x 0.1 every ``--step-every`` epochs (``step_decay``, i.e.
  ``torch.optim.lr_scheduler.StepLR``);
* ``warmup_cosine``: linear warmup from 1% of lr over ``--warmup-epochs`` epochs, then cosine
  annealing to 0 (``warmup_cosine``: ``LinearLR`` then ``CosineAnnealingLR`` in a ``SequentialLR``).

The batch size comes from ``outputs/assignment3/batch_sizes/default/metrics.json``
(``default_quick/`` in quick mode; ``least_stable_batch_size``) when Part II.2 has run, else
``--batch-size`` (128 by default: the most updates per epoch and the noisiest gradients);
``--batch-size`` given explicitly wins. The choice and its reason are in ``config.json`` and
``conclusion.md``.

Outputs in ``outputs/assignment3/schedules/<name>/``: ``lr_schedules.png`` (lr per update),
``losses.png``, ``frechet.png``, ``samples.png``, ``schedules.md``/``.csv``, ``conclusion.md``,
``metrics.json``, ``config.json``, one run folder per schedule.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

import mlp_gan as M
from common.cli import parse_config, run_main
from common.metrics import Evaluator
from common.paths import run_dir, run_path, shown
from common.plotting import plot_panels, save_grid
from common.summary import Headline, write_summary
from common.tables import write_table
from common.training import Run, get_device, resolve_precision, resolved, seed_everything, step_decay, warmup_cosine

SCHEDULES = ("constant", "step_decay", "warmup_cosine")
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (Headline("runs.*.fd_final", "{}: final Fréchet distance", floor="frechet_floor_train_vs_test", fmt=".2f",
                     better="lower"),
            Headline("batch_size", "batch size"))


@dataclass
class ScheduleConfig(M.GanConfig):
    epochs: int = 25
    eval_every: int = dataclasses.field(default=2, metadata={"help": "epochs between judge evaluations"})
    step_every: int = dataclasses.field(default=10, metadata={"help": "epochs between x0.1 decays (step decay)"})
    gamma: float = dataclasses.field(default=0.1, metadata={"help": "step decay factor"})
    warmup_epochs: int = dataclasses.field(default=3, metadata={"help": "linear warmup length (warmup + cosine)"})
    batch_sizes_run: typing.Optional[str] = dataclasses.field(
        default=None, metadata={"help": "Part II.2 run folder to read the least stable batch size from "
                                        "(default: outputs/assignment3/batch_sizes/default, or default_quick in quick mode)"})
    n_show: int = 10
    name: str = "default"

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "n_eval": 256, "eval_every": 1, "step_every": 1, "warmup_epochs": 1}


def choose_batch_size(cfg, argv) -> tuple[int, str]:
    """The batch size to stabilize, and why."""
    tokens = argv if argv is not None else sys.argv[1:]
    if any(t.split("=")[0] == "--batch-size" for t in tokens):
        return cfg.batch_size, "given with --batch-size"
    folder = cfg.batch_sizes_run or run_path("assignment3", "batch_sizes", "default", quick=cfg.quick)
    path = Path(folder) / "metrics.json"
    if path.exists():
        m = json.loads(path.read_text())
        if "least_stable_batch_size" in m and bool(m.get("quick", False)) == bool(cfg.quick):
            return int(m["least_stable_batch_size"]), f"least stable in Part II.2 ({shown(path)}): {m['least_stable_rule']}"
    return cfg.batch_size, (f"Part II.2 results not found at {shown(path)} (or of the other mode): default batch size "
                            f"{cfg.batch_size}, the most updates per epoch and the noisiest gradients")


def make_schedule(kind: str, cfg):
    """A factory ``(optimizer, steps_per_epoch, epochs) -> scheduler`` (or None for constant lr)."""
    if kind == "constant":
        return None
    if kind == "step_decay":
        return lambda opt, spe, epochs: step_decay(opt, step_size=cfg.step_every * spe, gamma=cfg.gamma)
    if kind == "warmup_cosine":
        return lambda opt, spe, epochs: warmup_cosine(opt, warmup_steps=cfg.warmup_epochs * spe,
                                                      total_steps=epochs * spe)
    raise ValueError(kind)


def conclusion(rows: list[dict], bs: int, floor: float) -> str:
    """A short conclusion computed from the table."""
    by = {r["schedule"]: r for r in rows}
    base = by["constant"]
    lines = [f"# Learning-rate schedules at batch size {bs}", ""]
    for kind in ("step_decay", "warmup_cosine"):
        r = by[kind]
        fd_change = (r["fd_final"] - base["fd_final"]) / base["fd_final"] * 100
        std_change = (r["g_loss_epoch_std_last"] - base["g_loss_epoch_std_last"]) / max(base["g_loss_epoch_std_last"], 1e-12) * 100
        events = r["divergence_epochs"] + r["collapse_events"]
        base_events = base["divergence_epochs"] + base["collapse_events"]
        lines.append(f"- **{kind}**: final FD {r['fd_final']:.2f} vs {base['fd_final']:.2f} with a constant lr "
                     f"({fd_change:+.0f}%); best FD {r['fd_best']:.2f} vs {base['fd_best']:.2f}; spread of G's per-epoch "
                     f"loss over the last 20% of epochs {r['g_loss_epoch_std_last']:.3f} vs "
                     f"{base['g_loss_epoch_std_last']:.3f} ({std_change:+.0f}%); instability events {events} vs {base_events}.")
    best = min(rows, key=lambda r: r["fd_final"])
    steadiest = min(rows, key=lambda r: (r["divergence_epochs"] + r["collapse_events"], r["g_loss_epoch_std_last"]))
    lines += ["", f"Lowest final Frechet distance: **{best['schedule']}** ({best['fd_final']:.2f}; floor {floor:.2f}). "
              f"Steadiest training (fewest events, then smallest late spread of G's loss): **{steadiest['schedule']}**.",
              "A decaying learning rate shrinks the late updates, so the losses settle; whether that also improves "
              "the samples is read from the Frechet distance above, not assumed."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    cfg = parse_config(ScheduleConfig, argv, __doc__.splitlines()[0])
    bs, reason = choose_batch_size(cfg, argv)
    cfg = dataclasses.replace(cfg, batch_size=bs)
    device = get_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    x, _, source = M.load_mnist(cfg, device)
    study = Run(run_dir("assignment3", "schedules", cfg.name, cfg.out_dir, quick=cfg.quick),
                {**cfg.to_dict(), "batch_size_reason": reason, **resolved(device, precision, source)})
    print(f"[schedules] batch size {bs}: {reason}")
    evaluator = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root)
    z_eval = M.fixed_noise(cfg.n_eval, cfg.latent_dim, seed=cfg.seed + 1, device=device)
    z_show = M.fixed_noise(cfg.n_show, cfg.latent_dim, seed=cfg.seed + 2, device=device)
    results = {}
    for kind in SCHEDULES:
        run = Run(study.dir / kind, {**cfg.to_dict(), "schedule": kind, **resolved(device, precision, source)})
        out = M.fit(cfg, run, x, device, precision, evaluator, z_eval, eval_every=cfg.eval_every,
                    schedule=make_schedule(kind, cfg), label=kind)
        out["seconds"] = out["history"].training_seconds()
        out["samples"] = M.sample(out["G"], z_show)
        out["measures"] = M.stability_measures(out["history"], out["evals"])
        results[kind] = out

    spe = results["constant"]["steps_per_epoch"]

    def series(kind, key):
        h = results[kind]["history"]
        return [s / spe for s in h.series("step")], h.series(key)

    plot_panels({"learning rate per update": {k: series(k, "lr") for k in SCHEDULES}},
                study.path("lr_schedules.png"), xlabel="epoch (one point per update)",
                title=f"Learning rate of G and D per update (batch {bs}, {spe} updates per epoch)",
                ylabels={"learning rate per update": "learning rate"})
    plot_panels({"D loss": {k: series(k, "d_loss") for k in SCHEDULES},
                 "G loss": {k: series(k, "g_loss") for k in SCHEDULES},
                 "D(x) - D(G(z))": {k: (series(k, "d_real")[0],
                                        [a - b for a, b in zip(series(k, "d_real")[1], series(k, "d_fake")[1])])
                                    for k in SCHEDULES}},
                study.path("losses.png"), xlabel="epoch", window=max(5, spe // 2),
                title=f"Losses with and without a schedule (batch {bs}; smoothed over {max(5, spe // 2)} updates)",
                ylabels={"D loss": "BCE loss", "G loss": "BCE loss", "D(x) - D(G(z))": "mean probability gap"})
    plot_panels({"Frechet distance (judge features)": {
                    **{k: ([e["epoch"] for e in results[k]["evals"]], [e["frechet_distance"] for e in results[k]["evals"]])
                       for k in SCHEDULES},
                    "floor: real train vs test": ([0, cfg.epochs], [evaluator.floor] * 2)},
                 "class diversity": {k: ([e["epoch"] for e in results[k]["evals"]], [e["class_entropy"] for e in results[k]["evals"]])
                                     for k in SCHEDULES}},
                study.path("frechet.png"), xlabel="epoch", logy=["Frechet distance (judge features)"],
                title=f"Sample quality during training with and without a schedule ({cfg.n_eval} samples)",
                ylabels={"Frechet distance (judge features)": "FD (lower is better)",
                         "class diversity": "class entropy (nats, max 2.30)"})
    save_grid(torch.cat([results[k]["samples"] for k in SCHEDULES]), study.path("samples.png"), nrow=cfg.n_show,
              title=f"Samples after {cfg.epochs} epochs (batch {bs}, same noise)", row_labels=list(SCHEDULES),
              xlabel="fixed noise vector", ylabel="schedule")

    rows = []
    for k in SCHEDULES:
        r, m = results[k], results[k]["measures"]
        trained = [e for e in r["evals"] if e["epoch"] >= 1] or r["evals"]
        best = min(trained, key=lambda e: e["frechet_distance"])
        rows.append({"schedule": k, "fd_final": trained[-1]["frechet_distance"], "fd_best": best["frechet_distance"],
                     "best_epoch": best["epoch"], "judge_confidence": trained[-1]["judge_confidence"],
                     "class_entropy": trained[-1]["class_entropy"] + 0.0, "final_lr": r["history"].series("lr")[-1],
                     **{key: m[key] for key in ("g_loss_std_last", "g_loss_epoch_std_last", "gap_last",
                                                "divergence_epochs", "collapse_events")},
                     "seconds": round(r["seconds"], 1)})
    write_table(rows, study.path("schedules"),
                title=f"Schedules at batch size {bs}, {cfg.epochs} epochs (FD floor {evaluator.floor:.2f})")
    text = conclusion(rows, bs, evaluator.floor) + f"\nBatch size: {reason}.\n"
    study.path("conclusion.md").write_text(text)
    metrics = {"batch_size": bs, "batch_size_reason": reason, "runs": {r["schedule"]: r for r in rows},
               "frechet_floor_train_vs_test": evaluator.floor, "judge_test_accuracy": evaluator.judge_info["test_accuracy"],
               "epochs": cfg.epochs, "quick": cfg.quick}
    study.write_metrics(metrics)
    write_summary(study.dir, HEADLINE)
    print(text)
    return metrics


if __name__ == "__main__":
    run_main(main)
