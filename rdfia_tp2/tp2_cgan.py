"""RDFIA TP2-de, part 2: conditional DCGAN on MNIST (questions 6-9 of the handout).

``ConditionalGenerator`` / ``ConditionalDiscriminator`` (``tp2_models.py``) take the one-hot
label y beside z or x, after Mirza & Osindero, "Conditional Generative Adversarial Nets"
(arXiv:1411.1784). Training is the DCGAN loop (``tp2_training.py``) with y given to both players:
real images with their labels, fakes with labels drawn uniformly. The closing test of the
practical draws one z per column and repeats it for every class row (``z.repeat(n_classes, 1)``),
so each column shares z ("style") and each row shares y ("content").

Writes ``outputs/rdfia_tp2/cgan/default/``: loss curves, samples over training, the 10x10
conditional grid, the judge's class accuracy per row (bars and ``metrics.json``), and a table
comparing quality (Frechet distance, class entropy) with the unconditional run of
``tp2_dcgan.py`` (``outputs/rdfia_tp2/dcgan/default``, or ``--dcgan-run``), and the sentence that
reads that table (``comparison_verdict.txt``, quoted by the report's Q8).
"""
from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common import data as D
from common.cli import BaseConfig, parse_config, run_main
from common.loop import train_epochs
from common.metrics import Evaluator
from common.paths import run_dir, run_path, shown
from common.plotting import plot_bars, save_grid
from common.summary import FRECHET, Headline, write_summary
from common.tables import write_table
from common.training import (EpochSamples, Run, fixed_noise, get_device, resolve_precision, resolved, seed_everything,
                             step_schedulers)
from tp2_dcgan import PART as DCGAN_PART
from tp2_models import (GENERATOR_LOSSES, ConditionalDiscriminator, ConditionalGenerator, conditional_grid_inputs,
                        weights_init)
from tp2_training import COURSE, generate, load_data, make_optimizers, make_step, plot_training, prepare_models

PART = "cgan"
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (FRECHET, Headline("class_accuracy", "class accuracy", unit="%", better="higher"))


@dataclass
class CGANConfig(BaseConfig):
    epochs: int = 20
    lr: float = 2e-4
    batch_size: int = 128
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    nz: int = field(default=100, metadata={"help": "latent size"})
    g_loss: str = field(default="nonsaturating", metadata={"choices": list(GENERATOR_LOSSES)})
    lr_decay_epochs: typing.List[int] = field(default_factory=lambda: [11, 16], metadata={
        "help": "1-based epochs from which the lr is divided by 10 (the course's older schedule)"})
    n_eval: int = field(default=10000, metadata={"help": "samples (n_eval / 10 per class) for the final metrics"})
    dcgan_run: typing.Optional[str] = field(default=None, metadata={
        "help": "unconditional run folder to compare with (default: outputs/rdfia_tp2/dcgan/default)"})
    fast_wgrad: bool = field(default=True, metadata={
        "help": "bf16 on a CPU: the 4x4 convolutions' weight gradient as one matmul (tp2_speedups.py, "
                "a faster step); --no-fast-wgrad trains the stock layers"})
    dataset: typing.ClassVar[str] = "mnist"

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "batch_size": 32, "n_eval": 500}


def comparison_verdict(cg: dict, dc: dict | None) -> str:
    """One sentence that reads the comparison table: which model's samples are closer to real digits
    (lower judge FD) and how evenly each covers the ten classes (class entropy, ln 10 at best)."""
    if dc is None:
        return "The unconditional run is missing, so there is nothing to compare with yet."
    a, b = cg["frechet_distance"], dc["frechet_distance"]
    better, worse = ("conditional", "unconditional") if a < b else ("unconditional", "conditional")
    return (f"In our runs the {better} model was the more successful one: its samples are closer to real "
            f"digits (FD {min(a, b):.1f} against {max(a, b):.1f} for the {worse} model, "
            f"{max(a, b) / min(a, b):.2f}x). Class coverage: class entropy {cg['class_entropy']:.3f} "
            f"(conditional) and {dc['class_entropy']:.3f} (unconditional), of at most 2.303.")


def compare_with_unconditional(cfg, metrics: dict, folder: Path) -> Path:
    """Table: the conditional model beside the unconditional DCGAN run (read from its metrics.json),
    and ``comparison_verdict.txt``, the sentence that reads it (report Q8)."""
    dc_dir = Path(cfg.dcgan_run) if cfg.dcgan_run else run_path(COURSE, DCGAN_PART, "default", quick=cfg.quick)
    keys = ["frechet_distance", "frechet_floor_train_vs_test", "class_entropy", "judge_confidence",
            "class_accuracy", "epochs", "quick", "mean_seconds_per_epoch", "n_samples"]
    rows = [{"model": "conditional DCGAN", **{k: metrics.get(k) for k in keys}}]
    dc = None
    if (dc_dir / "metrics.json").exists():
        dc = json.loads((dc_dir / "metrics.json").read_text())
        rows.append({"model": "unconditional DCGAN", **{k: dc.get(k) for k in keys}, "class_accuracy": "n/a"})
    else:
        rows.append({"model": "unconditional DCGAN", "frechet_distance": f"not run yet ({shown(dc_dir)})"})
    (folder / "comparison_verdict.txt").write_text(comparison_verdict(metrics, dc) + "\n")
    return write_table(rows, folder / "comparison_unconditional", columns=["model"] + keys,
                       title="Conditional vs unconditional DCGAN (judge features, MNIST test)")


