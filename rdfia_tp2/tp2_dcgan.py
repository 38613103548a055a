"""RDFIA TP2-de, part 1: DCGAN on MNIST (32x32, padded) and the practical's experiments.

Handout: the RDFIA TP2 (GAN) practical (questions 1-5); architecture and defaults from the
course's task sheet (``tp2_models.py``). Each experiment is a named run in
``outputs/rdfia_tp2/dcgan/<experiment>/`` with loss curves, samples over training (one row per
epoch, fixed noise), an interpolation figure, the Frechet distance on judge features per epoch
and at the end, and ``metrics.json``. Several experiments at once (``--experiment all`` or a
comma-separated list) also write ``outputs/rdfia_tp2/dcgan/comparison/``: one sample row per
experiment and a table. A quick run appends ``_quick`` to each of these folders' names.

    python tp2_dcgan.py                       # the default DCGAN (20 epochs, lr / 10 at 11 and 16)
    python tp2_dcgan.py --experiment all      # every experiment, then the comparison
    python tp2_dcgan.py --experiment nz10,saturating --quick
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common import data as D
from common.cli import BaseConfig, parse_config, run_main
from common.loop import train_epochs
from common.metrics import Evaluator
from common.paths import run_path, shown
from common.plotting import plot_bars, plot_panels, save_grid
from common.summary import FRECHET, Headline, write_summary
from common.tables import write_table
from common.training import (EpochSamples, Run, fixed_noise, get_device, lerp, resolve_precision, resolved,
                             seed_everything, slerp, step_schedulers)
from tp2_models import GENERATOR_LOSSES, Discriminator, Generator, sample_z, weights_init
from tp2_training import COURSE, generate, load_data, make_optimizers, make_step, plot_training, prepare_models

PART = "dcgan"
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (FRECHET, Headline("class_entropy", "class entropy (of 2.303)", unit="nats", fmt=".3f", better="higher"))

# The practical's suggested experiments: each is the default configuration with these changes.
EXPERIMENTS: dict[str, dict] = {
    "default": {},
    "nz10": {"nz": 10},
    "nz1000": {"nz": 1000},
    "nz10000": {"nz": 10000},
    "pytorch_init": {"init": "pytorch"},
    "ngf128_ndf256": {"ngf": 128, "ndf": 256},
    "saturating": {"g_loss": "saturating"},
    "lr1e-3": {"lr": 1e-3},
    "lr5e-5": {"lr": 5e-5},
    "cifar10": {"dataset": "cifar10"},
}


@dataclass
class DCGANConfig(BaseConfig):
    epochs: int = 20
    lr: float = 2e-4
    batch_size: int = 128
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    nz: int = field(default=100, metadata={"help": "latent size"})
    ngf: int = field(default=32, metadata={"help": "generator width"})
    ndf: int = field(default=32, metadata={"help": "discriminator width"})
    init: str = field(default="course", metadata={"choices": ["course", "pytorch"],
                                                  "help": "course: N(0, 0.02) convs, BN N(1, 0.02); pytorch: its default"})
    g_loss: str = field(default="nonsaturating", metadata={"choices": list(GENERATOR_LOSSES)})
    dataset: str = field(default="mnist", metadata={"choices": ["mnist", "cifar10"]})
    lr_decay_epochs: typing.List[int] = field(default_factory=lambda: [11, 16], metadata={
        "help": "1-based epochs from which the lr is divided by 10 (the course's older schedule)"})
    experiment: str = field(default="default", metadata={
        "help": "a name, a comma-separated list, or 'all': " + ", ".join(EXPERIMENTS)})
    n_eval: int = field(default=10000, metadata={"help": "samples for the final Frechet distance"})
    n_eval_epoch: int = field(default=2000, metadata={"help": "samples for the per-epoch Frechet distance (0: none)"})
    fast_wgrad: bool = field(default=True, metadata={
        "help": "bf16 on a CPU: the 4x4 convolutions' weight gradient as one matmul (tp2_speedups.py, "
                "a faster step); --no-fast-wgrad trains the stock layers"})

    # Quick: the few-hundred-image sample; batch 32 so BatchNorm's running statistics (used by the
    # eval-mode sample grids) have seen enough steps to mean something.
    QUICK: typing.ClassVar[dict] = {"epochs": 2, "batch_size": 32, "n_eval": 256, "n_eval_epoch": 256}


def experiment_names(spec: str) -> list[str]:
    names = list(EXPERIMENTS) if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"error: unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)} or 'all'")
    return names


def experiment_dir(cfg, name: str) -> Path:
    """The run folder of one experiment (or of the comparison, ``name="comparison"``), not created:
    ``outputs/rdfia_tp2/dcgan/<name>/``, ``<name>_quick/`` for a quick run; with ``--out-dir``,
    ``<out-dir>/<name>/``."""
    return run_path(COURSE, PART, name, Path(cfg.out_dir) / name if cfg.out_dir else None, quick=cfg.quick)


def plot_interpolation(G, nz, device, precision, path, title, seed, value_range=(-1, 1)) -> None:
    """Three pairs (z1, z2), each walked linearly and spherically in 10 steps."""
    g = torch.Generator().manual_seed(4321 + seed)
    t = torch.linspace(0, 1, 10)
    zs, labels = [], []
    for k in range(3):
        z1, z2 = sample_z(2, nz, g)
        a, b = z1.view(1, -1), z2.view(1, -1)  # (1, nz): slerp's angle is taken over the whole latent
        zs += [f(a, b, t.view(-1, 1)).view(-1, *z1.shape) for f in (lerp, slerp)]
        labels += [f"pair {k + 1} lerp", f"pair {k + 1} slerp"]
    imgs = generate(G, torch.cat(zs), device, precision)
    save_grid(imgs, path, nrow=10, title=f"{title}: interpolation from z1 (left) to z2 (right)",
              value_range=value_range, row_labels=labels, col_labels=[f"{v:.2f}" for v in t.tolist()],
              xlabel="t in (1 - t) z1 + t z2 (lerp) / slerp")


def train_experiment(cfg: DCGANConfig, name: str, evaluators: dict) -> dict:
    """Train one experiment and write its run folder; returns its metrics."""
    seed_everything(cfg.seed)
    device = get_device(cfg.device)  # also flushes denormals
    # auto -> bf16 where supported: in README.md's precision check its FD stayed within the
    # seed-to-seed spread of fp32's (two seeds, one epoch); --precision fp32 is the reference.
    precision = resolve_precision(cfg.precision, device)
    split, x, y = load_data(cfg, device)
    info = split.info
    folder = experiment_dir(cfg, name)
    folder.mkdir(parents=True, exist_ok=True)
    run = Run(folder, {**cfg.to_dict(), "experiment": name, **resolved(device, precision, split.source),
                       "n_train": len(split)})
    stand_in = f", synthetic images standing in for {info.title}" if split.source == "synthetic" else ""
    title = f"DCGAN {name}" + (" (quick)" if cfg.quick else "") + stand_in

    G = Generator(cfg.nz, cfg.ngf, info.channels).to(device)
    Dn = Discriminator(cfg.ndf, info.channels).to(device)
    if cfg.init == "course":
        G.apply(weights_init)
        Dn.apply(weights_init)
    G, Dn = prepare_models(cfg, device, precision, G, Dn)
    opt_G, opt_D, (sched_G, sched_D) = make_optimizers(cfg, G, Dn)
    loader = D.TensorLoader(x, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    g_loss_fn = GENERATOR_LOSSES[cfg.g_loss]
    noise = fixed_noise(10, cfg.nz, 1, 1, seed=1234 + cfg.seed)
    epoch_samples = EpochSamples()  # fixed-noise rows from epoch 0 (untrained) on, and the FD per epoch
    epoch_samples.add(0, generate(G, noise, device, precision))
    objects = {"G": G, "D": Dn, "opt_G": opt_G, "opt_D": opt_D, "sched_G": sched_G, "sched_D": sched_D,
               "loader": loader, "epoch_samples": epoch_samples}
    start = run.resume(objects) if cfg.resume else 0

    has_judge = info.key in ("mnist", "fashion")

    def get_evaluator():  # made when first needed: the judge may be trained on first use
        if info.key not in evaluators:
            evaluators[info.key] = Evaluator(info.key, device, quick=cfg.quick, data_root=cfg.data_root)
        return evaluators[info.key]

    per_epoch_fd = has_judge and cfg.n_eval_epoch > 0
    evaluator = get_evaluator() if per_epoch_fd else None
    eval_g = torch.Generator().manual_seed(99 + cfg.seed)
    if per_epoch_fd and start:  # a resumed run skips the evaluation latents its epochs 0..start drew
        for _ in range(start + 1):
            sample_z(cfg.n_eval_epoch, cfg.nz, eval_g)
    if per_epoch_fd and start == 0:  # FD of the untrained generator: where the curve starts
        epoch_samples.record(epoch=0, frechet_distance=evaluator.frechet(
            generate(G, sample_z(cfg.n_eval_epoch, cfg.nz, eval_g), device, precision)))

    def end_of_epoch(ep):
        epoch_samples.add(ep.number, generate(G, noise, device, precision))
        if per_epoch_fd:
            z_eval = sample_z(cfg.n_eval_epoch, cfg.nz, eval_g)
            ep.row["frechet_distance"] = evaluator.frechet(generate(G, z_eval, device, precision))
            epoch_samples.record(epoch=ep.number, frechet_distance=ep.row["frechet_distance"])

    def batch_inputs(batch):  # real images and fresh noise, no conditions
        return batch[0], torch.randn(len(batch[0]), cfg.nz, 1, 1, device=device), (), ()

    train_epochs(make_step(G, Dn, opt_G, opt_D, batch_inputs, g_loss_fn, device, precision), loader, cfg.epochs,
                 run=run, objects=objects, start=start, models=(G, Dn),
                 on_epoch=[step_schedulers(opt_G, (sched_G, sched_D)), end_of_epoch], desc=name, label=name)

    # Final figures and metrics from the trained generator.
    plot_training(run, title, epoch_samples, fd_floor=evaluator.floor if evaluator else None, fd_n=cfg.n_eval_epoch)
    grid_noise = fixed_noise(64, cfg.nz, 1, 1, seed=777 + cfg.seed)
    save_grid(generate(G, grid_noise, device, precision), run.path("samples.png"), nrow=8,
              title=f"{title}: 64 samples after {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}")
    plot_interpolation(G, cfg.nz, device, precision, run.path("interpolation.png"), title, cfg.seed)
    torch.save(epoch_samples.rows[-1], run.path("comparison_samples.pt"))

    epochs = run.history.epochs
    last = epochs[-1] if epochs else {}
    fd_epochs, fd = epoch_samples.series("frechet_distance")
    metrics = {"experiment": name, "dataset": info.key, "data_source": split.source, "quick": cfg.quick,
               "nz": cfg.nz, "ngf": cfg.ngf, "ndf": cfg.ndf, "init": cfg.init, "g_loss_type": cfg.g_loss,
               "lr": cfg.lr, "epochs": cfg.epochs, "precision": precision, "steps": run.step,
               "params_G": sum(p.numel() for p in G.parameters()), "params_D": sum(p.numel() for p in Dn.parameters()),
               "seconds_per_epoch": run.history.series("seconds", per="epoch"),
               "mean_seconds_per_epoch": run.history.seconds_per_epoch() or 0.0,
               "final_epoch": {k: last.get(k) for k in ("d_loss", "g_loss", "D_x", "D_G_z")},
               "frechet_per_epoch": fd, "frechet_per_epoch_epochs": fd_epochs,
               "frechet_per_epoch_n": cfg.n_eval_epoch}
    if has_judge:
        evaluator = get_evaluator()
        z_eval = fixed_noise(cfg.n_eval, cfg.nz, 1, 1, seed=2024 + cfg.seed)
        metrics.update(evaluator.report(generate(G, z_eval, device, precision)))
    else:
        metrics.update({"frechet_distance": None,
                        "frechet_note": f"n/a: no judge classifier exists for {info.title}"})
    run.write_metrics(metrics)
    write_summary(folder, HEADLINE)
    print(f"[{name}] wrote {shown(folder)}" + (f" (FD {metrics['frechet_distance']:.2f}, floor "
                                        f"{metrics['frechet_floor_train_vs_test']:.2f})" if evaluator else ""))
    return metrics


COMPARE_COLUMNS = ["experiment", "dataset", "nz", "ngf", "ndf", "init", "g_loss_type", "lr", "epochs", "quick",
                   "frechet_distance", "frechet_floor_train_vs_test", "class_entropy", "judge_confidence",
                   "final_d_loss", "final_g_loss", "final_D_x", "final_D_G_z", "mean_seconds_per_epoch", "status"]


def write_comparison(folders: dict[str, Path], out: Path, skipped: dict[str, str]) -> Path:
    """One sample row per experiment (``folders``: name -> run folder; fixed noise of the run's nz
    and seed) and a table, into ``out``."""
    rows, panels, drawn = [], [], {}  # drawn: each sample row's label -> its run folder
    for name, folder in folders.items():
        if name in skipped or not (folder / "metrics.json").exists():
            rows.append({"experiment": name, "status": skipped.get(name, "not run")})
            continue
        m = json.loads((folder / "metrics.json").read_text())
        fe = m.get("final_epoch", {})
        rows.append({**{k: m.get(k) for k in COMPARE_COLUMNS},
                     **{f"final_{k}": fe.get(k) for k in ("d_loss", "g_loss", "D_x", "D_G_z")},
                     "frechet_distance": m["frechet_distance"] if m.get("frechet_distance") is not None else "n/a (no judge)",
                     "status": "ok"})
        rows[-1] = {k: ("n/a" if v is None else v) for k, v in rows[-1].items()}
        s = torch.load(folder / "comparison_samples.pt")
        panels.append(s.expand(-1, 3, -1, -1) if s.shape[1] == 1 else s)
        drawn[name + (" (synthetic stand-in)" if m.get("data_source") == "synthetic" else "")] = folder
    out.mkdir(parents=True, exist_ok=True)
    if panels:
        save_grid(torch.cat(panels), out / "comparison_samples.png", nrow=10, row_labels=list(drawn),
                  title="DCGAN experiments: final samples from the same fixed noise (per nz)", xlabel="fixed z")
        fd = {r["experiment"]: r["frechet_distance"] for r in rows if isinstance(r.get("frechet_distance"), float)}
        if fd:
            spread = max(fd.values()) / max(min(fd.values()), 1e-9)
            plot_bars(fd, out / "comparison_fd.png", title="Frechet distance on judge features (lower is better)",
                      ylabel="FD vs MNIST test" + (" (log scale)" if spread > 20 else ""), xlabel="experiment",
                      log=spread > 20, fmt="%.0f")
        d_curves, g_curves = {}, {}
        for name, folder in drawn.items():
            hist = json.loads((folder / "history.json").read_text())["epochs"]
            epochs = [r["epoch"] for r in hist]
            d_curves[name] = (epochs, [r["d_loss"] for r in hist])
            g_curves[name] = (epochs, [r["g_loss"] for r in hist])
        plot_panels({"discriminator loss": d_curves, "generator loss": g_curves}, out / "comparison_losses.png",
                    title="Mean loss per epoch, every experiment (the saturating run's G loss is log(1 - D(G(z))))",
                    xlabel="epoch", ylabels={"discriminator loss": "mean D loss (BCE)",
                                             "generator loss": "mean G loss"}, ncols=2)
    md = write_table(rows, out / "comparison", columns=COMPARE_COLUMNS, title="DCGAN experiments")
    print(f"[comparison] wrote {shown(md)}")
    return md


def main(argv=None) -> dict:
    cfg = parse_config(DCGANConfig, argv, description=__doc__.splitlines()[0])
    names = experiment_names(cfg.experiment)
    evaluators: dict = {}
    results, skipped, missing = {}, {}, None
    for name in names:
        exp_cfg = dataclasses.replace(cfg, **EXPERIMENTS[name])
        try:
            results[name] = train_experiment(exp_cfg, name, evaluators)
        except D.DataError as exc:
            if len(names) == 1:
                raise
            missing = exc
            skipped[name] = "skipped: data missing"
            print(f"[{name}] skipped: {exc}")
    if len(names) > 1:
        write_comparison({n: experiment_dir(cfg, n) for n in names}, experiment_dir(cfg, "comparison"), skipped)
    if missing is not None:  # the other runs and the comparison are written; still fail loudly
        raise missing
    return results


if __name__ == "__main__":
    run_main(main)
