"""Step 2: train a PixelCNN and a class-conditional PixelCNN on binarized MNIST.

Models in ``models/AR.py`` (van den Oord et al., ICML 2016 and NeurIPS 2016). Run from inside
``ee8520_hw2/`` with no arguments (``python hw2_step2_main.py``); ``--help`` lists the flags,
``--quick`` is the smoke-sized run.

Each model trains through the skeleton's ``train()`` with ``BCEWithLogitsLoss`` on
threshold-binarized pixels (the skeleton's ``binarize_image``), or with ``--binarize bernoulli`` on
a fresh seeded Bernoulli draw of every batch (dynamic binarization, the protocol of the PixelCNN
paper's 81.30 nats). The learning rate warms up linearly over the first half epoch, then follows a
cosine to zero. On a CPU with two or more cores the two models train at the same time in two
processes, one thread each (``--no-parallel``: one after the other).

Writes ``imgs/pixelcnn_generated.png`` (the skeleton's 8x8 grid) and, in the run folder
``outputs/ee8520_hw2/step2/<name>/``: one sub-folder per model (its checkpoint, history, test NLL,
samples), and for both the unconditional vs conditional samples, the per-digit grid, the loss
curves, the judge's per-digit accuracy, ``metrics.json`` (test NLL in nats per image and bits per
dimension under both binarizations) and ``pixelcnn_results.md``.
"""
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from common import data as D  # noqa: E402
from common.cli import BaseConfig, parse_config, run_main  # noqa: E402
from common.loop import train_epochs  # noqa: E402
from common.metrics import Evaluator, fixed_binarization, get_judge, nats_to_bits_per_dim  # noqa: E402
from common.paths import run_dir, shown, skeleton_imgs_dir  # noqa: E402
from common.plotting import grid_image, plot_bars, plot_panels, save_grid  # noqa: E402
from common.summary import Headline, write_summary  # noqa: E402
from common.tables import write_table  # noqa: E402
from common.training import (Run, adam, autocast, get_device, resolve_precision, resolved,  # noqa: E402
                             seed_everything, use_huge_pages, warmup_cosine)
from models.AR import ConditionalPixelCNN, PixelCNN, draw_uniforms, nll_nats_per_image, sample  # noqa: E402
from models.fast_sampling import sample_fast  # noqa: E402

use_huge_pages()  # at import, before any tensor: fewer page faults (common.training)
HERE = Path(__file__).resolve().parent
PIXELS = 28 * 28
MODELS = ("unconditional", "conditional")
EPOCH_TEST_IMAGES = 2000  # the per-epoch test NLL of the loss curves (the final one reads all 10,000)
# the headline numbers of the run's summary.json: keys of its metrics.json, labelled for a reader
HEADLINE = (
    Headline("conditional.test_nll_nats", "conditional PixelCNN: test NLL", unit="nats", fmt=".2f", better="lower"),
    Headline("conditional.class_accuracy", "conditional PixelCNN: class accuracy", unit="%", better="higher"),
    Headline("conditional.class_accuracy_worst_digit", "conditional PixelCNN: worst digit's class accuracy",
             unit="%", better="higher"),
    Headline("conditional.class_accuracy_per_class.*", "conditional PixelCNN: class accuracy of digit {}", unit="%",
             better="higher"),
    Headline("conditional.test_bits_per_dim", "conditional PixelCNN: test NLL", unit="bits/dim", fmt=".4f",
             better="lower"),
    Headline("conditional.test_nll_nats_bernoulli", "conditional PixelCNN: test NLL, Bernoulli-binarized",
             unit="nats", fmt=".2f", better="lower"),
    Headline("unconditional.test_nll_nats", "PixelCNN: test NLL", unit="nats", fmt=".2f", better="lower"),
    Headline("unconditional.test_bits_per_dim", "PixelCNN: test NLL", unit="bits/dim", fmt=".4f", better="lower"),
    Headline("unconditional.test_nll_nats_bernoulli", "PixelCNN: test NLL, Bernoulli-binarized", unit="nats",
             fmt=".2f", better="lower"),
    Headline("unconditional.frechet_distance", "PixelCNN: Fréchet distance",
             floor="unconditional.frechet_floor_train_vs_test", fmt=".2f", better="lower"))


