"""Training utilities shared by every course: seeding, device, precision, fixed noise and latent
interpolation, EMA, gradient penalty, learning-rate schedules, history, checkpoints with resume,
the NaN guard and progress bars.

The optimizer steps stay in the course code, as the skeletons have them; this module only
provides the pieces around them (see ``Run``).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .paths import quick_folder, shown
from .summary import git_commit


class NonFiniteLoss(RuntimeError):
    """A loss or a weight became NaN, infinite or diverged; the message says where, which
    checkpoint was kept and what to change."""


class ConfigError(ValueError):
    """A bad flag value, an unavailable device, or a checkpoint that cannot be resumed; the
    message is one line for the user (``cli.run_main`` prints it and exits with code 2)."""


# A loss or a weight this large (in absolute value) counts as diverged, like NaN: the losses of
# these models stay below ~1e5 and their weights below ~1e2 while training works, whereas a
# learning rate far too high drives losses to 1e20-1e30 and, with Adam, moves each weight by about
# the learning rate per step, while everything stays finite (BCE on sigmoid outputs is bounded).
DIVERGED = 1e8
WEIGHTS_DIVERGED = 1e5


# --------------------------------------------------------------------------------------------
# Seeding, device, precision


def use_huge_pages() -> None:
    """Put large CPU tensors on transparent huge pages, for a script whose step is bound by fresh
    activations of tens of MB: PyTorch then advises every CPU buffer of 2 MB or more as
    MADV_HUGEPAGE (Linux only), and page faults fall about 10x. It helps where page faults cost
    much (a PixelCNN step: -5%, median of seven alternated pairs) and can hurt elsewhere (a
    conditional DCGAN step: +15%), so a script opts in. PyTorch reads
    THP_MEM_ALLOC_ENABLE once, at its first CPU tensor: call this at import, before any tensor
    exists. THP_MEM_ALLOC_ENABLE=0 in the environment wins."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fixed_noise(n: int, *shape: int, seed: int, device="cpu") -> torch.Tensor:
    """z ~ N(0, I) of shape (n, *shape) from its own seeded stream (the global one is untouched),
    drawn on the CPU so a seed gives the same z on every device: the noise of a run's sample
    grids and evaluations, made once."""
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).to(device)


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(1 - t) z0 + t z1, broadcast: ``t`` of shape (K, 1, ...) walks K steps."""
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sin((1-t) w)/sin(w) z0 + sin(t w)/sin(w) z1, w the angle between z0 and z1 along the last
    dimension (lerp where they are parallel), broadcast like ``lerp``. Spherical interpolation
    (White, "Sampling Generative Networks", arXiv:1609.04468) keeps the norm typical of a Gaussian
    sample along the path."""
    cos = (z0 * z1).sum(-1, keepdim=True) / (z0.norm(dim=-1, keepdim=True) * z1.norm(dim=-1, keepdim=True))
    w = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    s = torch.sin(w)
    out = (torch.sin((1 - t) * w) * z0 + torch.sin(t * w) * z1) / s
    return torch.where(s.abs() < 1e-6, lerp(z0, z1, t), out)


def check_device(name: str | None) -> None:
    """Raise :class:`ConfigError` unless ``name`` (``auto``, ``cpu``, ``cuda[:i]``, ``mps``) is a
    device this machine has."""
    if not name or name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: not supported here (use auto, cpu, cuda or mps)")


def get_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA, then MPS, then CPU. Also sets CPU speed switches."""
    if name and name != "auto":
        check_device(name)
        device = torch.device(name)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    # Denormal floats make CPU GAN steps up to ~3x slower (measured side by side).
    torch.set_flush_denormal(True)
    return device


def cpu_supports_bf16() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 autocast where the hardware has it (CUDA with bf16, a CPU with bf16
    instructions), else fp32.

    Measured for the models trained in this mode: bf16 keeps PixelCNN test NLL within 0.3 nats of
    fp32; full runs in bf16 matched or beat fp32 from the same seed for a DCGAN, a WGAN-GP and an
    MLP GAN (two seeds); and it is 1.5-3x faster on a bf16 CPU. An explicit
    ``bf16`` on a CPU without bf16 instructions (AVX2 only) is kept but warned about: it is
    emulated there, hundreds of times slower than fp32 for a matmul.
    """
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        print("warning: --precision bf16 on a CPU without bf16 instructions: bf16 is emulated, far slower "
              "than fp32 (--precision auto picks fp32 here)", file=sys.stderr)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"


