"""common.cli (flags, quick mode) and common.plotting (every figure type writes a real PNG)."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from PIL import Image

from common import plotting as P
from common.cli import BaseConfig, make_config, parse_config
from common.training import ConfigError
from common.tables import markdown_table, write_table


@dataclass
class Config(BaseConfig):
    epochs: int = 50
    hidden: list[int] = field(default_factory=lambda: [64, 128])
    digit: typing.Optional[int] = None
    QUICK: typing.ClassVar[dict] = {"epochs": 1, "batch_size": 32}


def test_defaults_are_the_full_configuration(monkeypatch):
    monkeypatch.delenv("HW_QUICK", raising=False)
    cfg = parse_config(Config, [])
    assert cfg.epochs == 50 and cfg.batch_size == 128 and not cfg.quick and cfg.precision == "auto"


def test_quick_flag_env_and_explicit_flags(monkeypatch):
    monkeypatch.delenv("HW_QUICK", raising=False)
    cfg = parse_config(Config, ["--quick", "--hidden", "8", "16"])
    assert cfg.quick and cfg.epochs == 1 and cfg.batch_size == 32 and cfg.hidden == [8, 16]
    assert parse_config(Config, ["--quick", "--epochs=3"]).epochs == 3  # explicit flags win
    monkeypatch.setenv("HW_QUICK", "1")
    assert parse_config(Config, []).epochs == 1
    assert make_config(Config, digit=3).epochs == 1 and make_config(Config, digit=3).digit == 3
    monkeypatch.setenv("HW_QUICK", "0")
    assert make_config(Config).epochs == 50
    with pytest.raises(ConfigError, match="invalid choice: 'fp8'"):  # one line, no usage text
        parse_config(Config, ["--precision", "fp8"])


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "--batch-size must be a positive number"),
    (["--epochs", "-1"], "--epochs must be a positive number"),
    (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--device", "nosuchdevice"], "--device nosuchdevice"),
])
def test_bad_values_are_refused_before_anything_runs(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(Config, argv)
    with pytest.raises(ConfigError):
        make_config(Config, epochs=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_an_unavailable_device_is_refused():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        parse_config(Config, ["--device", "cuda"])


def test_threads_flag_sets_torch_threads(monkeypatch):
    monkeypatch.delenv("HW_QUICK", raising=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert parse_config(Config, []).threads == 0 and torch.get_num_threads() == 2  # 0 leaves it alone
        assert parse_config(Config, ["--threads", "1"]).threads == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        make_config(Config, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _png(path):
    assert path.exists() and path.stat().st_size > 2000
    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 150
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 5  # not blank


def test_every_figure_type(tmp_path):
    imgs = torch.rand(20, 1, 28, 28) * 2 - 1
    _png(P.save_grid(imgs, tmp_path / "grid.png", nrow=5, title="t", row_labels=list("abcd"),
                     col_labels=[str(i) for i in range(5)]))
    _png(P.save_grid(torch.rand(8, 784), tmp_path / "flat.png", nrow=4, title="flat", value_range=(0, 1)))
    series = {"a": np.random.rand(300).tolist(), "b": (np.arange(10), np.random.rand(10))}
    _png(P.plot_panels({"loss": series, "gp": {"gp": list(range(5))}}, tmp_path / "curves.png", title="c", window=20))
    _png(P.plot_curves(series, tmp_path / "one.png", "one", logy=True))
    _png(P.plot_reconstructions(torch.rand(16, 1, 28, 28), torch.rand(16, 1, 28, 28), tmp_path / "rec.png", "rec"))
    _png(P.plot_latent_grid(lambda z: torch.sigmoid(z.sum(1, keepdim=True)).repeat(1, 784), tmp_path / "lat.png", n=6))
    pts = np.random.randn(100, 2)
    _png(P.plot_embeddings({"A": pts, "B": pts * 2}, np.arange(100) % 10, tmp_path / "emb.png",
                           [f"c{i}" for i in range(10)], title="emb"))
    _png(P.plot_bars({"x": 1.0, "y": 2.0}, tmp_path / "bars.png", "bars", "v"))
    _png(P.plot_bars({"x": 60.0, "y": 4568.0}, tmp_path / "bars_log.png", "bars", "v", log=True, fmt="%.0f"))


def test_moving_average():
    assert P.moving_average([1, 2, 3, 4], 2).tolist() == [1, 1.5, 2.5, 3.5]
    assert P.moving_average([1, 2], 1).tolist() == [1, 2]


def test_tables(tmp_path):
    rows = [{"run": "a", "fd": 1.23456}, {"run": "b", "fd": 2.0, "extra": 1}]
    md = markdown_table(rows)
    assert md.splitlines()[0] == "| run | fd | extra |" and "| a | 1.23 |  |" in md and "| b | 2.00 | 1 |" in md
    path = write_table(rows, tmp_path / "t", title="T")
    assert path.read_text().startswith("### T") and (tmp_path / "t.csv").read_text().startswith("run,fd,extra")