@dataclass
class Step2Config(BaseConfig):
    epochs: int = dataclasses.field(default=7, metadata={"help": "epochs of each model"})
    batch_size: int = dataclasses.field(default=64, metadata={
        "help": "images per update (64: twice the updates of the skeleton's 128 for 6%% more time an epoch)"})
    lr: float = dataclasses.field(default=3e-3, metadata={"help": "peak Adam learning rate"})
    warmup_epochs: float = dataclasses.field(default=0.5, metadata={
        "help": "linear warm-up of the learning rate, in epochs; then a cosine to zero (0: no warm-up)"})
    models: str = dataclasses.field(default="both", metadata={
        "choices": ["both", *MODELS], "help": "which models to train (both: the handout's comparison)"})
    binarize: str = dataclasses.field(default="threshold", metadata={
        "choices": ["threshold", "bernoulli"],
        "help": "threshold: x > 0.5 (the skeleton); bernoulli: seeded dynamic binarization"})
    digit: int = dataclasses.field(default=7, metadata={"help": "digit the conditional model samples"})
    channels: int = dataclasses.field(default=32, metadata={"help": "feature maps of each gated stack"})
    n_layers: int = dataclasses.field(default=12, metadata={"help": "gated layers (the first 7x7, then --kernel)"})
    kernel: int = dataclasses.field(default=3, metadata={"help": "kernel size of the gated layers after the first"})
    compile: bool = dataclasses.field(default=True, metadata={
        "help": "train through torch.compile of the model on the CPU (same result up to rounding; "
                "--no-compile: the plain eager model)"})
    fast_sampling: bool = dataclasses.field(default=True, metadata={
        "help": "sample with cached activations (models/fast_sampling.py: the same samples as the "
                "plain raster loop of models/AR.py, which --no-fast-sampling runs)"})
    parallel: bool = dataclasses.field(default=True, metadata={
        "help": "on a CPU with 2+ cores, train the two models at once in two processes, one thread each"})
    eval_per_digit: int = dataclasses.field(default=100, metadata={
        "help": "conditional samples per digit for the judge (and 10x that unconditional)"})
    name: str = dataclasses.field(default="pixelcnn", metadata={"help": "run folder name"})

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
    conditional model also gets the labels. Returns the batch's NLL in nats per image."""
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
          *, scheduler=None, forward=None, precision="fp32", channels_last=False, run=None, objects=None, start=0,
          on_epoch=(), desc="PixelCNN"):
    """The skeleton's training loop: ``epochs`` passes of :func:`train_step` over ``dataloader``.
    Returns the mean training NLL of each epoch, nats per image.

    ``train_dataset`` and ``batch_size`` keep the skeleton's signature (the loader holds both).
    Keyword extras: a per-step ``scheduler``; ``forward``, the module that computes the logits
    (``torch.compile(model)``; the plain ``model`` if compiling fails here); bf16 ``precision`` and
    ``channels_last`` inputs; a ``run`` with its checkpoint ``objects``, the epoch to ``start`` from
    and ``on_epoch`` callbacks (the shared epoch loop: NaN guard, history, checkpoint every epoch).
    """
    fwd = [model if forward is None else forward]

    def step(batch, i):
        x, y = batch
        try:
            nll = train_step(fwd[0], optimizer, loss_fn, x, y, conditioning_flag, device, precision, channels_last)
        except Exception as exc:  # noqa: BLE001 - a compiler failure: the plain model is exact
            if fwd[0] is model:
                raise
            reason = (str(exc).strip().splitlines() or [""])[0][:160]
            print(f"note: torch.compile does not work here ({type(exc).__name__}: {reason}); "
                  "training the plain model", file=sys.stderr)
            fwd[0] = model
            nll = train_step(model, optimizer, loss_fn, x, y, conditioning_flag, device, precision, channels_last)
        if scheduler is not None:
            scheduler.step()
        return {"nll_nats": nll}

    done = train_epochs(step, dataloader, epochs, run=run, objects=objects, start=start, models=(model,),
                        guard=["nll_nats"], on_epoch=on_epoch, label=desc, desc=desc,
                        line=lambda ep: f"[{desc}] epoch {ep.number}/{ep.epochs}: NLL train "
                                        f"{ep.means()['nll_nats']:.2f}" + (f" / test {ep.row['test_nll']:.2f}"
                                                                           if "test_nll" in ep.row else "")
                                        + f" nats ({ep.seconds:.0f} s)")
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