def resolved(device: torch.device, precision: str, data_source: str | None = None) -> dict:
    """The resolved device, precision and data source under the one set of names every
    ``config.json`` uses (``Run.advice`` reads ``precision_resolved``)."""
    out = {"device_resolved": str(device), "precision_resolved": precision}
    return {**out, "data_source": data_source} if data_source is not None else out


def autocast(device: torch.device, precision: str):
    """A context that runs the block in bf16 autocast when ``precision == 'bf16'``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def adam(params, lr: float, **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with its fused kernel where PyTorch has one (CPU, CUDA): the same update
    in one pass over the parameters instead of a dozen per-tensor ops (about 10-15% of an MLP GAN
    step on a 2-core CPU). Elsewhere (MPS, ...) the default implementation."""
    params = list(params)
    first = params[0]["params"][0] if isinstance(params[0], dict) else params[0]
    if first.device.type in ("cpu", "cuda"):
        kwargs.setdefault("fused", True)
    return torch.optim.Adam(params, lr=lr, **kwargs)


# --------------------------------------------------------------------------------------------
# EMA and gradient penalty


def make_ema(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen deep copy of ``model`` to be tracked by :func:`ema_update`."""
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(model: torch.nn.Module, ema_model: torch.nn.Module, decay: float = 0.999) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta for floating entries of the state
    dict; other entries (BatchNorm's integer counter) are copied. Call after each G step."""
    msd = model.state_dict()
    for key, e in ema_model.state_dict().items():
        m = msd[key]
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
        else:
            e.copy_(m)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *cond) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_xhat D(xhat, *cond)||_2 - 1)^2].

    xhat = eps * real + (1 - eps) * fake with eps ~ U(0, 1) per sample; the gradient keeps its
    graph (``create_graph=True``) so the penalty trains the critic; the norm is per sample.
    """
    b = real.shape[0]
    eps = torch.rand(b, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(x_hat, *cond)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return ((grad.reshape(b, -1).norm(2, dim=1) - 1.0) ** 2).mean()


# --------------------------------------------------------------------------------------------
# Learning-rate schedules (built from torch.optim.lr_scheduler)


def step_decay(optimizer, step_size: int, gamma: float = 0.1):
    """lr x gamma every ``step_size`` scheduler steps."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def epoch_decay(optimizer, decay_epochs, gamma: float = 0.1):
    """lr x ``gamma`` from each of the 1-based ``decay_epochs`` on (``[11, 16]``: epochs 1-10 at lr,
    11-15 at lr / 10, 16 on at lr / 100), for a scheduler stepped once at the end of every epoch
    (:func:`step_schedulers`). Epoch 1 or less is ignored: the run starts at lr."""
    milestones = sorted(e - 1 for e in decay_epochs if e >= 2)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def step_schedulers(optimizer, scheds):
    """An end-of-epoch callback of ``common.loop.train_epochs``: log the epoch's learning rate (of
    ``optimizer``'s first group) as ``lr``, then step each scheduler."""
    def on_epoch(ep):
        ep.row["lr"] = optimizer.param_groups[0]["lr"]
        for sched in scheds:
            sched.step()
    return on_epoch


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, start_factor: float = 0.01, eta_min: float = 0.0):
    """Linear warmup from ``start_factor * lr`` to ``lr`` over ``warmup_steps``, then cosine to ``eta_min``."""
    warmup_steps = max(1, min(warmup_steps, total_steps - 1))
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=start_factor, total_iters=warmup_steps)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cos], milestones=[warmup_steps])


# --------------------------------------------------------------------------------------------
# History


