"""CSC 8851 HW2: class-conditional WGAN-GP on MNIST 32x32 with a projection critic and an EMA generator.

Script and module. ``python wgan_gp.py`` trains with the handout's full recipe (Part 2) and writes
every figure of Parts 2-4 plus a measured quality table. The models, losses and samplers are in
``wgan_gp_model.py``; here: the run (flags, data, one training step of each network, checkpoints),
the figures and the quality evaluation. Three speed settings apply from outside the models, each
with a flag that turns it off: bf16 autocast where the hardware has it (``--precision``), the
critic's LeakyReLU of ``fast_critic.py`` (``--no-fast-leaky-relu``) and channels-last memory on a
CPU (``--no-channels-last``).

Spec: the CSC 8851 Homework 2 handout (Parts 1-4). Papers: see ``wgan_gp_model.py``.

Data: MNIST 28x28 is *padded* with a 2-pixel background border to 32x32 (torchvision's
``Pad(2)``), not resized: digits keep their size and stroke width, no interpolation blur, and the
judge that measures quality sees the exact 28x28 centre back. ``--resize`` switches to bilinear.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common import data as D
from common.cli import BaseConfig, parse_config, run_main
from common.loop import train_epochs
from common.metrics import Evaluator
from common.paths import run_dir, shown
from common.plotting import plot_bars, plot_panels, save_grid
from common.summary import Headline, write_summary
from common.tables import write_table
from common.training import (EpochSamples, Run, adam, autocast, ema_update, get_device, make_ema,
                             resolve_precision, resolved, seed_everything, slerp)
from fast_critic import use_fast_leaky_relu
from wgan_gp_model import (NUM_CLASSES, PSIS, Critic, Generator, class_labels, class_samples,
                           critic_objective, generate, generator_objective, interpolation_samples,
                           noise, truncation_samples)

COURSE, PART = "csc8851_hw2", "wgan_gp"
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = tuple(h for g in ("G_ema", "G") for h in (
    Headline(f"quality.{g}.class_accuracy", f"{g}: class accuracy", unit="%", better="higher"),
    Headline(f"quality.{g}.frechet_distance", f"{g}: Fréchet distance", floor=f"quality.{g}.frechet_floor_train_vs_test",
             fmt=".2f", better="lower")))


@dataclass
class Config(BaseConfig):
    """The script's flags: the shared ones, the handout's recipe (Part 2: Adam 2e-4, betas
    (0.0, 0.9), lambda_gp 10, n_critic 3, batch 128), the speed settings and the evaluation's sizes."""

    epochs: int = field(default=20, metadata={
        "help": "training epochs (handout: 10-20); 20 because G_ema (tau 0.999) needs them to pass G (README)"})
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    lambda_gp: float = field(default=10.0, metadata={"help": "gradient-penalty weight in eq. (1)"})
    n_critic: int = field(default=3, metadata={"help": "critic updates per generator update (handout: 2-3)"})
    z_dim: int = 64
    embed_dim: int = 32
    proj_dim: int = 128
    ema_decay: float = field(default=0.999, metadata={"help": "tau of the generator EMA"})
    channels_last: bool = field(default=True, metadata={"help": "channels-last memory format on a CPU (faster convs)"})
    fast_leaky_relu: bool = field(default=True, metadata={
        "help": "the critic's LeakyReLU of fast_critic.py: the same numbers, without the gradient penalty's "
                "convolution backward passes on zeros"})
    grid_cols: int = field(default=10, metadata={"help": "N of the final 10 x N class grid"})
    interp_steps: int = field(default=10, metadata={"help": "K of the 10 x K interpolation panel"})
    resize: bool = field(default=False, metadata={"help": "bilinear-resize 28->32 instead of padding"})
    slerp: bool = field(default=False, metadata={"help": "spherical instead of linear interpolation"})
    n_eval: int = field(default=10000, metadata={"help": "samples for the G vs G_ema quality table"})
    n_eval_psi: int = field(default=2000, metadata={"help": "samples per psi for the truncation trade-off"})
    n_eval_epoch: int = field(default=1000, metadata={"help": "G_ema samples judged after each epoch (0: off)"})
    name: str = field(default="default", metadata={"help": "run folder name under outputs/csc8851_hw2/wgan_gp/"})

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "batch_size": 64, "n_eval": 300, "n_eval_psi": 100,
                                    "n_eval_epoch": 100}


# --------------------------------------------------------------------------------------------
# Models and one training step of each (the speed settings are applied here, from outside)


