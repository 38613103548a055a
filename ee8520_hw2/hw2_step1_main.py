"""EE 8520 HW2, Step 1: train the fully connected GAN of ``models/GAN.py`` on MNIST, and its ablations.

Handout: the EE 8520 HW2 handout (Step 1); GAN: Goodfellow et al., "Generative
Adversarial Nets", NeurIPS 2014. The skeleton's functions keep their names and signatures
(``monitor_images``, ``monitor_losses``, ``train_main_loop``); the skeleton's figures go to
``imgs/generated_images.png`` and ``imgs/loss_monitoring.png``; everything else goes to the run
folder ``outputs/ee8520_hw2/step1/<run>/`` (``<run>_quick/`` for ``--quick``).

    python hw2_step1_main.py                    # the default run (settings in Step1Config)
    python hw2_step1_main.py --ablation all     # every ablation in ABLATIONS, overlay + table
    python hw2_step1_main.py --ablation d_freq_2 --epochs 20
    python hw2_step1_main.py --quick            # a few hundred images, 2 epochs
"""
from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from common.cli import BaseConfig, parse_config, run_main
from common.data import TensorLoader, images, load_split
from common.loop import train_epochs
from common.metrics import Evaluator
from common.paths import run_dir, shown, skeleton_imgs_dir
from common.plotting import plot_panels, save_grid
from common.summary import FRECHET, Headline, write_summary
from common.tables import write_table
from common.training import EpochSamples, Run, adam, fixed_noise, get_device, resolved, seed_everything
from models.GAN import Discriminator, Generator, train_discriminator, train_generator

COURSE_DIR = Path(__file__).resolve().parent
COURSE = "ee8520_hw2"  # its folder under outputs/
IMGS_DIR = COURSE_DIR / "imgs"
MNIST_TRAIN_SIZE = 60000
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (FRECHET, Headline("class_entropy", "class entropy (of 2.303)", unit="nats", fmt=".3f", better="higher"))
ABLATION_HEADLINE = (Headline("*/frechet_distance", "{}: Fréchet distance", floor="frechet_floor_train_vs_test", fmt=".2f",
                              better="lower"),)


@dataclass
class Step1Config(BaseConfig):
    """Defaults of the full Step 1 run (``--quick`` changes what ``QUICK`` lists)."""

    epochs: int = field(default=100, metadata={"help": "training epochs (the handout suggests 50-100+)"})
    batch_size: int = 128
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate of D (and of G with --lr-g 0)"})
    lr_d: typing.Optional[float] = field(default=None, metadata={"help": "discriminator learning rate (default: --lr)"})
    lr_g: typing.Optional[float] = field(default=4e-4, metadata={
        "help": "generator learning rate; twice D's by default, because with equal rates this small G "
                "falls behind and D takes over (README); 0: --lr"})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1 (0.5 as in DCGAN: less momentum, steadier GAN)"})
    dim_z: int = 100
    g_channels: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={"help": "generator hidden sizes"})
    d_channels: list[int] = field(default_factory=lambda: [256, 128, 64], metadata={"help": "discriminator hidden sizes"})
    dropout: float = field(default=0.3, metadata={"help": "dropout after each discriminator hidden layer"})
    d_freq: int = field(default=1, metadata={"help": "update G only on batches n with n %% d_freq == 0"})
    n_eval: int = field(default=10000, metadata={"help": "generated samples scored by the MNIST judge (0: no judge)"})
    threads: int = 1  # these small MLPs run fastest on one thread (two spin-wait on a busy CPU)
    precision: str = field(default="fp32", metadata={
        "choices": ["fp32"], "help": "these small MLPs train in fp32 only (bf16 is not checked for them)"})
    ablation_epochs: int = field(default=50, metadata={"help": "epochs of each ablation run"})
    ablation: typing.Optional[str] = field(default=None, metadata={
        "help": "run named ablations instead of the default run: 'all' or comma-separated names "
                "(baseline, g_channels_x2, g_extra_layer, d_extra_layer, dropout_0.1, dropout_0.3, "
                "dropout_0.5, equal_lr, lr_d_x2, lr_g_x2, d_freq_1, d_freq_2, d_freq_3)"})

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "ablation_epochs": 1, "n_eval": 256}