class History:
    """Per-step and per-epoch metrics; written as ``history.csv``, ``epochs.csv`` and ``history.json``."""

    def __init__(self):
        self.steps: list[dict] = []
        self.epochs: list[dict] = []

    def log_step(self, **metrics) -> None:
        self.steps.append({k: _num(v) for k, v in metrics.items()})

    def log_epoch(self, **metrics) -> None:
        self.epochs.append({k: _num(v) for k, v in metrics.items()})

    def series(self, key: str, per: str = "step") -> list[float]:
        rows = self.steps if per == "step" else self.epochs
        return [r[key] for r in rows if key in r]

    def training_seconds(self) -> float:
        """The epochs' ``seconds`` summed: the training time of the whole run, every ``--resume`` included."""
        return float(sum(self.series("seconds", per="epoch")))

    def seconds_per_epoch(self) -> float | None:
        """Mean of the epochs' ``seconds`` (None before the first epoch)."""
        seconds = self.series("seconds", per="epoch")
        return self.training_seconds() / len(seconds) if seconds else None

    def state_dict(self) -> dict:
        return {"steps": self.steps, "epochs": self.epochs}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.epochs = list(state["steps"]), list(state["epochs"])

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        for name, rows in (("history.csv", self.steps), ("epochs.csv", self.epochs)):
            if rows:
                keys = list(dict.fromkeys(k for r in rows for k in r))
                with open(folder / name, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=keys)
                    writer.writeheader()
                    writer.writerows(rows)
        write_json(folder / "history.json", self.state_dict())


def _num(v):
    return v.item() if isinstance(v, torch.Tensor) else v


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


class EpochSamples:
    """What a run keeps across epochs for its figures over training: fixed-noise samples keyed by
    epoch (``add``) and optional rows of per-epoch values such as evaluations (``record``). It
    checkpoints with the models (put it among the run's objects), so a resumed run still draws
    its samples-across-epochs figures with every row and its curves with every point.

    ``keep`` stores only the first ``keep`` samples of each row and ``dtype`` casts them (float16
    halves the checkpoint); rows are stored on the CPU."""

    def __init__(self, keep: int | None = None, dtype: torch.dtype | None = None):
        self.keep, self.dtype = keep, dtype
        self.epochs: list = []
        self.rows: list[torch.Tensor] = []
        self.values: list[dict] = []

    def add(self, epoch, samples: torch.Tensor) -> None:
        """The samples after ``epoch`` (0: before training)."""
        samples = samples[:self.keep].detach().cpu()
        self.epochs.append(epoch)
        self.rows.append(samples if self.dtype is None else samples.to(self.dtype))

    def by_epoch(self) -> dict:
        return dict(zip(self.epochs, self.rows))

    def record(self, **values) -> None:
        """One row of per-epoch values (an ``epoch`` key among them)."""
        self.values.append(values)

    def series(self, key: str) -> tuple[list, list]:
        """(epochs, values) of ``key`` over the recorded rows that have it."""
        rows = [v for v in self.values if key in v]
        return [v["epoch"] for v in rows], [v[key] for v in rows]

    def state_dict(self) -> dict:
        return {"epochs": self.epochs, "rows": self.rows, "values": self.values}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.rows, self.values = list(state["epochs"]), list(state["rows"]), list(state["values"])


# --------------------------------------------------------------------------------------------
# Checkpoints


@contextlib.contextmanager
def isolated_rng():
    """Run the block without touching the global random streams (Python, NumPy, PyTorch CPU and
    CUDA): whatever it draws (a judge's weight init or training) is undone afterwards. Work that
    is not part of training (evaluation) runs inside it, so a resumed run draws exactly the
    numbers an uninterrupted one draws, wherever the evaluator is built."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, objects: dict, **extra) -> None:
    """Save the state dicts of ``objects`` (models, optimizers, schedulers, loaders, history)
    plus ``extra`` (epoch, step, config) and the RNG state, atomically."""
    path = Path(path)
    _save_atomic(path, {"state": {k: o.state_dict() for k, o in objects.items() if o is not None},
                        "rng": rng_state(), **extra})


def _save_atomic(path: Path, obj) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: Path, map_location="cpu") -> dict:
    """``torch.load`` a checkpoint written by :func:`save_checkpoint`; an unreadable (truncated,
    corrupt) or foreign file raises :class:`ConfigError` naming it."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and OS errors all mean the same here
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise ConfigError(f"{shown(path)} cannot be read (truncated or corrupt: {detail}); delete it, "
                          f"or run without --resume to start over") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state"), dict) or "rng" not in ckpt:
        raise ConfigError(f"{shown(path)} is not a checkpoint of this project (no model state and RNG state in it)")
    return ckpt


