"""Assignment 3, Part II.1: quality of the generated images across training stages.

Trains the MLP GAN of Part I and every ``--snapshot-every`` epochs (5 by default, as the handout
suggests) keeps a checkpoint ``snapshot_epochNNN.pt`` and the samples of one fixed noise tensor,
then measures the generator with the MNIST judge (a small classifier, trained once and cached;
``Evaluator``): Frechet distance on judge features (beside its real train-vs-test floor), mean
judge confidence and class diversity (entropy of the judge's class histogram, ln 10 = 2.30 at best).

Outputs in ``outputs/assignment3/stages/<name>/``: ``stages_grid.png`` (a row per stage),
``stage_metrics.png`` (the three curves across stages), ``losses.png``, ``stages.md``/``.csv``,
``metrics.json``, ``history.csv``, ``epochs.csv``, ``config.json``, checkpoints.

    python part2_training_stages.py            # 50 epochs, snapshots every 5, 5000 samples judged each
    python part2_training_stages.py --quick    # smoke run
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
from common.paths import run_dir, shown
from common.plotting import plot_panels, save_grid
from common.summary import FRECHET, Headline, write_summary
from common.tables import write_table
from common.training import Run, get_device, resolve_precision, resolved, seed_everything


# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (Headline(FRECHET.key, "final Fréchet distance", floor=FRECHET.floor, fmt=".2f", better="lower"),
            Headline("best_frechet_distance", "best Fréchet distance", fmt=".2f", better="lower"),
            Headline("best_epoch", "best epoch"))


@dataclass
class StagesConfig(M.GanConfig):
    epochs: int = 50
    snapshot_every: int = dataclasses.field(default=5, metadata={"help": "epochs between snapshots"})
    n_show: int = dataclasses.field(default=10, metadata={"help": "images per stage in the grid"})
    n_eval: int = dataclasses.field(default=5000, metadata={"help": "samples per judge evaluation"})
    name: str = "default"

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "snapshot_every": 1, "n_eval": 256}


def main(argv=None) -> dict:
    cfg = parse_config(StagesConfig, argv, __doc__.splitlines()[0])
    device = get_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    x, _, source = M.load_mnist(cfg, device)
    run = Run(run_dir("assignment3", "stages", cfg.name, cfg.out_dir, quick=cfg.quick),
              {**cfg.to_dict(), **resolved(device, precision, source)})
    evaluator = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root)
    z_eval = M.fixed_noise(cfg.n_eval, cfg.latent_dim, seed=cfg.seed + 1, device=device)
    z_show = M.fixed_noise(cfg.n_show, cfg.latent_dim, seed=cfg.seed + 2, device=device)
    out = M.fit(cfg, run, x, device, precision, evaluator, z_eval, eval_every=cfg.snapshot_every,
                snapshot_every=cfg.snapshot_every, z_fixed=z_show, label="stages")

    # A row per stage: the same ten noise vectors at every snapshot.
    epochs = sorted(out["snapshots"])
    save_grid(torch.cat([out["snapshots"][e] for e in epochs]), run.path("stages_grid.png"), nrow=cfg.n_show,
              title="Fixed-noise samples across training stages", row_labels=[f"epoch {e}" for e in epochs],
              ylabel="training stage", xlabel="fixed noise vector z_1..z_%d" % cfg.n_show)

    evals = [e for e in out["evals"] if e["epoch"] in [0.0, *map(float, epochs)]]
    ep = [e["epoch"] for e in evals]
    floor = evaluator.floor
    plot_panels({
        "Frechet distance (judge features)": {"generated vs real test": (ep, [e["frechet_distance"] for e in evals]),
                                              "floor: real train vs test": (ep, [floor] * len(ep))},
        "mean judge confidence": {"max softmax, mean": (ep, [e["judge_confidence"] for e in evals])},
        "class diversity": {"entropy of judge classes": (ep, [e["class_entropy"] for e in evals]),
                            "maximum ln 10": (ep, [math.log(10)] * len(ep))},
    }, run.path("stage_metrics.png"), title=f"Sample quality across training stages ({cfg.n_eval} samples each)",
        xlabel="epoch", ylabels={"Frechet distance (judge features)": "FD (lower is better)",
                                 "mean judge confidence": "confidence", "class diversity": "entropy (nats)"},
        logy=["Frechet distance (judge features)"])
    h = out["history"]
    spe = out["steps_per_epoch"]
    steps = [s / spe for s in h.series("step")]
    plot_panels({"losses": {"D loss": (steps, h.series("d_loss")), "G loss": (steps, h.series("g_loss"))},
                 "discriminator outputs": {"D(x)": (steps, h.series("d_real")), "D(G(z))": (steps, h.series("d_fake"))}},
                run.path("losses.png"), title="Training curves (smoothed over 50 steps)", xlabel="epoch",
                ylabels={"losses": "BCE loss", "discriminator outputs": "mean probability"}, window=50)
    rows = [{"epoch": int(e["epoch"]), "updates": e["step"], "frechet_distance": e["frechet_distance"],
             "judge_confidence": e["judge_confidence"], "class_entropy": e["class_entropy"] + 0.0} for e in evals]
    write_table(rows, run.path("stages"), title=f"Quality across training stages (FD floor {floor:.2f})")
    best = min([r for r in rows if r["epoch"] >= 1] or rows, key=lambda r: r["frechet_distance"])
    metrics = {**{k: v for k, v in evals[-1].items() if k != "class_histogram"}, "stages": rows,
               "best_epoch": best["epoch"], "best_frechet_distance": best["frechet_distance"],
               "train_seconds": round(h.training_seconds(), 1),  # every --resume included
               "seconds_per_epoch": round(h.seconds_per_epoch() or 0.0, 2),
               "judge_test_accuracy": evaluator.judge_info["test_accuracy"], "quick": cfg.quick}
    run.write_metrics(metrics)
    write_summary(run.dir, HEADLINE)
    print(f"stages: final FD {rows[-1]['frechet_distance']:.2f} (floor {floor:.2f}), best at epoch "
          f"{best['epoch']}; figures in {shown(run.dir)}")
    return metrics


if __name__ == "__main__":
    run_main(main)
