"""ECE 685D HW5, Problem 1: a DCGAN on the MNIST train split (1.1) and a linear probe of its D (1.2).

The probe is a single linear layer on the discriminator's features.

Handout: the ECE 685D HW5 handout (Problem 1); models, losses and the probe: ``dcgan_mnist.py``.

1.1  Min-max loss (the generator uses the non-saturating form, see ``dcgan_mnist``), z ~ N(0, I),
     Adam(lr, betas=(0.5, 0.999)), images scaled to [-1, 1]. Writes 12 generated samples, the
     loss curves, samples across epochs (one row per epoch, fixed noise) and the judge-based
     quality report (Frechet distance with its train-vs-test floor, class entropy) to metrics.json.
1.2  D without its last linear layer maps a seeded, stratified 10% of the train split to
     features; a single ``nn.Linear`` is trained on them (standardized, L-BFGS, L2 chosen on a
     held-out part of that 10%) and tested on the test split. Baselines on the same images:
     raw pixels, and a randomly initialised D of the same architecture (D before training).

    python problem1_dcgan.py            # the full run (see README.md for its time)
    python problem1_dcgan.py --quick    # a few hundred images, one epoch, every output
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from common.cli import BaseConfig, parse_config, run_main
from common.data import TensorLoader, images, load_split, stratified_subset
from common.loop import train_epochs
from common.metrics import Evaluator
from common.paths import run_dir, shown
from common.plotting import plot_bars, plot_panels, save_grid
from common.summary import FRECHET, Headline, write_summary
from common.tables import write_table
from common.training import (EpochSamples, Run, adam, autocast, fixed_noise, get_device, resolve_precision, resolved,
                             seed_everything)
from dcgan_mnist import (Discriminator, Generator, extract_features, generate, linear_probe,
                         remove_last_layer, train_step)

COURSE, PART = "ece685d_hw5", "problem1"
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (FRECHET, Headline("probe.*.test_accuracy", "probe on {}: test accuracy", unit="%", better="higher"))


@dataclass
class Config(BaseConfig):
    epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1 (DCGAN recipe)"})
    nz: int = field(default=100, metadata={"help": "noise dimension"})
    g_loss: str = field(default="non_saturating", metadata={"choices": ["non_saturating", "minimax"],
                                                             "help": "generator loss"})
    # fp32 by default: bf16 autocast is 2x faster on a lightly loaded CPU, but its sample quality is not yet checked (README).
    precision: str = field(default="fp32", metadata={"choices": ["fp32", "bf16", "auto"]})
    probe_fraction: float = field(default=0.1, metadata={"help": "share of the train split for the probe"})
    probe_iters: int = field(default=200, metadata={"help": "L-BFGS iterations per linear-probe fit"})
    n_eval: int = field(default=10000, metadata={"help": "generated images for the quality report"})
    train_images: int = field(default=0, metadata={
        "help": "train the GAN on a stratified subset of this many train images (0: the whole split); "
                "for timing runs. The probe always uses --probe-fraction of the whole split"})
    name: str = field(default="dcgan", metadata={"help": "run folder name"})

    QUICK = {"epochs": 1, "batch_size": 64, "n_eval": 256, "probe_iters": 50}


def train_gan(cfg: Config, run: Run, x_train: torch.Tensor, device, precision: str):
    """1.1: the training loop; returns G, D, the untrained D (for the baseline) and epoch times."""
    seed_everything(cfg.seed)
    G, D = Generator(cfg.nz).to(device), Discriminator().to(device)
    D_random = Discriminator().to(device)
    D_random.load_state_dict(D.state_dict())  # the same initial weights as D: "D before training"
    opt_G = adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_D = adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    loader = TensorLoader(x_train, batch_size=cfg.batch_size, drop_last=True, seed=cfg.seed)
    fixed_z = fixed_noise(10, cfg.nz, seed=cfg.seed + 1, device=device)
    samples = EpochSamples()
    objects = {"G": G, "D": D, "D_random": D_random, "opt_G": opt_G, "opt_D": opt_D,
               "loader": loader, "epoch_samples": samples}
    start = run.resume(objects) if cfg.resume else 0
    amp = lambda: autocast(device, precision)  # noqa: E731

    def end_of_epoch(ep):
        samples.add(ep.number, generate(G, fixed_z))

    # log_every: a line every 100 iterations for logs (the bar is silent outside a terminal)
    train_epochs(lambda batch, i: train_step(G, D, batch[0], opt_G, opt_D, amp, cfg.g_loss), loader, cfg.epochs,
                 run=run, objects=objects, start=start, models=(G, D), on_epoch=[end_of_epoch], log_every=100,
                 label="problem 1")
    return G, D, D_random, samples


def gan_figures(cfg: Config, run: Run, G, samples: EpochSamples, device) -> torch.Tensor:
    """12 samples (3 x 4), loss curves, samples across epochs; returns the 12 samples."""
    z12 = fixed_noise(12, cfg.nz, seed=cfg.seed + 2, device=device)
    twelve = generate(G, z12)
    save_grid(twelve, run.path("generated_samples.png"), nrow=4,
              title=f"12 DCGAN samples after {cfg.epochs} epoch(s)")
    steps = run.history.series("step")
    window = max(1, min(50, len(steps) // 10))
    plot_panels({"losses": {"D loss": (steps, run.history.series("d_loss")),
                            "G loss (non-saturating)" if cfg.g_loss == "non_saturating" else "G loss (minimax)":
                                (steps, run.history.series("g_loss"))},
                 "discriminator outputs": {"D(x), real": (steps, run.history.series("d_real")),
                                           "D(G(z)), generated": (steps, run.history.series("d_fake"))}},
                run.path("loss_curves.png"), title="DCGAN training on MNIST (train split)",
                xlabel="iteration", ylabels={"losses": "loss (nats)", "discriminator outputs": "mean probability"},
                window=window)
    rows = samples.rows
    save_grid(torch.cat(rows), run.path("samples_over_epochs.png"), nrow=rows[0].shape[0],
              title="fixed noise, after each epoch", row_labels=[f"epoch {e}" for e in samples.epochs],
              xlabel="noise vector (fixed)")
    return twelve


def probe(cfg: Config, run: Run, D, D_random, train, test, device) -> dict:
    """1.2: the three linear probes on a stratified 10% of the train split; table and figure."""
    idx = stratified_subset(train.y, cfg.probe_fraction, seed=cfg.seed)
    x_tr, y_tr = images(train.subset(idx), "tanh", device=device), train.y[idx].to(device)
    x_te, y_te = images(test, "tanh", device=device), test.y.to(device)
    encoders = {"raw pixels": torch.nn.Flatten(),
                "random D (untrained, same architecture)": remove_last_layer(D_random),
                "trained D (DCGAN)": remove_last_layer(D)}
    results, rows = {}, []
    for name, enc in encoders.items():
        t0 = time.time()
        r = linear_probe(extract_features(enc, x_tr), y_tr, extract_features(enc, x_te), y_te, seed=cfg.seed,
                         max_iter=cfg.probe_iters)
        r["seconds"] = round(time.time() - t0, 1)
        results[name] = r
        rows.append({"features": name, "dim": r["feature_dim"], "train accuracy": r["train_accuracy"],
                     "test accuracy": r["test_accuracy"], "L2 (chosen on held-out train)": r["weight_decay"]})
        print(f"[probe] {name}: train {r['train_accuracy']:.4f}, test {r['test_accuracy']:.4f} "
              f"(dim {r['feature_dim']}, L2 {r['weight_decay']:g})")
    write_table(rows, run.path("probe_accuracy"),
                title=f"Linear probe on {len(idx)} train images ({cfg.probe_fraction:.0%} of the train split), "
                      f"tested on {len(y_te)} test images")
    plot_bars({k.split(" (")[0]: 100 * (1 - v["test_accuracy"]) for k, v in results.items()},
              run.path("probe_test_error.png"), title="Linear probe: test error (lower is better)",
              ylabel="test error (%)", xlabel="frozen features")
    return {"probe": results, "probe_n_train": len(idx)}


def main(argv=None) -> None:
    cfg = parse_config(Config, argv, description=__doc__.splitlines()[0])
    device = get_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    train = load_split("mnist", "train", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    test = load_split("mnist", "test", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    run = Run(run_dir(COURSE, PART, cfg.name, cfg.out_dir, quick=cfg.quick),
              {**cfg.to_dict(), **resolved(device, precision, train.source)})
    print(f"[problem 1] {len(train)} train / {len(test)} test images ({train.source}); device {device}, "
          f"{precision}; run folder {shown(run.dir)}")

    gan_train = train.subset(stratified_subset(train.y, cfg.train_images, seed=cfg.seed)) if cfg.train_images else train
    G, D, D_random, samples = train_gan(cfg, run, images(gan_train, "tanh", device=device), device, precision)
    gan_figures(cfg, run, G, samples, device)
    run.write_metrics(probe(cfg, run, D, D_random, train, test, device))
    z = fixed_noise(cfg.n_eval, cfg.nz, seed=cfg.seed + 3, device=device)
    report = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root).report(generate(G, z))
    seconds = run.history.series("seconds", per="epoch")
    run.write_metrics({**report, "epochs": len(seconds), "seconds_per_epoch": run.history.seconds_per_epoch(),
                       "data_source": train.source, "n_train_gan": len(gan_train), "precision": precision})
    print(f"[problem 1.1] Frechet distance {report['frechet_distance']:.2f} "
          f"(floor {report['frechet_floor_train_vs_test']:.2f}), class entropy {report['class_entropy']:.3f} "
          f"of {report['class_entropy_max']:.3f}")
    write_summary(run.dir, HEADLINE)
    print(f"[problem 1] outputs in {shown(run.dir)}")


if __name__ == "__main__":
    run_main(main)