# Each ablation changes one thing of the baseline, the default run (dropout 0.3, d_freq 1,
# lr_D 2e-4 and lr_G 4e-4: G learns faster).
ABLATIONS: dict[str, tuple[str, dict]] = {
    "baseline": ("the default: G 64/128/256, D 256/128/64, dropout 0.3, lr_D 2e-4, lr_G 4e-4, d_freq 1", {}),
    "g_channels_x2": ("G hidden sizes doubled: 128/256/512", {"g_channels": [128, 256, 512]}),
    "g_extra_layer": ("G with a 4th hidden layer: 64/128/256/512", {"g_channels": [64, 128, 256, 512]}),
    "d_extra_layer": ("D with a 4th hidden layer: 512/256/128/64", {"d_channels": [512, 256, 128, 64]}),
    "dropout_0.1": ("D dropout 0.1", {"dropout": 0.1}),
    "dropout_0.5": ("D dropout 0.5", {"dropout": 0.5}),
    "equal_lr": ("equal rates: lr_D = lr_G = 2e-4", {"lr_d": 2e-4, "lr_g": 2e-4}),
    "lr_d_x2": ("D learns faster: lr_D 4e-4, lr_G 2e-4", {"lr_d": 4e-4, "lr_g": 2e-4}),
    "d_freq_2": ("2 D updates per G update", {"d_freq": 2}),
    "d_freq_3": ("3 D updates per G update", {"d_freq": 3}),
}
# dropout 0.3, d_freq 1 and G learning faster (lr_G 4e-4) are the baseline itself; the names are
# accepted and run it once.
ALIASES = {"dropout_0.3": "baseline", "d_freq_1": "baseline", "lr_g_x2": "baseline"}


# --------------------------------------------------------------------------------------------
# The skeleton's functions


@torch.no_grad()
def monitor_images(generator, test_noise, path=None) -> torch.Tensor:
    """Generate from the fixed ``test_noise`` (eval mode) and save an 8x8 grid
    (``imgs/generated_images.png`` unless ``path``); returns the images (N, 784) in [-1, 1]."""
    was_training = generator.training
    generator.eval()
    fake = generator(test_noise).cpu()
    generator.train(was_training)
    save_grid(fake[:64], path or IMGS_DIR / "generated_images.png", nrow=8,
              title=f"GAN samples from {min(len(fake), 64)} fixed noise vectors")
    return fake


def monitor_losses(d_losses, d_losses_fake, g_losses, g_losses_fake, batch_size=128, path=None,
                   num_epochs=None, dataset_size=MNIST_TRAIN_SIZE, window=100):
    """Plot moving averages (``window`` steps) of the per-step losses against epochs and save
    ``imgs/loss_monitoring.png`` (unless ``path``). Each list spans the whole run; G has fewer
    entries than D when ``d_freq`` > 1."""
    epochs = num_epochs or len(d_losses) * batch_size / dataset_size

    def xy(values):
        values = list(map(float, values))
        return np.arange(1, len(values) + 1) * epochs / max(1, len(values)), values

    panels = {
        "discriminator": {"d_loss = BCE(D(x),1) + BCE(D(G(z)),0)": xy(d_losses),
                          "d_loss_fake = BCE(D(G(z)),0)": xy(d_losses_fake)},
        "generator": {"g_loss = BCE(D(G(z)),1) (trained)": xy(g_losses),
                      "g_loss_fake = BCE(D(G(z)),0) (monitor)": xy(g_losses_fake)},
    }
    return plot_panels(panels, path or IMGS_DIR / "loss_monitoring.png", xlabel="epoch",
                       ylabels={"discriminator": "BCE loss", "generator": "BCE loss"}, window=window,
                       title=f"GAN losses per step (faint) and moving average over {window} steps")


