"""common.loop: the one epoch loop (steps, guard, history, callbacks, checkpoint, resume)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from common import training as T
from common.data import TensorLoader
from common.loop import train_epochs


def _setup(folder, config=None):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = TensorLoader(torch.randn(40, 3), batch_size=8, shuffle=True, seed=0)
    run = T.Run(folder, {"lr": 0.05, **(config or {})})
    objects = {"model": model, "opt": opt, "loader": loader}

    def step(batch, i):
        loss = (model(batch[0]) - 1).pow(2).mean() + 0.01 * torch.randn(())  # draws from the global stream
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss, "half": loss.item() / 2}

    return model, run, objects, step


def test_resume_through_the_loop_is_bit_exact(tmp_path):
    model, run, objects, step = _setup(tmp_path / "whole")
    seen = []
    epochs = train_epochs(step, objects["loader"], 3, run=run, objects=objects, models=(model,),
                          on_epoch=[lambda ep: seen.append((ep.number, ep.counts["loss"]))])
    assert seen == [(1, 5), (2, 5), (3, 5)] and run.step == 15 and len(epochs) == 3
    assert run.history.steps[0].keys() == {"step", "epoch", "loss", "half"}
    assert run.history.epochs[-1]["loss"] == pytest.approx(epochs[-1].means()["loss"])
    expected = model.weight.detach().clone()

    model, run, objects, step = _setup(tmp_path / "split")
    train_epochs(step, objects["loader"], 1, run=run, objects=objects, models=(model,))
    model, run, objects, step = _setup(tmp_path / "split", {"resume": True})
    start = run.resume(objects)
    assert start == 1
    assert len(train_epochs(step, objects["loader"], 3, run=run, objects=objects, start=start, models=(model,))) == 2
    assert torch.equal(model.weight, expected) and run.step == 15
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    whole = T.read_checkpoint(tmp_path / "whole" / "checkpoint.pt")["state"]["history"]["epochs"]
    assert strip(run.history.epochs) == strip(whole)


def test_steps_that_end_no_iteration_are_not_counted(tmp_path):
    model, run, objects, step = _setup(tmp_path / "n")
    train_epochs(lambda batch, i: step(batch, i) if i % 2 else None, objects["loader"], 1, run=run,
                 objects=objects, log_steps=False)
    assert run.step == 2 and not run.history.steps and run.history.epochs[0]["epoch"] == 1


def test_a_nan_loss_stops_the_loop_and_keeps_the_last_checkpoint(tmp_path):
    model, run, objects, step = _setup(tmp_path / "nan")
    train_epochs(step, objects["loader"], 1, run=run, objects=objects)
    good = run.ckpt_path.read_bytes()
    with pytest.raises(T.NonFiniteLoss, match=r"loss became nan at epoch 2, step 7.*last good checkpoint"):
        train_epochs(lambda b, i: {"loss": float("nan") if i == 1 else 0.5}, objects["loader"], 2, run=run,
                     objects=objects, start=1)
    assert run.ckpt_path.read_bytes() == good
    with pytest.raises(T.NonFiniteLoss, match="d_loss became inf"):  # without a run too
        train_epochs(lambda b, i: {"d_loss": float("inf")}, objects["loader"], 1)


def test_advice_reads_the_one_precision_key(tmp_path):
    assert "--precision fp32" in T.Run(tmp_path / "a", {"lr": 1.0, "precision_resolved": "bf16"}).advice()
    assert "--precision" not in T.Run(tmp_path / "b", {"lr": 1.0, "precision_resolved": "fp32"}).advice()
    assert T.resolved(torch.device("cpu"), "fp32", "sample") == {
        "device_resolved": "cpu", "precision_resolved": "fp32", "data_source": "sample"}