def load_checkpoint(path: Path, objects: dict, map_location="cpu", restore_rng: bool = True) -> dict:
    """Load what :func:`save_checkpoint` wrote into ``objects``; returns the whole checkpoint."""
    ckpt = read_checkpoint(path, map_location)
    for k, o in objects.items():
        if o is not None and k in ckpt["state"]:
            o.load_state_dict(ckpt["state"][k])
    if restore_rng:
        set_rng_state(ckpt["rng"])
    return ckpt


def check_finite(where: str, checkpoint: Path | None = None, advice: str | None = None, **losses) -> None:
    """Raise :class:`NonFiniteLoss` if any loss is NaN, infinite or beyond :data:`DIVERGED`."""
    for name, v in losses.items():
        value = float(v)
        if not math.isfinite(value) or abs(value) > DIVERGED:
            shown_value = f"{value:.3g} (diverged)" if math.isfinite(value) else f"{value}"
            raise NonFiniteLoss(f"{name} became {shown_value} at {where}{_kept(checkpoint)}. "
                                f"{advice or 'Lower the learning rate, then --resume.'}")


def _kept(checkpoint: Path | None) -> str:
    return (f"; the last good checkpoint is kept at {checkpoint}" if checkpoint and Path(checkpoint).exists()
            else "; no checkpoint was written yet")


def check_weights(where: str, objects: dict, checkpoint: Path | None = None, advice: str | None = None) -> None:
    """Raise :class:`NonFiniteLoss` if a parameter of a module in ``objects`` is NaN, infinite or
    beyond :data:`WEIGHTS_DIVERGED` (one reduction per module: cheap once per epoch)."""
    for key, module in objects.items():
        if not isinstance(module, torch.nn.Module):
            continue
        params = [p.detach() for p in module.parameters()]
        if not params:
            continue
        peak = torch.stack([p.abs().max().float() for p in params if p.numel()]).max().item()
        if math.isfinite(peak) and peak <= WEIGHTS_DIVERGED:
            continue
        name = next((n for n, p in module.named_parameters()
                     if p.numel() and not (torch.isfinite(p).all() and p.abs().max() <= WEIGHTS_DIVERGED)), "?")
        state = "NaN or infinite" if not math.isfinite(peak) else f"as large as {peak:.3g} (diverged)"
        raise NonFiniteLoss(f"the weights of {key} ({name}) became {state} at {where}{_kept(checkpoint)}. "
                            f"{advice or 'Lower the learning rate, then --resume.'}")


def progress(iterable, desc: str = "", total: int | None = None, **kwargs):
    """A tqdm bar (``bar.set_postfix(loss=...)`` for live losses); silent when not a terminal."""
    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False, dynamic_ncols=True,
                file=sys.stderr, **kwargs)


# --------------------------------------------------------------------------------------------
# A run: folder, config, history, checkpoints, metrics