def main(argv=None) -> dict:
    cfg = parse_config(CGANConfig, argv, description=__doc__.splitlines()[0])
    seed_everything(cfg.seed)
    device = get_device(cfg.device)  # also flushes denormals
    precision = resolve_precision(cfg.precision, device)  # auto -> bf16 where supported, as tp2_dcgan
    split, x, y = load_data(cfg, device)
    n_classes = len(split.info.classes)
    y1h = D.one_hot(y, n_classes)
    folder = run_dir(COURSE, PART, "default", cfg.out_dir, quick=cfg.quick)
    run = Run(folder, {**cfg.to_dict(), **resolved(device, precision, split.source),
                       "n_train": len(split)})
    title = "Conditional DCGAN" + (" (quick)" if cfg.quick else "")

    G = ConditionalGenerator(cfg.nz, n_classes, 1).to(device)
    Dn = ConditionalDiscriminator(n_classes, 1).to(device)
    G.apply(weights_init)
    Dn.apply(weights_init)
    G, Dn = prepare_models(cfg, device, precision, G, Dn)
    opt_G, opt_D, (sched_G, sched_D) = make_optimizers(cfg, G, Dn)
    loader = D.TensorLoader(x, y1h, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    g_loss_fn = GENERATOR_LOSSES[cfg.g_loss]

    # Progress rows: one fixed z per column and the column's class 0..9 (one digit of each class).
    noise = fixed_noise(n_classes, cfg.nz, 1, 1, seed=1234 + cfg.seed)
    labels = D.one_hot(torch.arange(n_classes), n_classes)
    epoch_samples = EpochSamples()
    epoch_samples.add(0, generate(G, noise, device, precision, labels))
    objects = {"G": G, "D": Dn, "opt_G": opt_G, "opt_D": opt_D, "sched_G": sched_G, "sched_D": sched_D,
               "loader": loader, "epoch_samples": epoch_samples}
    start = run.resume(objects) if cfg.resume else 0

    def batch_inputs(batch):
        """Real images with their labels; fakes for labels drawn uniformly."""
        real, y_real = batch
        z = torch.randn(len(real), cfg.nz, 1, 1, device=device)
        y_fake = D.one_hot(torch.randint(0, n_classes, (len(real),), device=device), n_classes)
        return real, z, (y_real,), (y_fake,)

    def end_of_epoch(ep):
        epoch_samples.add(ep.number, generate(G, noise, device, precision, labels))

    train_epochs(make_step(G, Dn, opt_G, opt_D, batch_inputs, g_loss_fn, device, precision), loader, cfg.epochs,
                 run=run, objects=objects, start=start, models=(G, Dn),
                 on_epoch=[step_schedulers(opt_G, (sched_G, sched_D)), end_of_epoch], desc="cgan", label="cgan")

    plot_training(run, title, epoch_samples, col_labels=list(split.info.classes), xlabel="class y (one fixed z per column)")
    # The practical's closing test: rows = classes, columns share z.
    z, yk = conditional_grid_inputs(cfg.nz, n_classes, 10, torch.Generator().manual_seed(777 + cfg.seed))
    grid = generate(G, z, device, precision, D.one_hot(yk, n_classes))
    save_grid(grid, run.path("conditional_grid.png"), nrow=10, title=f"{title}: each row one class y, "
              "each column one z", row_labels=list(split.info.classes), col_labels=[f"z{j + 1}" for j in range(10)],
              ylabel="class y", xlabel="latent z (shared down each column)")

    # Judge metrics on n_eval samples, an equal number per class.
    evaluator = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root)
    per = cfg.n_eval // n_classes
    y_eval = torch.arange(n_classes).repeat_interleave(per)
    z_eval = fixed_noise(len(y_eval), cfg.nz, 1, 1, seed=2024 + cfg.seed)
    samples = generate(G, z_eval, device, precision, D.one_hot(y_eval, n_classes))
    report = evaluator.report(samples, labels=y_eval)
    grid_probs = evaluator.probabilities(grid)
    grid_acc = {c: (grid_probs[yk == c].argmax(1) == c).float().mean().item() for c in range(n_classes)}
    plot_bars({split.info.classes[c]: v for c, v in report["class_accuracy_per_class"].items()},
              run.path("class_accuracy.png"), title=f"{title}: judge accuracy per requested class ({per} samples each)",
              ylabel="share classified as y", xlabel="requested class y")

    last = run.history.epochs[-1] if run.history.epochs else {}
    metrics = {"model": "conditional DCGAN", "quick": cfg.quick, "data_source": split.source, "nz": cfg.nz,
               "lr": cfg.lr, "epochs": cfg.epochs, "precision": precision, "steps": run.step,
               "params_G": sum(p.numel() for p in G.parameters()), "params_D": sum(p.numel() for p in Dn.parameters()),
               "seconds_per_epoch": run.history.series("seconds", per="epoch"),
               "mean_seconds_per_epoch": run.history.seconds_per_epoch() or 0.0,
               "final_epoch": {k: last.get(k) for k in ("d_loss", "g_loss", "D_x", "D_G_z")},
               **report, "grid_class_accuracy_per_row": grid_acc}
    run.write_metrics(metrics)
    md = compare_with_unconditional(cfg, metrics, folder)
    write_summary(folder, HEADLINE)
    print(f"[cgan] wrote {shown(folder)}: FD {report['frechet_distance']:.2f} (floor {report['frechet_floor_train_vs_test']:.2f}), "
          f"class accuracy {report['class_accuracy']:.3f}; {md.name}")
    return metrics


if __name__ == "__main__":
    run_main(main)
