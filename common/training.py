"""Training utilities shared by every course: seeding, device, precision, EMA, gradient penalty,
learning-rate schedules, history, checkpoints with resume, the NaN guard and progress bars.

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
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; the message says where and which checkpoint was kept."""


# --------------------------------------------------------------------------------------------
# Seeding, device, precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str | None = None) -> torch.device:
    """``name`` if given, else CUDA, then MPS, then CPU. Also sets CPU speed switches."""
    if name and name != "auto":
        device = torch.device(name)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    # Denormal floats made CPU GAN steps ~3x slower on these machines (shared/notes/cpu-speed.md).
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

    The benchmarks and full runs back this for every model the courses train in this mode: bf16
    keeps PixelCNN test NLL within 0.3 nats of fp32 (``make bench``); full runs in bf16 matched or
    beat fp32 from the same seed for the RDFIA DCGAN, the CSC 8851 WGAN-GP and the Assignment 3
    MLP GAN (two seeds); and it is 1.5-3x faster on a bf16 CPU (course READMEs).
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"


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
    """Fixed-noise samples after every epoch (one tensor per epoch), a checkpointable object so a
    resumed run still draws its samples-across-epochs figure with every row."""

    def __init__(self):
        self.rows: list[torch.Tensor] = []

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])


# --------------------------------------------------------------------------------------------
# Checkpoints


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
    state = {"state": {k: o.state_dict() for k, o in objects.items() if o is not None},
             "rng": rng_state(), **extra}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, objects: dict, map_location="cpu", restore_rng: bool = True) -> dict:
    """Load what :func:`save_checkpoint` wrote into ``objects``; returns the whole checkpoint."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    for k, o in objects.items():
        if o is not None and k in ckpt["state"]:
            o.load_state_dict(ckpt["state"][k])
    if restore_rng:
        set_rng_state(ckpt["rng"])
    return ckpt


def check_finite(where: str, checkpoint: Path | None = None, **losses) -> None:
    """Raise :class:`NonFiniteLoss` if any loss is NaN or infinite."""
    for name, v in losses.items():
        value = float(v)
        if not math.isfinite(value):
            kept = (f"; the last good checkpoint is kept at {checkpoint}" if checkpoint and Path(checkpoint).exists()
                    else "; no checkpoint was written yet")
            raise NonFiniteLoss(f"{name} became {value} at {where}{kept}. Lower the learning rate or "
                                f"use --precision fp32, then --resume.")


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
            ...; run.guard(epoch, step, d_loss=d_loss, g_loss=g_loss)
            run.checkpoint(epoch + 1, objects)
    """

    def __init__(self, folder: Path, config: dict):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = dict(config)
        self.history = History()
        self.ckpt_path = self.dir / "checkpoint.pt"
        self.step = 0
        write_json(self.dir / "config.json", self.config)

    def path(self, name: str) -> Path:
        return self.dir / name

    def guard(self, epoch: int, **losses) -> None:
        check_finite(f"epoch {epoch + 1}, step {self.step}", self.ckpt_path, **losses)

    def checkpoint(self, epoch: int, objects: dict) -> None:
        """Write ``checkpoint.pt`` after ``epoch`` completed epochs, and the history files."""
        save_checkpoint(self.ckpt_path, {**objects, "history": self.history},
                        epoch=epoch, step=self.step, config=self.config)
        self.history.save(self.dir)

    def resume(self, objects: dict) -> int:
        """Load the checkpoint if there is one; returns the number of completed epochs."""
        if not self.ckpt_path.exists():
            print(f"[resume] no checkpoint in {self.dir}: starting from scratch")
            return 0
        ckpt = load_checkpoint(self.ckpt_path, {**objects, "history": self.history})
        self.step = ckpt["step"]
        print(f"[resume] continuing after epoch {ckpt['epoch']} from {self.ckpt_path}")
        return ckpt["epoch"]

    def write_metrics(self, metrics: dict) -> Path:
        path = self.dir / "metrics.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        write_json(path, {**old, **metrics})
        return path