def train_main_loop(generator, discriminator, d_optimizer, g_optimizer, test_noise, num_epochs, d_freq,
                    train_loader, dim_z, criterion, device=None, *, run: Run | None = None, start_epoch: int = 0,
                    checkpoint_objects: dict | None = None, snapshots: EpochSamples | None = None,
                    images_path=None):
    """Alternate GAN updates: D on every batch, G only when ``n % d_freq == 0``.

    Runs through the shared epoch loop (``common.loop``), which checks every step's losses for
    NaN; after each epoch the fixed ``test_noise`` is rendered (``monitor_images``); with a
    ``run`` every step and epoch is logged to its history and a checkpoint is written.
    Returns the per-step ``d_losses, d_losses_fake, g_losses, g_losses_fake`` of this call.
    """
    device = device if device is not None else next(generator.parameters()).device
    d_losses, d_losses_fake, g_losses, g_losses_fake = [], [], [], []

    def step(batch, n):
        real = batch[0].to(device)
        z = torch.randn(real.shape[0], dim_z, device=device)
        fake_images = generator(z)
        d_loss, outputs_real, outputs_fake, fake_loss = train_discriminator(
            discriminator, d_optimizer, real, fake_images, criterion, device)
        row = {"d_loss": d_loss.item(), "d_loss_fake": fake_loss.item(),
               "d_x": torch.sigmoid(outputs_real).mean().item(),
               "d_g_z": torch.sigmoid(outputs_fake).mean().item()}
        d_losses.append(row["d_loss"])
        d_losses_fake.append(row["d_loss_fake"])
        if n % d_freq == 0:
            outputs = discriminator(fake_images)  # D's fresh verdict after its update
            g_loss, g_loss_fake = train_generator(generator, g_optimizer, outputs, criterion, device)
            row.update(g_loss=g_loss.item(), g_loss_fake=g_loss_fake.item())
            g_losses.append(row["g_loss"])
            g_losses_fake.append(row["g_loss_fake"])
        return row

    def end_of_epoch(ep):
        fake = monitor_images(generator, test_noise, images_path)
        if snapshots is not None:
            snapshots.add(ep.number, fake)

    train_epochs(step, train_loader, num_epochs, run=run, start=start_epoch, models=(generator, discriminator),
                 objects=checkpoint_objects or {"G": generator, "D": discriminator, "opt_G": g_optimizer,
                                                "opt_D": d_optimizer},
                 guard=("d_loss", "g_loss"), on_epoch=[end_of_epoch], desc="GAN epoch", label="step1")
    return d_losses, d_losses_fake, g_losses, g_losses_fake


# --------------------------------------------------------------------------------------------
# One run, the ablations, main


def save_epoch_samples(snapshots: EpochSamples, path, max_rows: int = 10):
    """One figure: a row of fixed-noise samples per epoch (at most ``max_rows`` epochs, evenly spaced)."""
    n = len(snapshots.epochs)
    rows = sorted(set(np.linspace(0, n - 1, min(n, max_rows)).round().astype(int).tolist()))
    imgs = torch.cat([snapshots.rows[i].float() for i in rows])
    return save_grid(imgs, path, nrow=len(snapshots.rows[0]), row_labels=[f"epoch {snapshots.epochs[i]}" for i in rows],
                     title="Samples from the same fixed noise across training",
                     xlabel="fixed noise vector (same in every row)")