class Run:
    """Everything one training run writes, in ``outputs/<course>/<part>/<name>/``.

    ``config.json`` (the resolved config), ``history.csv``/``epochs.csv``/``history.json``,
    ``checkpoint.pt`` (each epoch, atomic), ``metrics.json`` and the figures.

        run = Run(folder, config)
        start = run.resume({"G": G, "D": D, "opt_G": opt_G, ...}) if config.resume else 0
        for epoch in range(start, config.epochs):
            ...; run.guard(epoch, d_loss=d_loss, g_loss=g_loss)
            run.checkpoint(epoch + 1, objects)

    A quick run (``config["quick"]``) never writes into a full run's folder under ``outputs/``:
    see :func:`common.paths.quick_folder`. With ``config["resume"]`` the checkpoint is read when
    the run is made (an unreadable one stops here, nothing written), and ``config.json`` is only
    rewritten once :meth:`resume` has loaded it into the models (or at the first checkpoint or
    metrics), so a checkpoint that does not fit leaves every file as it was.
    """

    def __init__(self, folder: Path, config: dict):
        self.config = dict(config)
        self.dir = quick_folder(Path(folder), bool(self.config.get("quick")), self.config.get("out_dir"))
        self.history = History()
        self.ckpt_path = self.dir / "checkpoint.pt"
        self.step = 0
        self._pending = read_checkpoint(self.ckpt_path) if self.config.get("resume") and self.ckpt_path.exists() else None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._config_written = False
        self._checkpointed = False
        git_commit()  # read now (it is cached), so the summary names the code as it was when the run started
        if not self.config.get("resume"):
            self._write_config()

    def _write_config(self) -> None:
        if not self._config_written:
            write_json(self.dir / "config.json", self.config)
            self._config_written = True

    def path(self, name: str) -> Path:
        return self.dir / name

    def advice(self) -> str:
        """What to change after a divergence, from this run's config: its learning-rate flags,
        ``--resume`` once a checkpoint exists, and ``--precision fp32`` only where it trains in bf16."""
        flags = [k for k, v in self.config.items() if (k == "lr" or k.startswith("lr_")) and not k.endswith("_used")
                 and isinstance(v, (int, float, type(None))) and not isinstance(v, bool)]
        lr = " / ".join("--" + k.replace("_", "-") for k in flags) or "the learning rate"
        fp32 = " or use --precision fp32" if self.config.get("precision_resolved") == "bf16" else ""
        if self._good_checkpoint():
            return f"Lower {lr}{fp32}, and add --resume to go on from that checkpoint with the new value."
        return f"Run again with a lower {lr}{fp32}."

    def _good_checkpoint(self) -> Path | None:
        """This run's checkpoint, once it resumed from or wrote one (an older run's file in the
        folder is not this run's last good state)."""
        return self.ckpt_path if self._checkpointed and self.ckpt_path.exists() else None

    def guard(self, epoch: int, **losses) -> None:
        """Stop the run (:class:`NonFiniteLoss`) if a loss is NaN, infinite or diverged; called every step."""
        values = [float(v) for v in losses.values()]
        if all(math.isfinite(v) and abs(v) <= DIVERGED for v in values):
            return  # the common case: no message to build, no file to look at
        check_finite(f"epoch {epoch + 1}, step {self.step}", self._good_checkpoint(), self.advice(), **losses)

    def checkpoint(self, epoch: int, objects: dict) -> None:
        """Check the weights, then write ``checkpoint.pt`` after ``epoch`` completed epochs and the
        history files. Diverged weights stop the run and keep the previous checkpoint."""
        check_weights(f"the end of epoch {epoch}", objects, self._good_checkpoint(), self.advice())
        self._write_config()
        save_checkpoint(self.ckpt_path, {**objects, "history": self.history},
                        epoch=epoch, step=self.step, config=self.config)
        self._checkpointed = True
        self.history.save(self.dir)

    def resume(self, objects: dict) -> int:
        """Load the checkpoint if there is one; returns the number of completed epochs.

        A checkpoint of another architecture raises :class:`ConfigError` naming the flags that
        differ. Learning-rate flags that differ from the checkpoint's take effect: the optimizers
        (and their schedulers) continue from the checkpoint with the new rate, and a step-decay
        scheduler (:func:`epoch_decay`) with this run's decay epochs, at the rate they give now."""
        if self._pending is None and self.ckpt_path.exists():
            self._pending = read_checkpoint(self.ckpt_path)
        if self._pending is None:
            print(f"[resume] no checkpoint in {shown(self.dir)}: starting from scratch")
            self._write_config()
            return 0
        ckpt, self._pending = self._pending, None
        before = {id(o): [dict(g) for g in o.param_groups] for o in objects.values()
                  if isinstance(o, torch.optim.Optimizer)}
        decays = {id(o): Counter(o.milestones) for o in objects.values()
                  if isinstance(o, torch.optim.lr_scheduler.MultiStepLR)}
        try:
            for k, o in {**objects, "history": self.history}.items():
                if o is not None and k in ckpt["state"]:
                    o.load_state_dict(ckpt["state"][k])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ConfigError(self._mismatch(ckpt, k, exc)) from None
        set_rng_state(ckpt["rng"])
        old = ckpt.get("config") or {}
        changed = {k: (old.get(k), v) for k, v in self.config.items()
                   if (k == "lr" or k.startswith("lr_")) and k in old and old[k] != v}
        if changed:
            _rescale_lrs(objects, before)
            for o in objects.values():
                if id(o) in decays and o.milestones != decays[id(o)]:
                    _redecay(o, decays[id(o)])
            print("[resume] learning rate from the command line: "
                  + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        self.step = ckpt["step"]
        self._checkpointed = True
        self._write_config()
        print(f"[resume] continuing after epoch {ckpt['epoch']} from {shown(self.ckpt_path)}")
        return ckpt["epoch"]

    def _mismatch(self, ckpt: dict, key: str, exc: Exception) -> str:
        old = ckpt.get("config") or {}
        ignore = {"resume", "epochs", "threads", "device", "out_dir", "data_root", "quick", "name", "device_resolved",
                  "precision_resolved", "data_source"}
        # flags of evaluation and figures never change a state dict: leave them out of the message
        cosmetic = ("eval", "show", "tsne", "snapshot", "probe", "psi", "grid", "interp")
        diff = [k for k, v in self.config.items() if k in old and old[k] != v and k not in ignore
                and not k.startswith("lr") and not any(c in k for c in cosmetic)]

        def flag(k, v):
            v = " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
            return f"--{k.replace('_', '-')} {v}"

        detail = ("; ".join(f"it was saved with {flag(k, old[k])}, this run has {flag(k, self.config[k])}"
                            for k in diff[:3])
                  or (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()[:160])
        return f"{shown(self.ckpt_path)} does not fit this run's {key} ({detail}); resume with the same flags, or start over without --resume"

    def write_metrics(self, metrics: dict) -> Path:
        self._write_config()
        path = self.dir / "metrics.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, {**old, **metrics})
        return path


def _redecay(sched, milestones: Counter) -> None:
    """After loading a step-decay scheduler whose config named other decay epochs: keep this
    run's ``milestones`` and set the rate to what they give at the checkpoint's epoch (one factor
    of gamma for each milestone passed that the checkpoint's schedule had not, or back)."""
    def passed(ms):
        return sum(n for m, n in ms.items() if m <= sched.last_epoch)

    factor = sched.gamma ** (passed(milestones) - passed(sched.milestones))
    sched.milestones = milestones
    for g in sched.optimizer.param_groups:
        g["lr"] *= factor


def _rescale_lrs(objects: dict, before: dict) -> None:
    """After loading optimizers whose config changed a learning rate: scale each group's current
    rate (and its schedulers' base rates) by new base rate / checkpoint's base rate, so a schedule
    continues where it was, at the new scale."""
    ratios = {}
    for o in objects.values():
        if isinstance(o, torch.optim.Optimizer) and id(o) in before:
            rs = []
            for g, b in zip(o.param_groups, before[id(o)]):
                new_base, old_base = b.get("initial_lr", b["lr"]), g.get("initial_lr", g["lr"])
                r = new_base / old_base if old_base else 1.0
                g["lr"] = g["lr"] * r if old_base else new_base
                if "initial_lr" in g:
                    g["initial_lr"] = new_base
                rs.append(r)
            ratios[id(o)] = rs

    def scale(s):
        for child in getattr(s, "_schedulers", []):
            scale(child)
        rs = ratios.get(id(getattr(s, "optimizer", None)))
        if rs and hasattr(s, "base_lrs"):
            s.base_lrs = [b * r for b, r in zip(s.base_lrs, rs)]

    for o in objects.values():
        if isinstance(o, torch.optim.lr_scheduler.LRScheduler) or hasattr(o, "_schedulers"):
            scale(o)