def build_models(cfg):
    """Both models, always in this order, so that one model alone gets the same initial weights."""
    torch.manual_seed(cfg.seed)
    return {"unconditional": PixelCNN(cfg.channels, cfg.n_layers, cfg.kernel),
            "conditional": ConditionalPixelCNN(10, cfg.channels, cfg.n_layers, cfg.kernel)}


def train_model(cfg, name, folder, device, precision):
    """Train one model in its own run folder (checkpoint every epoch, ``--resume``), then score it:
    test NLL in fp32 under both binarizations, samples from fixed uniforms, and the judge's
    verdict on them. Writes the folder's ``metrics.json`` and ``samples.pt``."""
    conditional = name == "conditional"
    channels_last = device.type == "cpu"  # oneDNN's faster layout on the CPU
    train_split = D.load_split("mnist", "train", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    test_split = D.load_split("mnist", "test", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    x_train = D.images(train_split, scale="unit", device=device)
    x_test = D.images(test_split, scale="unit", device=device)
    y_train, y_test = D.one_hot(train_split.y).to(device), D.one_hot(test_split.y).to(device)
    if cfg.binarize == "threshold":
        transform, x_train, x_test_bin = None, binarize_image(x_train), binarize_image(x_test)
    else:
        transform, x_test_bin = DynamicBinarizer(cfg.seed), fixed_binarization(x_test)
    # whole batches only: a last, smaller batch would make torch.compile build a second graph (about a
    # minute); the images it leaves out change with each epoch's shuffle
    loader = D.TensorLoader(x_train, y_train, batch_size=cfg.batch_size, seed=cfg.seed, transform=transform,
                            drop_last=True)

    model = build_models(cfg)[name].to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = adam(model.parameters(), lr=cfg.lr)
    steps = len(loader)
    scheduler = warmup_cosine(optimizer, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    compiled = cfg.compile and device.type == "cpu"
    run = Run(folder, {**cfg.to_dict(), **resolved(device, precision, train_split.source), "model": name,
                       "channels_last": channels_last, "compiled": compiled})
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "loader": loader,
               **({"binarizer": transform} if transform is not None else {})}
    start = run.resume(objects) if cfg.resume else 0
    if compiled:  # a CPU-only PyTorch logs "No CUDA runtime is found" when the compiler loads
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    forward = torch.compile(model) if compiled else model

    def test_set(ep):  # the curve's test NLL: the first EPOCH_TEST_IMAGES test images, in the training precision
        ep.row["train_nll"] = ep.row.pop("nll_nats")
        ep.row["test_nll"] = test_nll(forward, x_test_bin[:EPOCH_TEST_IMAGES], y_test[:EPOCH_TEST_IMAGES],
                                      conditional, device, precision, channels_last=channels_last)

    train(loader, model, optimizer, cfg.epochs, train_split, nn.BCEWithLogitsLoss(), cfg.batch_size, conditional,
          device, scheduler=scheduler, forward=forward, precision=precision, channels_last=channels_last, run=run,
          objects=objects, start=start, on_epoch=[test_set], desc=name)

    # Test NLL of the final model on the whole test set in fp32, under both protocols: the skeleton's
    # threshold and one fixed Bernoulli draw (the dynamically binarized MNIST of the PixelCNN papers)
    m = {"n_params": sum(p.numel() for p in model.parameters()), "epochs": cfg.epochs,
         "epoch_test_images": min(EPOCH_TEST_IMAGES, len(x_test)),
         "train_seconds": round(run.history.training_seconds(), 1)}
    for protocol, x_bin in {"threshold": binarize_image(x_test), "bernoulli": fixed_binarization(x_test)}.items():
        nll = test_nll(forward, x_bin, y_test, conditional, device, "fp32", channels_last=channels_last)
        m[f"test_nll_nats_{protocol}"], m[f"test_bits_per_dim_{protocol}"] = nll, nats_to_bits_per_dim(nll)
    m["test_nll_nats"], m["test_bits_per_dim"] = m[f"test_nll_nats_{cfg.binarize}"], m[f"test_bits_per_dim_{cfg.binarize}"]
    if run.history.epochs:
        m["train_nll_nats_last_epoch"] = run.history.epochs[-1]["train_nll"]

    # Samples from fixed uniforms, all in one batch: the 8x8 grid, the per-digit rows (each column
    # sharing its noise), the judge's set
    k = cfg.eval_per_digit
    draw = sample_fast if cfg.fast_sampling else sample
    t0 = time.perf_counter()
    if conditional:
        u = torch.cat([draw_uniforms(64, cfg.seed + 1), draw_uniforms(10, cfg.seed + 2).repeat(10, 1, 1, 1),
                       draw_uniforms(10 * k, cfg.seed + 3)]).to(device)
        y = torch.cat([torch.full((64,), cfg.digit), torch.arange(10).repeat_interleave(10),
                       torch.arange(10).repeat_interleave(k)])
        s = draw(model, u, D.one_hot(y).to(device))
        samples = {"grid": s[:64], "digits": s[64:164], "eval": s[164:]}
    else:
        s = draw(model, torch.cat([draw_uniforms(64, cfg.seed + 1), draw_uniforms(10 * k, cfg.seed + 4)]).to(device))
        samples = {"grid": s[:64], "eval": s[64:]}
    m["sampling_seconds"], m["sampled_images"] = round(time.perf_counter() - t0, 2), len(s)
    judge = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root)
    labels = torch.arange(10).repeat_interleave(k) if conditional else None
    m.update(judge.report(samples["eval"], labels, value_range=(0.0, 1.0)))
    if conditional:
        m["class_accuracy_worst_digit"] = min(m["class_accuracy_per_class"].values())
    torch.save({key: t.cpu() for key, t in samples.items()}, run.path("samples.pt"))
    run.write_metrics(m)
    print(f"[{name}] test NLL {m['test_nll_nats_threshold']:.2f} nats threshold-binarized, "
          f"{m['test_nll_nats_bernoulli']:.2f} Bernoulli-binarized (PixelCNN paper: 81.30)"
          + (f"; judge class accuracy {m['class_accuracy']:.3f}" if conditional else ""), flush=True)


def _train_in_parallel(cfg, out, names):
    """Each model in a process of its own, one thread each, both at once; a failure in either
    ends this run with that process's exit code (it has printed its own one-line error)."""
    code = ("import sys, json; from common.cli import run_main; import hw2_step2_main as m; "
            "run_main(lambda _: m._child(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg.to_dict()), name, str(out / name)],
                              cwd=HERE) for name in names]
    while any(p.poll() is None for p in procs):
        failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
        if failed:  # the other one would train on for nothing: stop it (its last checkpoint stays)
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait()
            raise SystemExit(failed[0])
        time.sleep(1)
    failed = [p.returncode for p in procs if p.returncode != 0]
    if failed:
        raise SystemExit(failed[0])