def train_one(cfg: Step1Config, folder: Path, train_x: torch.Tensor, device, evaluator: Evaluator | None,
              imgs_dir: Path | None, data_source: str | None = None) -> dict:
    """Train one configuration into ``folder``; returns its summary (losses, D outputs, judge report)."""
    seed_everything(cfg.seed)
    generator = Generator(cfg.dim_z, cfg.g_channels).to(device)
    discriminator = Discriminator(cfg.d_channels, cfg.dropout).to(device)
    lr_d, lr_g = cfg.lr_d or cfg.lr, cfg.lr_g or cfg.lr
    d_optimizer = adam(discriminator.parameters(), lr=lr_d, betas=(cfg.beta1, 0.999))
    g_optimizer = adam(generator.parameters(), lr=lr_g, betas=(cfg.beta1, 0.999))
    criterion = nn.BCEWithLogitsLoss()
    loader = TensorLoader(train_x, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    test_noise = fixed_noise(64, cfg.dim_z, seed=cfg.seed, device=device)
    snapshots = EpochSamples(keep=10, dtype=torch.float16)  # 10 samples per epoch, half size in the checkpoint
    run = Run(folder, {**cfg.to_dict(), "lr_d_used": lr_d, "lr_g_used": lr_g,
                       **resolved(device, cfg.precision, data_source), "train_images": len(train_x)})
    objects = {"G": generator, "D": discriminator, "opt_G": g_optimizer, "opt_D": d_optimizer,
               "loader": loader, "epoch_samples": snapshots}
    start_epoch = run.resume(objects) if cfg.resume else 0

    t0 = time.time()
    train_main_loop(generator, discriminator, d_optimizer, g_optimizer, test_noise, cfg.epochs, cfg.d_freq,
                    loader, cfg.dim_z, criterion, device, run=run, start_epoch=start_epoch,
                    checkpoint_objects=objects, snapshots=snapshots,
                    images_path=(imgs_dir or folder) / "generated_images.png")
    train_seconds = time.time() - t0
    monitor_images(generator, test_noise, (imgs_dir or folder) / "generated_images.png")  # also after a finished --resume

    h = run.history
    loss_path = (imgs_dir or folder) / "loss_monitoring.png"
    monitor_losses(h.series("d_loss"), h.series("d_loss_fake"), h.series("g_loss"), h.series("g_loss_fake"),
                   cfg.batch_size, path=loss_path, num_epochs=len(h.epochs), dataset_size=len(train_x))
    save_epoch_samples(snapshots, run.path("samples_across_epochs.png"))
    if imgs_dir is not None:  # a copy of the skeleton's figures beside the run's other outputs
        for name in ("generated_images.png", "loss_monitoring.png"):
            run.path(name).write_bytes((imgs_dir / name).read_bytes())

    report = {}
    if evaluator is not None:
        generator.eval()
        with torch.no_grad():
            z = fixed_noise(cfg.n_eval, cfg.dim_z, seed=cfg.seed + 1, device=device)
            samples = torch.cat([generator(z[i:i + 1000]) for i in range(0, len(z), 1000)]).cpu()
        report = evaluator.report(samples, value_range=(-1, 1))
    last = h.epochs[-1]
    summary = {"final_d_loss": last["d_loss"], "final_g_loss": last.get("g_loss"),
               "mean_D_x": last["d_x"], "mean_D_G_z": last["d_g_z"], "epochs": len(h.epochs),
               "seconds_per_epoch": h.seconds_per_epoch(),
               "train_seconds_this_call": round(train_seconds, 1), "device": str(device), **report}
    run.write_metrics(summary)
    if report:
        print(f"[step1] {shown(folder)}: Frechet {report['frechet_distance']:.2f} (floor {report['frechet_floor_train_vs_test']:.2f}), "
              f"class entropy {report['class_entropy']:.3f} / {report['class_entropy_max']:.3f}")
    return {**summary, "noise_samples": snapshots.rows[-1].float(), "epoch_curves": h.epochs}


def resolve_ablations(spec: str) -> list[str]:
    if spec == "all":
        return list(ABLATIONS)
    names = []
    for raw in spec.split(","):
        name = ALIASES.get(raw.strip(), raw.strip())
        if name not in ABLATIONS:
            raise SystemExit(f"unknown ablation {raw!r}; choose from all, {', '.join([*ABLATIONS, *ALIASES])}")
        if name not in names:
            names.append(name)
    return names


def run_ablations(cfg: Step1Config, train_x, device, evaluator, data_source: str | None = None) -> Path:
    """Each named ablation in its own sub-folder, then a loss overlay, a sample panel and a table."""
    base = run_dir(COURSE, "step1", "ablations", cfg.out_dir, quick=cfg.quick)
    results = {}
    for name in resolve_ablations(cfg.ablation):
        description, changes = ABLATIONS[name]
        print(f"[step1] ablation {name}: {description}")
        sub = dataclasses.replace(cfg, epochs=cfg.ablation_epochs, **changes)
        results[name] = train_one(sub, base / name, train_x, device, evaluator, imgs_dir=None, data_source=data_source)

    def per_epoch(key):
        return {n: ([e["epoch"] for e in r["epoch_curves"]], [e.get(key, np.nan) for e in r["epoch_curves"]])
                for n, r in results.items()}

    plot_panels({"discriminator loss": per_epoch("d_loss"), "generator loss": per_epoch("g_loss"),
                 "mean D(x)": per_epoch("d_x"), "mean D(G(z))": per_epoch("d_g_z")},
                base / "ablation_losses.png", xlabel="epoch", ncols=2,
                ylabels={"discriminator loss": "BCE loss (epoch mean)", "generator loss": "BCE loss (epoch mean)",
                         "mean D(x)": "sigmoid(D(x))", "mean D(G(z))": "sigmoid(D(G(z)))"},
                title="Step 1 ablations: epoch-mean losses and discriminator outputs")
    save_grid(torch.cat([r["noise_samples"] for r in results.values()]), base / "ablation_samples.png",
              nrow=results[next(iter(results))]["noise_samples"].shape[0], row_labels=list(results),
              title="Step 1 ablations: samples from the same fixed noise after the last epoch",
              xlabel="fixed noise vector (same in every row)")
    rows = [{"ablation": n, "change": ABLATIONS[n][0], "epochs": r["epochs"],
             "final D loss": r["final_d_loss"], "final G loss": r["final_g_loss"],
             "mean D(x)": r["mean_D_x"], "mean D(G(z))": r["mean_D_G_z"],
             "Frechet (judge)": r.get("frechet_distance", ""), "Frechet floor": r.get("frechet_floor_train_vs_test", ""),
             "class entropy (nats, max 2.303)": r["class_entropy"] + 0.0 if "class_entropy" in r else "",
             "judge confidence": r.get("judge_confidence", ""),
             "s/epoch": r["seconds_per_epoch"]} for n, r in results.items()]
    write_table(rows, base / "ablation_table", title="EE 8520 HW2 Step 1 ablations (last-epoch means; "
                "Frechet distance on MNIST-judge features, lower is better)")
    print((base / "ablation_table.md").read_text())
    return base


def main(argv=None) -> None:
    cfg = parse_config(Step1Config, argv, description=__doc__.splitlines()[0])
    device = get_device(cfg.device)
    train = load_split("mnist", "train", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    # ToTensor + Normalize((0.5,), (0.5,)) as in the skeleton: pixels in [-1, 1], matching Tanh.
    train_x = images(train, scale="tanh", device=device).reshape(len(train), -1)
    evaluator = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root) if cfg.n_eval > 0 else None
    if cfg.ablation:
        base = run_ablations(cfg, train_x, device, evaluator, train.source)
        write_summary(base, ABLATION_HEADLINE)
        print(f"[step1] ablation figures and table in {shown(base)}")
        return
    folder = run_dir(COURSE, "step1", "gan", cfg.out_dir, quick=cfg.quick)
    imgs = skeleton_imgs_dir(COURSE_DIR, folder, cfg)
    train_one(cfg, folder, train_x, device, evaluator, imgs, train.source)
    write_summary(folder, HEADLINE)
    print(f"[step1] figures in {shown(imgs)} and {shown(folder)}")


if __name__ == "__main__":
    run_main(main)
