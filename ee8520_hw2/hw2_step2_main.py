"""EE 8520 HW2, Step 2: train a PixelCNN and a class-conditional PixelCNN on binarized MNIST.

Handout Step 2 (b)-(d); models in ``models/AR.py`` (van den Oord et al., ICML 2016 and NeurIPS
2016). Run from inside ``ee8520_hw2/`` with no arguments (``python hw2_step2_main.py``) or as
``make ee8520-step2``; ``--help`` lists the flags, ``--quick`` is the smoke-sized run.

Both models are trained side by side, each updated on every batch, with ``BCEWithLogitsLoss`` on
threshold-binarized pixels (the skeleton's ``binarize_image``) or, with ``--binarize bernoulli``,
on a fresh seeded Bernoulli draw of every batch (dynamic binarization, the protocol behind the
PixelCNN paper's 81.30 nats). Writes ``imgs/pixelcnn_generated.png`` (the skeleton's 8x8 grid; with
``--out-dir DIR`` it goes to ``DIR/imgs/``) and, in ``outputs/ee8520/step2/<name>/`` (or DIR), a copy of
it, the conditional samples, the per-digit grid, the unconditional
vs conditional comparison, the loss curves, the judge's per-digit accuracy, ``metrics.json`` (test
NLL in nats per image and bits per dimension for both models, on the threshold and on a fixed
Bernoulli binarization of the test set), tables and a checkpoint per epoch.
"""
from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from common import data as D  # noqa: E402
from common.cli import BaseConfig, parse_config, run_main  # noqa: E402
from common.metrics import Evaluator, fixed_binarization, nats_to_bits_per_dim  # noqa: E402
from common.paths import run_dir, shown, skeleton_imgs_dir  # noqa: E402
from common.plotting import grid_image, plot_bars, plot_panels, save_grid  # noqa: E402
from common.tables import write_table  # noqa: E402
from common.loop import train_epochs  # noqa: E402
from common.training import (ConfigError, Run, adam, autocast, epoch_decay, get_device, join_checkpoints,  # noqa: E402
                             resolve_precision, resolved, seed_everything, step_schedulers, use_huge_pages)
from models.AR import (ConditionalPixelCNN, PixelCNN, draw_uniforms, nll_nats_per_image,  # noqa: E402
                       resolve_gate_impl, sample_fast, set_conv_impl, set_gate_impl)

use_huge_pages()  # at import, before any tensor: fewer page faults, -5% a step here (common.training)
HERE = Path(__file__).resolve().parent
PIXELS = 28 * 28
# settings that may differ between the one-model runs that --join puts together
JOIN_IGNORE = {"models", "name", "join", "resume", "epochs", "threads", "device", "out_dir", "data_root",
               "digit", "eval_per_digit"}


@dataclass
class Step2Config(BaseConfig):
    epochs: int = dataclasses.field(default=20, metadata={"help": "epochs (each trains both models once)"})
    batch_size: int = 128
    lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam learning rate"})
    lr_decay_epochs: typing.List[int] = dataclasses.field(default_factory=list, metadata={
        "help": "1-based epochs from which the lr is divided by 10 (default: none, a constant lr)"})
    models: str = dataclasses.field(default="both", metadata={
        "choices": ["both", "unconditional", "conditional"],
        "help": "which models to train (both: the handout's comparison; one: half the time, for a study)"})
    binarize: str = dataclasses.field(default="threshold", metadata={
        "choices": ["threshold", "bernoulli"],
        "help": "threshold: x > 0.5 (the skeleton); bernoulli: seeded dynamic binarization"})
    digit: int = dataclasses.field(default=7, metadata={"help": "digit the conditional model samples"})
    channels: int = dataclasses.field(default=32, metadata={"help": "feature maps of each gated stack"})
    n_layers: int = dataclasses.field(default=12, metadata={"help": "gated layers (the first 7x7, then --kernel)"})
    kernel: int = dataclasses.field(default=3, metadata={"help": "kernel size of the gated layers after the first"})
    conv_impl: str = dataclasses.field(default="taps", metadata={
        "choices": ["taps", "masked"],
        "help": "masked convs over their causal taps only (faster, same result) or full kernel x mask"})
    gate_impl: str = dataclasses.field(default="auto", metadata={
        "choices": ["auto", "compiled", "eager"],
        "help": "the gated units in training: one torch.compile'd pass (same result up to rounding) or "
                "eager ops; auto = compiled on the CPU, where it was measured, eager elsewhere"})
    eval_per_digit: int = dataclasses.field(default=100, metadata={
        "help": "conditional samples per digit for the judge (and 10x that unconditional)"})
    name: str = dataclasses.field(default="pixelcnn", metadata={"help": "run folder name"})
    join: typing.List[str] = dataclasses.field(default_factory=list, metadata={
        "help": "two run folders, of --models unconditional and --models conditional runs trained side by side "
                "with the same flags: joined into this run (--name), which then goes on as --resume would"})

    QUICK = {"epochs": 1, "eval_per_digit": 10}