def _child(cfg_dict, name, folder):
    """One model of a parallel run (:func:`_train_in_parallel`), on one thread."""
    torch.set_num_threads(1)
    cfg = Step2Config(**cfg_dict)
    device = get_device(cfg.device)
    train_model(cfg, name, Path(folder), device, resolve_precision(cfg.precision, device))


def plot_side_by_side(left, right, path, titles, suptitle):
    """Two 8x8 sample grids next to each other (unconditional vs conditional)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, imgs, title in zip(axes, (left, right), titles):
        ax.imshow(grid_image(imgs, 8, (0.0, 1.0)), cmap="gray", interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(suptitle)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_figures(cfg, out, imgs, names):
    """The figures and tables of the whole run, from each model's folder."""
    metrics, samples, history = {}, {}, {}
    for name in names:
        folder = out / name
        metrics[name] = json.loads((folder / "metrics.json").read_text())
        samples[name] = torch.load(folder / "samples.pt")
        history[name] = [r for r in json.loads((folder / "history.json").read_text())["epochs"]]
    if "unconditional" in names:
        for folder in (imgs, out):
            save_grid(samples["unconditional"]["grid"], folder / "pixelcnn_generated.png", nrow=8,
                      value_range=(0, 1), title="PixelCNN: 64 unconditional samples")
    if "conditional" in names:
        s = samples["conditional"]
        save_grid(s["grid"], out / f"pixelcnn_conditional_digit{cfg.digit}.png", nrow=8, value_range=(0, 1),
                  title=f"Conditional PixelCNN: 64 samples of digit {cfg.digit}")
        save_grid(s["digits"], out / "pixelcnn_conditional_all_digits.png", nrow=10, value_range=(0, 1),
                  row_labels=[str(d) for d in range(10)], ylabel="class label y",
                  xlabel="sample (each column shares its noise)", title="Conditional PixelCNN: one row per digit")
        per_digit = metrics["conditional"]["class_accuracy_per_class"]
        plot_bars({str(d): per_digit[d] for d in sorted(per_digit)}, out / "pixelcnn_class_accuracy.png",
                  title=f"Judge accuracy of conditional PixelCNN samples ({cfg.eval_per_digit} per digit)",
                  ylabel="share classified as the requested digit", xlabel="requested digit")
    if len(names) == 2:
        plot_side_by_side(samples["unconditional"]["grid"], samples["conditional"]["grid"],
                          out / "pixelcnn_uncond_vs_cond.png", ("unconditional", f"conditional, y = {cfg.digit}"),
                          "PixelCNN samples from the same noise: unconditional vs class-conditional")
    plot_panels({f"{name} PixelCNN": {
        "train": ([r["epoch"] for r in history[name]], [r["train_nll"] for r in history[name]]),
        f"test ({metrics[name]['epoch_test_images']:,} images)": ([r["epoch"] for r in history[name]],
                                                                 [r["test_nll"] for r in history[name]])}
        for name in names},
        out / "pixelcnn_loss_curves.png", title=f"Negative log-likelihood per epoch ({cfg.binarize} binarization)",
        xlabel="epoch", ylabels={f"{n} PixelCNN": "NLL (nats / image)" for n in names})
    rows = [{"model": name,
             "NLL threshold (nats)": metrics[name]["test_nll_nats_threshold"],
             "bits/dim threshold": metrics[name]["test_bits_per_dim_threshold"],
             "NLL Bernoulli (nats)": metrics[name]["test_nll_nats_bernoulli"],
             "bits/dim Bernoulli": metrics[name]["test_bits_per_dim_bernoulli"],
             "Frechet (judge)": metrics[name]["frechet_distance"],
             "class accuracy": metrics[name].get("class_accuracy", ""),
             **{f"digit {d}": per.get(str(d), "") for d in range(10)}}
            for name in names for per in [metrics[name].get("class_accuracy_per_class", {})]]
    write_table(rows, out / "pixelcnn_results",
                title=f"PixelCNN trained on {cfg.binarize}-binarized MNIST: test NLL under both binarizations "
                      f"(PixelCNN paper, dynamically binarized: 81.30 nats)")
    return metrics