def memory_format(cfg: Config, device: torch.device) -> torch.memory_format:
    """channels-last on a CPU (oneDNN's convolutions ran ~1.3x faster per training step there, see
    README), the default layout elsewhere or with ``--no-channels-last``."""
    return torch.channels_last if cfg.channels_last and device.type == "cpu" else torch.contiguous_format


def build(cfg: Config, device: torch.device) -> tuple[Generator, Generator, Critic]:
    """G, its frozen EMA copy (deepcopy, requires_grad=False) and D, on ``device`` in
    ``memory_format``; D with the fast LeakyReLU unless ``--no-fast-leaky-relu``."""
    fmt = memory_format(cfg, device)
    G = Generator(cfg.z_dim, cfg.embed_dim).to(device, memory_format=fmt)
    D_ = Critic(proj_dim=cfg.proj_dim).to(device, memory_format=fmt)
    if cfg.fast_leaky_relu:
        use_fast_leaky_relu(D_)
    return G, make_ema(G), D_


def fixed_latents(cfg: Config, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The latents and labels of every per-epoch grid: one z per column, shared by all ten rows."""
    z = noise(cfg.grid_cols, cfg.z_dim, cfg.seed + 1).repeat(NUM_CLASSES, 1)
    return z.to(device), class_labels(cfg.grid_cols).to(device)


def critic_step(G: Generator, Dc: Critic, opt_D, x: torch.Tensor, y: torch.Tensor, cfg: Config,
                device: torch.device, precision: str = "fp32") -> dict:
    """One critic update on eq. (1) (``critic_objective``, in ``precision``); returns its terms."""
    with autocast(device, precision):
        loss_C, terms = critic_objective(G, Dc, x, y, cfg.lambda_gp)
    opt_D.zero_grad(set_to_none=True)
    loss_C.backward()
    opt_D.step()
    return terms


def generator_step(G: Generator, G_ema: Generator, Dc: Critic, opt_G, y: torch.Tensor, cfg: Config,
                   device: torch.device, precision: str = "fp32") -> float:
    """One generator update on eq. (2), then theta_ema <- tau theta_ema + (1 - tau) theta; returns L_G."""
    with autocast(device, precision):
        loss_G = generator_objective(G, Dc, y)
    opt_G.zero_grad(set_to_none=True)
    loss_G.backward(inputs=list(G.parameters()))  # G's gradients only: D's weight gradients are not computed
    opt_G.step()
    ema_update(G, G_ema, cfg.ema_decay)
    return loss_G.item()


# --------------------------------------------------------------------------------------------
# Part 2: training


@dataclass
class Result:
    """What ``train`` returns: the models, the run (folder, history) and what was measured."""

    G: Generator
    G_ema: Generator
    D: Critic
    run: Run
    cfg: Config
    device: torch.device
    precision: str
    evaluator: Evaluator | None
    epoch_samples: EpochSamples
    seconds: float = 0.0  # training time of the whole run: the epochs' seconds over every --resume
    data_source: str = ""


def load_data(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """MNIST train split as (N, 1, 32, 32) floats in [-1, 1] on ``device`` (padded, or resized)."""
    split = D.load_split("mnist", "train", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    x = D.images(split, "tanh", size=32, resize=cfg.resize, device=device)
    return x.contiguous(memory_format=memory_format(cfg, device)), split.y.to(device), split.source


def train(cfg: Config, out_dir=None, log=print) -> Result:
    """Train G and D with eq. (1)-(2), n_critic critic steps per generator step, EMA after each G step.

    Each epoch writes ``samples_epoch_XX.png`` (G_ema, fixed latents), the checkpoint and history;
    with ``n_eval_epoch`` > 0 the judge scores G_ema's samples after every epoch."""
    seed_everything(cfg.seed)
    device = get_device(cfg.device)
    # auto -> bf16 where supported: with channels-last an epoch is 1.7x faster than fp32 on our CPU,
    # and a full 20-epoch bf16 run matched the fp32 run from the same seed (README).
    precision = resolve_precision(cfg.precision, device)
    folder = run_dir(COURSE, PART, cfg.name, out_dir or cfg.out_dir, quick=cfg.quick)
    x_all, y_all, source = load_data(cfg, device)
    run = Run(folder, {**cfg.to_dict(), **resolved(device, precision, source), "n_train": len(x_all),
                       "preprocessing": "bilinear resize 28->32" if cfg.resize else "pad 28->32 with background (-1)"})
    G, G_ema, Dc = build(cfg, device)
    opt_G = adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_D = adam(Dc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    loader = D.TensorLoader(x_all, y_all, batch_size=cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed)
    epoch_samples = EpochSamples()
    objects = {"G": G, "G_ema": G_ema, "D": Dc, "opt_G": opt_G, "opt_D": opt_D, "loader": loader,
               "epoch_samples": epoch_samples}
    start = run.resume(objects) if cfg.resume else 0
    evaluator = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root) if cfg.n_eval_epoch else None
    z_fixed, y_fixed = fixed_latents(cfg, device)
    z_eval = noise(cfg.n_eval_epoch, cfg.z_dim, cfg.seed + 2)
    y_eval = torch.arange(cfg.n_eval_epoch) % NUM_CLASSES
    log(f"[wgan-gp] {len(x_all)} {source} MNIST images, {len(loader)} batches/epoch, precision {precision}, "
        f"device {device}, run folder {shown(folder)}")
    acc: dict[str, list[float]] = {}

    def step(batch, i):
        """A critic step on every batch; every n_critic-th batch also a generator step, which ends
        one iteration: its row holds the mean of that iteration's critic numbers."""
        x, y = batch
        if i == 0:
            acc.clear()  # critic steps left over from the last epoch end no iteration
        for k, v in critic_step(G, Dc, opt_D, x, y, cfg, device, precision).items():
            acc.setdefault(k, []).append(v)
        if (i + 1) % cfg.n_critic:
            return None
        loss_G = generator_step(G, G_ema, Dc, opt_G, y, cfg, device, precision)
        row = {k: sum(v) / len(v) for k, v in acc.items()}
        acc.clear()
        return {**row, "loss_G": loss_G, "wasserstein": row["d_real"] - row["d_fake"]}

    def end_of_epoch(ep):
        """The fixed-latent grid, the last iteration's numbers and (``--n-eval-epoch``) G_ema's quality."""
        epoch_samples.add(ep.number, generate(G_ema, z_fixed, y_fixed))
        save_grid(epoch_samples.rows[-1], run.path(f"samples_epoch_{ep.number:02d}.png"), nrow=cfg.grid_cols,
                  title=f"G_ema samples after epoch {ep.number} (fixed z, rows = labels)",
                  row_labels=[str(c) for c in range(NUM_CLASSES)], ylabel="label y")
        last = run.history.steps[-1] if run.history.steps else {}
        ep.row = {"epoch": ep.number, "seconds": ep.row["seconds"], "iterations": run.step,
                  **{k: last[k] for k in ("loss_C", "loss_G", "gp", "wasserstein") if k in last}}
        if evaluator is not None:
            rep = evaluator.report(generate(G_ema, z_eval, y_eval), y_eval, resized=cfg.resize)
            ep.row.update(ema_class_accuracy=rep["class_accuracy"], ema_frechet=rep["frechet_distance"])

    train_epochs(step, loader, cfg.epochs, run=run, objects=objects, start=start, models=(G, Dc),
                 guard=("loss_C", "loss_G"), on_epoch=[end_of_epoch], label="wgan-gp")
    return Result(G, G_ema, Dc, run, cfg, device, precision, evaluator, epoch_samples,
                  seconds=run.history.training_seconds(), data_source=source)


# --------------------------------------------------------------------------------------------
# Figures (Part 2: curves and per-epoch samples; Part 3: class grid; Part 4: interpolation, truncation)


CURVES = ("d_real", "d_fake", "gp", "loss_C", "loss_G", "wasserstein")


def plot_training_curves(s: dict[str, list[float]], path, window: int = 25) -> Path:
    """Fig. 1: E[D(x,y)], E[D(G(z,y),y)], GP, L_C and L_G per generator iteration (smoothed);
    ``s`` maps each name of ``CURVES`` to its values, one per generator iteration."""
    window = max(1, min(window, len(s["loss_G"]) // 5))
    smooth = f"moving average over {window} iterations" if window > 1 else "raw values"
    panels = {
        "critic scores": {"E[D(x, y)] (real)": s["d_real"], "E[D(G(z, y), y)] (fake)": s["d_fake"]},
        "gradient penalty": {"GP = E[(||grad D(x_hat, y)|| - 1)^2]": s["gp"]},
        "critic loss": {"L_C (eq. 1)": s["loss_C"], "E[D(x,y)] - E[D(G(z,y),y)]": s["wasserstein"]},
        "generator loss": {"L_G (eq. 2)": s["loss_G"]},
    }
    return plot_panels(panels, path, title=f"WGAN-GP training curves ({smooth})",
                       xlabel="generator iteration", window=window, ncols=2,
                       ylabels={"critic scores": "critic score", "gradient penalty": "GP",
                                "critic loss": "L_C", "generator loss": "L_G"})


def plot_epoch_rows(rows: list[torch.Tensor], path, cols: int) -> Path:
    """One row per epoch: G_ema's image of each label (the first fixed z), from the same latents."""
    picks = torch.cat([r.view(NUM_CLASSES, cols, *r.shape[1:])[:, 0] for r in rows])
    return save_grid(picks, path, nrow=NUM_CLASSES, title="G_ema samples from the same z after each epoch",
                     row_labels=[f"epoch {e + 1}" for e in range(len(rows))],
                     col_labels=[str(c) for c in range(NUM_CLASSES)], xlabel="label y")


def class_grid(G: Generator, path, n: int, seed: int, title: str) -> Path:
    """Fig. 2: a 10 x N grid, row c = G(z_j, c) for N random z_j shared by the rows."""
    return save_grid(class_samples(G, n, seed), path, nrow=n, title=title,
                     row_labels=[str(c) for c in range(NUM_CLASSES)], ylabel="label y")


def interpolation_grid(G: Generator, path, k: int, seed: int, spherical: bool = False) -> Path:
    """Fig. 3: for each class c, G(z_t, c) along z_t from z_0 to z_1 (two random endpoints), K steps."""
    imgs = interpolation_samples(G, k, seed, interpolate=slerp if spherical else torch.lerp)
    how = "spherical (slerp)" if spherical else "linear"
    return save_grid(imgs, path, nrow=k, title=f"G_ema latent interpolation, {how}, per class",
                     row_labels=[str(c) for c in range(NUM_CLASSES)],
                     col_labels=[f"{v:.2f}" for v in torch.linspace(0, 1, k).tolist()],
                     ylabel="label y", xlabel="t (z = z_0 -> z_1)")


def truncation_grid(G: Generator, path, seed: int, psis=PSIS) -> Path:
    """Fig. 4: row c, column psi: G(psi z_c, c), one z per class shared across psi."""
    return save_grid(truncation_samples(G, psis, seed), path, nrow=len(psis),
                     title="G_ema truncation sweep: z <- psi z",
                     row_labels=[str(c) for c in range(NUM_CLASSES)], col_labels=[f"{p:g}" for p in psis],
                     ylabel="label y", xlabel="psi")


# --------------------------------------------------------------------------------------------
# Measured quality


QUALITY_COLUMNS = ["generator", "class_accuracy", "frechet_distance", "frechet_floor_train_vs_test",
                   "judge_confidence", "class_entropy", "n_samples"]


def evaluate(res: Result, log=print) -> dict:
    """Judge class accuracy and Frechet distance of G and G_ema (balanced labels), then per psi."""
    cfg, run = res.cfg, res.run
    ev = res.evaluator or Evaluator("mnist", res.device, quick=cfg.quick, data_root=cfg.data_root)
    res.evaluator = ev
    models = {"G": res.G, "G_ema": res.G_ema}
    y = torch.arange(cfg.n_eval) % NUM_CLASSES
    z = noise(cfg.n_eval, cfg.z_dim, cfg.seed + 3)
    quality = {name: ev.report(generate(m, z, y), y, resized=cfg.resize) for name, m in models.items()}
    rows = [{"generator": name, **{k: r[k] for k in QUALITY_COLUMNS[1:]}} for name, r in quality.items()]
    write_table(rows, run.path("quality_table"), QUALITY_COLUMNS,
                title=f"Judge class accuracy and Frechet distance ({cfg.n_eval} samples, balanced labels)")
    plot_bars({str(c): quality["G_ema"]["class_accuracy_per_class"][c] for c in range(NUM_CLASSES)},
              run.path("class_accuracy_per_class.png"), title="G_ema: judge accuracy per requested label",
              ylabel="share classified as y", xlabel="label y")
    y = torch.arange(cfg.n_eval_psi) % NUM_CLASSES
    z = noise(cfg.n_eval_psi, cfg.z_dim, cfg.seed + 4)
    trunc, trows = {}, []
    for name, m in models.items():
        trunc[name] = {}
        for psi in PSIS:
            r = ev.report(generate(m, psi * z, y), y, resized=cfg.resize)
            trunc[name][f"{psi:g}"] = {k: r[k] for k in ("class_accuracy", "frechet_distance", "judge_confidence",
                                                         "class_entropy")}
            trows.append({"generator": name, "psi": psi, **trunc[name][f"{psi:g}"]})
    write_table(trows, run.path("truncation_table"), title=f"Truncation trade-off ({cfg.n_eval_psi} samples per psi)")
    series = lambda key: {n: ([float(p) for p in PSIS], [trunc[n][f"{p:g}"][key] for p in PSIS]) for n in models}  # noqa: E731
    floor = quality["G"]["frechet_floor_train_vs_test"]
    fd = series("frechet_distance")
    fd["real floor (train vs test)"] = ([float(p) for p in PSIS], [floor] * len(PSIS))
    plot_panels({"Frechet distance (judge features)": fd, "judge class accuracy": series("class_accuracy")},
                run.path("truncation_tradeoff.png"), title="Truncation trade-off: quality vs psi",
                xlabel="psi (z <- psi z)", ylabels={"Frechet distance (judge features)": "Frechet distance (lower is better)",
                                                    "judge class accuracy": "class accuracy"},
                logy=["Frechet distance (judge features)"])
    metrics = {"quality": quality, "truncation": trunc, "judge": ev.judge_info}
    log("[wgan-gp] quality: " + "; ".join(f"{n} class acc {q['class_accuracy']:.4f}, FD {q['frechet_distance']:.3g} "
                                          f"(floor {q['frechet_floor_train_vs_test']:.3g})" for n, q in quality.items()))
    return metrics


def figures(res: Result) -> dict[str, Path]:
    """Every figure of Parts 2-4 into the run folder; returns their paths by name."""
    cfg, run = res.cfg, res.run
    paths = {
        "training_curves": plot_training_curves({k: run.history.series(k) for k in CURVES},
                                                    run.path("training_curves.png")),
        "samples_per_epoch": plot_epoch_rows(res.epoch_samples.rows, run.path("samples_per_epoch.png"), cfg.grid_cols),
        "class_grid_ema": class_grid(res.G_ema, run.path("class_grid_ema.png"), cfg.grid_cols, cfg.seed + 5,
                                     "G_ema: conditional samples, rows = labels 0-9"),
        "class_grid_G": class_grid(res.G, run.path("class_grid_G.png"), cfg.grid_cols, cfg.seed + 5,
                                   "G (no EMA), same z: conditional samples, rows = labels 0-9"),
        "interpolations": interpolation_grid(res.G_ema, run.path("interpolations.png"), cfg.interp_steps,
                                             cfg.seed + 6, spherical=cfg.slerp),
        "truncation_sweep": truncation_grid(res.G_ema, run.path("truncation_sweep.png"), cfg.seed + 7),
    }
    if res.run.history.epochs and "ema_class_accuracy" in res.run.history.epochs[0]:
        ep = res.run.history.series("epoch", "epoch")
        paths["quality_per_epoch"] = plot_panels(
            {"judge class accuracy": {"G_ema": (ep, res.run.history.series("ema_class_accuracy", "epoch"))},
             "Frechet distance": {"G_ema": (ep, res.run.history.series("ema_frechet", "epoch"))}},
            run.path("quality_per_epoch.png"), title=f"G_ema quality after each epoch ({cfg.n_eval_epoch} samples)",
            xlabel="epoch", ylabels={"judge class accuracy": "class accuracy", "Frechet distance": "Frechet distance"})
    return paths


FIGURES = ("training_curves.png", "samples_per_epoch.png", "class_grid_ema.png", "class_grid_G.png",
           "interpolations.png", "truncation_sweep.png", "truncation_tradeoff.png", "class_accuracy_per_class.png",
           "quality_per_epoch.png")


def finish(res: Result, log=print, paths: dict | None = None) -> dict:
    """Figures (unless already drawn: ``paths``), quality evaluation and ``metrics.json`` for a trained run."""
    paths = paths or figures(res)
    metrics = evaluate(res, log)
    epochs = res.run.history.epochs
    metrics.update({
        "precision": res.precision, "device": str(res.device), "data_source": res.data_source,
        "epochs": res.cfg.epochs, "iterations": res.run.step,
        "train_seconds": round(res.seconds, 1),
        "seconds_per_epoch": round(res.run.history.seconds_per_epoch() or 0.0, 2),
        "final": {k: epochs[-1][k] for k in ("loss_C", "loss_G", "gp", "wasserstein") if epochs and k in epochs[-1]},
        "figures": sorted(p.name for p in res.run.dir.glob("*.png")),
    })
    res.run.write_metrics(metrics)
    log(f"[wgan-gp] wrote {len(metrics['figures'])} figures, tables and metrics.json to {shown(res.run.dir)}")
    return {**metrics, "paths": paths}


def main(argv=None) -> dict:
    cfg = parse_config(Config, argv, description=__doc__.splitlines()[0])
    res = train(cfg)
    out = finish(res)
    write_summary(res.run.dir, HEADLINE)
    return out


if __name__ == "__main__":
    run_main(main)