def binarize_image(t):
    """The skeleton's threshold binarization: pixels in [0, 1] -> {0, 1} by ``t > 0.5``."""
    return (t > 0.5).float()


class DynamicBinarizer:
    """A fresh Bernoulli(p = intensity) draw of every batch, from a seeded generator kept in the
    checkpoint (so a resumed run continues the same draws)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x):
        return D.binarize(x, "bernoulli", self.generator)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def _logits(model, x, y, conditioning_flag):
    return model(x, y) if conditioning_flag else model(x)


def train_step(model, optimizer, loss_fn, x, y, conditioning_flag, device, precision="fp32", channels_last=False):
    """One update of ``loss_fn(logits, x)`` (BCEWithLogitsLoss: the per-pixel NLL); the
    conditional model (``conditioning_flag``) also gets the labels (one-hot or integers). Returns
    the batch's NLL in nats per image (``y`` may be None for the unconditional model)."""
    x = x.to(device)
    y = y.to(device) if y is not None else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        logits = _logits(model, x, y, conditioning_flag)
    loss = loss_fn(logits.float(), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach() * PIXELS


def train(dataloader, model, optimizer, epochs, train_dataset, loss_fn, batch_size, conditioning_flag, device,
          *, precision="fp32", channels_last=False, desc="PixelCNN"):
    """The skeleton's training loop: ``epochs`` passes of :func:`train_step` over ``dataloader``
    (through the shared epoch loop, which guards every loss). Returns the mean training NLL of
    each epoch in nats per image.

    ``train_dataset`` and ``batch_size`` are kept for the skeleton's signature (the loader already
    holds both). Keyword extras: bf16 ``precision`` and ``channels_last`` inputs.
    """
    def step(batch, i):
        x, y = batch
        return {"nll_nats": train_step(model, optimizer, loss_fn, x, y, conditioning_flag, device,
                                       precision, channels_last)}

    done = train_epochs(step, dataloader, epochs, models=(model,), guard=["nll_nats"], label=desc, desc=desc)
    return [ep.means()["nll_nats"] for ep in done]


@torch.no_grad()
def test_nll(model, x_bin, y_onehot, conditioning_flag, device, precision="fp32", batch=500, channels_last=False):
    """Mean -log p(x) over a binarized set, nats per image (conditional: given the true label)."""
    model.eval()
    total = 0.0
    for i in range(0, len(x_bin), batch):
        x, y = x_bin[i:i + batch].to(device), y_onehot[i:i + batch].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = _logits(model, x, y, conditioning_flag)
        total += nll_nats_per_image(logits, x).sum().item()
    model.train()
    return total / len(x_bin)


def _check_join(cfg, out):
    """``--join A B``: two folders holding a one-model run's checkpoint each, and a run folder
    (``--name``) without one of its own, so that the join overwrites nothing."""
    if len(cfg.join) != 2 or cfg.models != "both":
        raise ConfigError("--join takes two run folders (one --models unconditional run, one --models conditional) "
                          "and makes a run of both models")
    for folder in cfg.join:
        if not (Path(folder) / "checkpoint.pt").is_file():
            raise ConfigError(f"--join {folder}: no checkpoint.pt there")
    if (out / "checkpoint.pt").exists():
        raise ConfigError(f"{shown(out)} already holds a checkpoint: give the joined run another --name, "
                          f"or --resume this one")


def plot_side_by_side(left, right, path, titles, suptitle):
    """Two 8x8 sample grids next to each other (unconditional vs conditional)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, imgs, name in zip(axes, (left, right), titles):
        ax.imshow(grid_image(imgs, 8, (0.0, 1.0)), cmap="gray", interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(suptitle)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv=None):
    cfg = parse_config(Step2Config, argv, description=__doc__.splitlines()[0])
    if not 0 <= cfg.digit <= 9:
        raise SystemExit("--digit must be 0..9")
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    # oneDNN's faster layout on the CPU in either precision (bench_training.py's "ours"; fp32 on an
    # AVX2-only CPU: 3.82 s a step against 4.11 s in NCHW)
    channels_last = device.type == "cpu"
    gate_impl = resolve_gate_impl(cfg.gate_impl, device)
    out = run_dir("ee8520", "step2", cfg.name, cfg.out_dir, quick=cfg.quick)
    if cfg.join:
        _check_join(cfg, out)
    imgs = skeleton_imgs_dir(HERE, out, cfg)

    # Data: [0, 1] floats; binarized once (threshold) or per batch (bernoulli); test set fixed
    train_split = D.load_split("mnist", "train", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    test_split = D.load_split("mnist", "test", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    x_train = D.images(train_split, scale="unit", device=device)
    x_test = D.images(test_split, scale="unit", device=device)
    y_train, y_test = D.one_hot(train_split.y).to(device), D.one_hot(test_split.y).to(device)
    if cfg.binarize == "threshold":
        transform = None
        x_train, x_test_bin = binarize_image(x_train), binarize_image(x_test)
    else:
        transform = DynamicBinarizer(cfg.seed)
        x_test_bin = fixed_binarization(x_test)
    loader = D.TensorLoader(x_train, y_train, batch_size=cfg.batch_size, seed=cfg.seed, transform=transform)
    run = Run(out, {**cfg.to_dict(), **resolved(device, precision, train_split.source), "channels_last": channels_last,
                    "gate_impl_resolved": gate_impl})
    print(f"[step2] {len(train_split)} train / {len(test_split)} test images ({train_split.source}), "
          f"{cfg.binarize} binarization, precision {precision}{' + channels_last' if channels_last else ''}, "
          f"conv {cfg.conv_impl}, gate {gate_impl}, device {device}")

    models = {"unconditional": PixelCNN(cfg.channels, cfg.n_layers, cfg.kernel),
              "conditional": ConditionalPixelCNN(10, cfg.channels, cfg.n_layers, cfg.kernel)}
    if cfg.models != "both":  # both are built either way: one model alone gets the same initial weights
        models = {cfg.models: models[cfg.models]}
    opts, scheds = {}, {}
    for name, model in models.items():
        set_gate_impl(set_conv_impl(model.to(device), cfg.conv_impl), gate_impl)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        opts[name] = adam(model.parameters(), lr=cfg.lr)
        scheds[name] = epoch_decay(opts[name], cfg.lr_decay_epochs)
    objects = {**models, **{f"opt_{k}": v for k, v in opts.items()}, **{f"sched_{k}": v for k, v in scheds.items()},
               "loader": loader, **({"binarizer": transform} if transform is not None else {})}
    if cfg.join:  # two one-model runs, trained side by side on two cores, become this run's checkpoint
        join_checkpoints([Path(p) / "checkpoint.pt" for p in cfg.join], run.ckpt_path, run.config,
                         ignore=JOIN_IGNORE, require=objects)
        start = run.resume(objects)
        run.history.save(run.dir)
        print(f"[step2] joined {' and '.join(str(shown(p)) for p in cfg.join)} into {shown(out)} after epoch {start}")
    else:
        start = run.resume(objects) if cfg.resume else 0
    loss_fn = nn.BCEWithLogitsLoss()  # mean over pixels = NLL / 784 (handout Step 2 (a))

    def step(batch, i):
        """One update of each model on the same batch (and the same binarization of it)."""
        x, y = batch
        return {f"{name}_nll": train_step(model, opts[name], loss_fn, x, y, name == "conditional", device,
                                          precision, channels_last) for name, model in models.items()}

    def test_set(ep):
        for name, model in models.items():
            ep.row[f"{name}_train_nll"] = ep.row.pop(f"{name}_nll")
            ep.row[f"{name}_test_nll"] = test_nll(model, x_test_bin, y_test, name == "conditional", device,
                                                  precision, channels_last=channels_last)

    def line(ep):
        r = ep.row
        return (f"[step2] epoch {ep.number}/{ep.epochs}: NLL nats/image train/test " + ", ".join(
            f"{name} {r[f'{name}_train_nll']:.2f}/{r[f'{name}_test_nll']:.2f}" for name in models))

    t0 = time.perf_counter()
    train_epochs(step, loader, cfg.epochs, run=run, objects=objects, start=start, models=list(models.values()),
                 on_epoch=[test_set, step_schedulers(next(iter(opts.values())), scheds.values())],
                 guard=[f"{name}_nll" for name in models], line=line, desc="epoch")
    train_seconds = time.perf_counter() - t0

    # Test NLL of the final models in fp32 under both protocols: the skeleton's threshold and one
    # fixed Bernoulli draw of the test set (the dynamically binarized MNIST of the PixelCNN papers)
    protocols = {"threshold": binarize_image(x_test), "bernoulli": fixed_binarization(x_test)}
    metrics = {"binarize": cfg.binarize, "precision": precision, "epochs": cfg.epochs,
               "train_seconds": round(run.history.training_seconds(), 1),
               "train_seconds_this_session": round(train_seconds, 1), "quick": cfg.quick,
               "data_source": train_split.source}
    wall = run.history.series("seconds_wall", per="epoch")  # a joined run's (--join): the slower process's
    if wall:
        metrics["train_seconds_wall"] = round(sum(wall), 1)
    for name, model in models.items():
        m = metrics[name] = {"n_params": sum(p.numel() for p in model.parameters())}
        for protocol, x_bin in protocols.items():
            nll = test_nll(model, x_bin, y_test, name == "conditional", device, "fp32")
            m[f"test_nll_nats_{protocol}"], m[f"test_bits_per_dim_{protocol}"] = nll, nats_to_bits_per_dim(nll)
        # the protocol it was trained with, under the plain keys
        m["test_nll_nats"], m["test_bits_per_dim"] = m[f"test_nll_nats_{cfg.binarize}"], m[f"test_bits_per_dim_{cfg.binarize}"]
        if run.history.epochs:
            m["train_nll_nats_last_epoch"] = run.history.epochs[-1][f"{name}_train_nll"]
        print(f"[step2] {name}: test NLL {m['test_nll_nats_threshold']:.2f} nats/image threshold-binarized, "
              f"{m['test_nll_nats_bernoulli']:.2f} Bernoulli-binarized (PixelCNN paper: 81.30)")

    # Samples from fixed pre-drawn uniforms, with the cached sampler; all samples of each model in
    # one batch: the 8x8 grids, the per-digit rows, the judge's set
    k = cfg.eval_per_digit
    u64 = draw_uniforms(64, cfg.seed + 1, device=device)
    eval_labels = torch.arange(10).repeat_interleave(k)
    samples, t1 = {}, time.perf_counter()
    if "unconditional" in models:
        s_all = sample_fast(models["unconditional"], torch.cat([u64, draw_uniforms(10 * k, cfg.seed + 4, device=device)]))
        samples["unconditional"] = {"grid": s_all[:64], "eval": s_all[64:], "count": len(s_all)}
        for folder in (imgs, out):
            save_grid(s_all[:64], folder / "pixelcnn_generated.png", nrow=8, value_range=(0, 1),
                      title="PixelCNN: 64 unconditional samples")
    if "conditional" in models:
        u_cols = draw_uniforms(10, cfg.seed + 2, device=device).repeat(10, 1, 1, 1)  # column c shares its noise
        y_all = torch.cat([torch.full((64,), cfg.digit), torch.arange(10).repeat_interleave(10), eval_labels])
        s_all = sample_fast(models["conditional"], torch.cat([u64, u_cols, draw_uniforms(10 * k, cfg.seed + 3,
                                                                                         device=device)]),
                            D.one_hot(y_all).to(device))
        samples["conditional"] = {"grid": s_all[:64], "eval": s_all[164:], "count": len(s_all)}
        save_grid(s_all[:64], out / f"pixelcnn_conditional_digit{cfg.digit}.png", nrow=8, value_range=(0, 1),
                  title=f"Conditional PixelCNN: 64 samples of digit {cfg.digit}")
        save_grid(s_all[64:164], out / "pixelcnn_conditional_all_digits.png", nrow=10, value_range=(0, 1),
                  row_labels=[str(d) for d in range(10)], ylabel="class label y",
                  xlabel="sample (each column shares its noise)",
                  title="Conditional PixelCNN: one row per digit")
    sample_seconds = time.perf_counter() - t1
    if len(samples) == 2:
        plot_side_by_side(samples["unconditional"]["grid"], samples["conditional"]["grid"],
                          out / "pixelcnn_uncond_vs_cond.png", ("unconditional", f"conditional, y = {cfg.digit}"),
                          "PixelCNN samples from the same noise: unconditional vs class-conditional")
    epochs_run = run.history.series("epoch", per="epoch")
    plot_panels({f"{name} PixelCNN": {
        "train": (epochs_run, run.history.series(f"{name}_train_nll", per="epoch")),
        "test": (epochs_run, run.history.series(f"{name}_test_nll", per="epoch"))} for name in models},
        out / "pixelcnn_loss_curves.png", title=f"Negative log-likelihood per epoch ({cfg.binarize} binarization)",
        xlabel="epoch", ylabels={f"{n} PixelCNN": "NLL (nats / image)" for n in models})

    # Judge: class accuracy of conditional samples per digit; quality of unconditional samples
    ev = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root)
    for name, s in samples.items():
        metrics[name].update(ev.report(s["eval"], eval_labels if name == "conditional" else None,
                                       value_range=(0.0, 1.0)))
    if "conditional" in models:
        per_digit = metrics["conditional"]["class_accuracy_per_class"]
        plot_bars({str(d): per_digit[d] for d in sorted(per_digit)}, out / "pixelcnn_class_accuracy.png",
                  title=f"Judge accuracy of conditional PixelCNN samples ({k} per digit)",
                  ylabel="share classified as the requested digit", xlabel="requested digit")
    metrics["sampling_seconds"] = round(sample_seconds, 2)
    metrics["sampled_images"] = sum(s["count"] for s in samples.values())
    rows = [{"model": name,
             "NLL threshold (nats)": metrics[name]["test_nll_nats_threshold"],
             "bits/dim threshold": metrics[name]["test_bits_per_dim_threshold"],
             "NLL Bernoulli (nats)": metrics[name]["test_nll_nats_bernoulli"],
             "bits/dim Bernoulli": metrics[name]["test_bits_per_dim_bernoulli"],
             "Frechet (judge)": metrics[name]["frechet_distance"],
             "class accuracy": metrics[name].get("class_accuracy", ""),
             **{f"digit {d}": per.get(d, per.get(str(d), "")) for d in range(10)}}
            for name in models for per in [metrics[name].get("class_accuracy_per_class", {})]]
    write_table(rows, out / "pixelcnn_results",
                title=f"PixelCNN trained on {cfg.binarize}-binarized MNIST: test NLL under both protocols "
                      f"(PixelCNN paper, dynamically binarized: 81.30 nats)")
    run.write_metrics(metrics)
    if "conditional" in models:
        print(f"[step2] conditional samples: judge class accuracy {metrics['conditional']['class_accuracy']:.3f}")
    grid = f"; skeleton grid {shown(imgs / 'pixelcnn_generated.png')}" if "unconditional" in models else ""
    print(f"[step2] figures and metrics in {shown(out)}{grid}")


if __name__ == "__main__":
    run_main(main)
