"""The epoch loop every training script runs: the course supplies the per-batch step, the loop
owns everything around it.

Shaped like minGPT's ``Trainer`` (a loop that knows nothing about the model, with callbacks) and
pytorch-generative's ``Trainer`` (the model's ``train_one_batch``): ``step(batch, i)`` makes the
course's update(s), with the optimizer steps where the skeleton has them, and returns the batch's
numbers as a dict (or ``None`` for a batch that ends no iteration, such as a critic-only step).
The loop puts the models in train mode, draws the progress bar, counts ``run.step``, stops on a
NaN, infinite or diverged loss (``Run.guard``), logs each step and epoch into ``run.history``
with the epoch's training time, calls the per-epoch callbacks (schedulers, sample grids,
evaluation), then checks the weights and writes the checkpoint (``Run.checkpoint``).

    start = run.resume(objects) if cfg.resume else 0
    train_epochs(lambda batch, i: train_step(G, D, batch), loader, cfg.epochs, run=run,
                 objects=objects, start=start, models=(G, D), on_epoch=[samples, evaluate])

Without a ``run`` (a skeleton function called on its own) it still guards the losses, and logs
and checkpoints nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from .training import Run, check_finite, progress


@dataclass
class Epoch:
    """One finished epoch, as the callbacks see it; ``row`` is what the history logs for it
    (the means of the step numbers and the seconds; a callback adds to it or replaces them)."""

    index: int  # 0-based: epoch ``index + 1`` of ``epochs``
    epochs: int
    seconds: float  # the batches' wall time, callbacks excluded
    sums: dict[str, float]
    counts: dict[str, int]
    row: dict = field(default_factory=dict)

    @property
    def number(self) -> int:
        return self.index + 1

    def means(self) -> dict[str, float]:
        """Each step number's mean over the steps that reported it."""
        return {k: self.sums[k] / self.counts[k] for k in self.sums}


def default_line(label: str) -> Callable[[Epoch], str]:
    """``[label] epoch 3/20: d_loss 1.234, g_loss 0.9876 (12.3 s)`` from the epoch's row."""
    def line(ep: Epoch) -> str:
        values = ", ".join(f"{k} {v:.4g}" for k, v in ep.row.items()
                           if isinstance(v, float) and k not in ("epoch", "seconds"))
        return f"[{label}] epoch {ep.number}/{ep.epochs}: {values} ({ep.seconds:.1f} s)"
    return line


def train_epochs(step: Callable[[object, int], dict | None], loader: Iterable, epochs: int, *,
                 run: Run | None = None, objects: dict | None = None, start: int = 0, models: Sequence = (),
                 on_epoch: Sequence[Callable[[Epoch], None]] = (), on_step: Sequence[Callable[[dict], None]] = (),
                 guard: Sequence[str] | None = None, log_steps: bool = True, desc: str = "epoch",
                 line: Callable[[Epoch], str] | None = None, label: str = "train", postfix_every: int = 10,
                 log_every: int = 0) -> list[Epoch]:
    """Epochs ``start .. epochs - 1`` of ``step`` over ``loader``; returns this call's epochs.

    Each iteration (a step that returns numbers): ``run.step`` += 1; the numbers named in
    ``guard`` (default: every key with ``loss`` in it) stop the run if NaN, infinite or diverged;
    the step row ``{step, epoch, **numbers}`` goes into the history (``log_steps``); then
    ``on_step(numbers)``. Each epoch: ``on_epoch(epoch)`` in order, the epoch row into the
    history, the checkpoint of ``objects`` (weights checked first), and one line (``line``,
    default :func:`default_line`; ``None`` is returned by a line function to print nothing).
    ``log_every`` > 0 also prints a line every that many iterations (the bar is silent outside a
    terminal)."""
    line = line or default_line(label)
    count = 0  # iterations of a run-less call
    done = []
    for epoch in range(start, epochs):
        for m in models:
            m.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        bar = progress(loader, desc=f"{desc} {epoch + 1}/{epochs}", total=len(loader))
        for i, batch in enumerate(bar):
            out = step(batch, i)
            if out is None:
                continue
            row = {k: float(v.item() if hasattr(v, "item") else v) for k, v in out.items()}
            losses = {k: row[k] for k in (guard if guard is not None else [k for k in row if "loss" in k]) if k in row}
            if run is not None:
                run.step += 1
                run.guard(epoch, **losses)
                if log_steps:
                    run.history.log_step(step=run.step, epoch=epoch + 1, **row)
            else:
                count += 1
                check_finite(f"epoch {epoch + 1}, step {count}", **losses)
            for k, v in row.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            for fn in on_step:
                fn(row)
            n = run.step if run is not None else count
            if postfix_every and n % postfix_every == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            if log_every and n % log_every == 0:
                print(f"  step {n}: " + ", ".join(f"{k} {v:.3f}" for k, v in losses.items())
                      + f" ({time.perf_counter() - t0:.0f} s into epoch {epoch + 1})", flush=True)
        seconds = time.perf_counter() - t0
        ep = Epoch(epoch, epochs, seconds, sums, counts)
        ep.row = {"epoch": epoch + 1, **ep.means(), "seconds": round(seconds, 3)}
        for fn in on_epoch:
            fn(ep)
        if run is not None:
            run.history.log_epoch(**ep.row)
            run.checkpoint(epoch + 1, objects or {})
        text = line(ep)
        if text:
            print(text, flush=True)
        done.append(ep)
    return done