def main(argv=None):
    cfg = parse_config(Step2Config, argv, description=__doc__.splitlines()[0])
    if not 0 <= cfg.digit <= 9:
        raise SystemExit("--digit must be 0..9")
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs > cfg.epochs:
        raise SystemExit("--warmup-epochs must be between 0 and --epochs")
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.precision, device)
    out = run_dir("ee8520_hw2", "step2", cfg.name, cfg.out_dir, quick=cfg.quick)
    imgs = skeleton_imgs_dir(HERE, out, cfg)
    names = list(MODELS) if cfg.models == "both" else [cfg.models]
    run = Run(out, {**cfg.to_dict(), **resolved(device, precision)})
    print(f"[step2] {' and '.join(names)} PixelCNN, {cfg.epochs} epochs, {cfg.binarize} binarization, "
          f"precision {precision}, device {device}")
    t0 = time.perf_counter()
    get_judge("mnist", device, quick=cfg.quick, data_root=cfg.data_root)  # trained once here if not cached
    if (cfg.parallel and len(names) == 2 and device.type == "cpu" and cfg.threads != 1
            and (os.cpu_count() or 1) >= 2):
        print("[step2] training both models at once, in two processes of one thread each")
        _train_in_parallel(cfg, out, names)
    else:
        for name in names:
            train_model(cfg, name, out / name, device, precision)
    wall = time.perf_counter() - t0
    metrics = write_figures(cfg, out, imgs, names)
    summary = {"binarize": cfg.binarize, "precision": precision, "epochs": cfg.epochs, "quick": cfg.quick,
               "wall_seconds": round(wall, 1), **metrics}
    run.write_metrics(summary)
    write_summary(out, HEADLINE, train_seconds=wall)
    print(f"[step2] {wall / 60:.1f} min of training and evaluation; figures and metrics in {shown(out)}")


if __name__ == "__main__":
    run_main(main)
