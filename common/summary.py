"""The one-line summary a run ends with: ``summary.json`` in its run folder.

One JSON object on one line: the course, part and run (read from the folder's path), date, git
commit, machine (CPU model or GPU name), threads, precision, epochs, training and wall time, and
the headline numbers the script names (:class:`Headline`: a key of its metrics.json, a label for
a reader, a unit). Quick runs write one too (``"quick": true``).

    HEADLINE = (FRECHET, Headline("class_accuracy", "class accuracy", unit="%", better="higher"))
    ...
    write_summary(run_folder, HEADLINE)
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .paths import ROOT, run_identity

SUMMARY = "summary.json"


@dataclass(frozen=True)
class Headline:
    """One headline number of a run. ``key``: dotted, into its metrics.json
    (``conditional.class_accuracy``); ``*`` stands for every key at its level (``runs.*.fd_final``)
    and a leading ``<sub-folder>/`` (``*/`` too) reads a sub-run's metrics.json; ``{}`` in the label
    names what ``*`` matched. ``unit="%"`` shows a share as a percentage; ``floor``: the key of the
    value it is read against (the real data's own Frechet distance); ``fmt``: a format spec."""
    key: str
    label: str
    unit: str = ""
    fmt: str | None = None
    floor: str | None = None
    better: str | None = None  # "lower" or "higher"


FRECHET = Headline("frechet_distance", "Fréchet distance", floor="frechet_floor_train_vs_test", fmt=".2f", better="lower")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _lookup(obj, dotted: str) -> list[tuple[list[str], object]]:
    """Every (``*`` matches, value) of a dotted key."""
    found = [([], obj)]
    for part in dotted.split("."):
        nxt = []
        for matched, o in found:
            if not isinstance(o, dict):
                continue
            if part == "*":
                nxt += [(matched + [k], v) for k, v in o.items()]
            elif part in o:
                nxt.append((matched, o[part]))
        found = nxt
    return found


def _fill(key: str, matched: list[str]) -> str:
    for m in matched:
        key = key.replace("*", m, 1)
    return key


def format_number(value, unit: str = "", fmt: str | None = None) -> str:
    """``0.9931, "%"`` -> ``99.3%``; ``81.304, "nats", ".2f"`` -> ``81.30 nats``; None -> ``n/a``."""
    v = _number(value)
    if v is None:
        return "n/a" if value is None else str(value)
    if unit == "%":
        return f"{v * 100:{fmt or '.1f'}}%"
    text = format(v, fmt) if fmt else (str(int(v)) if v == int(v) and abs(v) < 1e6 else f"{v:.4g}")
    return f"{text} {unit}" if unit else text


def headline_numbers(folder: Path, headline) -> list[dict]:
    """The numbers ``headline`` (:class:`Headline` s) names in the run folder: ``{"label", "value",
    "unit", "text"}`` (and ``floor``, ``floor_text``, ``better``), in its order; ``text`` is the
    value as a reader sees it (``99.3%``, ``81.30 nats``)."""
    folder, out = Path(folder), []
    for h in headline:
        *subs, dotted = h.key.split("/")
        folders = [folder]
        for s in subs:
            folders = [f for d in folders for f in sorted(d.glob(s)) if f.is_dir()]
        for f in folders:
            prefix = [f.relative_to(folder).as_posix()] if subs and "*" in subs[0] else []
            metrics = _read_json(f / "metrics.json")
            for matched, value in _lookup(metrics, dotted):
                if isinstance(value, (dict, list)):
                    continue
                names = prefix + matched
                row = {"label": h.label.format(*names) if "{}" in h.label else h.label, "value": value,
                       "unit": h.unit, "text": format_number(value, h.unit, h.fmt)}
                floors = [v for _, v in _lookup(metrics, _fill(h.floor, matched))] if h.floor else []
                if floors and _number(floors[0]) is not None:
                    row["floor"] = floors[0]
                    row["floor_text"] = format_number(floors[0], h.unit, h.fmt)
                if h.better:
                    row["better"] = h.better
                out.append(row)
    return out


def _histories(folder: Path) -> list[list[dict]]:
    """The epochs of the run: its own history.json, else those of its sub-runs (a study)."""
    own = _read_json(Path(folder) / "history.json").get("epochs")
    if own:
        return [own]
    return [h for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir()) for h in _histories(sub)]


def trained_runs(folder: Path) -> int:
    """How many runs trained in ``folder``: one for a run, one per sub-run for a study."""
    return len(_histories(folder))


def training_seconds(folder: Path) -> float | None:
    """The epochs' seconds of the run (every ``--resume`` included; for models trained in one
    process, an epoch's slowest, ``seconds_wall``), or of its sub-runs, summed."""
    seconds = [row.get("seconds_wall", row.get("seconds")) for h in _histories(folder) for row in h]
    seconds = [s for s in seconds if _number(s) is not None]
    return round(sum(seconds), 1) if seconds else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(device: str) -> str:
    """The GPU's name for a CUDA run, else the CPU model."""
    torch = sys.modules.get("torch")
    if str(device).startswith("cuda") and torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device).index or 0)
    return cpu_model()


@functools.cache
def git_commit() -> str | None:
    """The short commit of the checkout the code runs from (None outside a git checkout), read once
    per process: :class:`common.training.Run` asks at the run's start, so a commit made while a long
    run trains is not the one its summary names."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def process_seconds() -> float | None:
    """Seconds since this process started (Linux), else None."""
    try:
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return round(float(Path("/proc/uptime").read_text().split()[0]) - start, 1)
    except (OSError, ValueError, IndexError):
        return None


def _config(folder: Path) -> dict:
    """config.json of the run, or of its first sub-run (a study folder without one of its own)."""
    cfg = _read_json(folder / "config.json")
    subs = sorted(folder.glob("*/config.json"))
    return cfg or (_read_json(subs[0]) if subs else {})


def _epochs(folder: Path, metrics: dict, config: dict):
    for v in (metrics.get("epochs"), config.get("epochs")):
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    rows = _read_json(folder / "history.json").get("epochs")
    return len(rows) if rows else None


def summarize(folder: Path, headline=(), train_seconds: float | None = None, in_process: bool = True) -> dict:
    """The summary of the run in ``folder`` from its config.json, metrics.json and history.json.
    ``in_process``: this process ran it (its threads, wall time and GPU are read here); otherwise
    only the run's files speak. ``train_seconds``: the training time, where the epochs' seconds
    cannot tell it (sub-runs trained side by side)."""
    folder = Path(folder)
    who = run_identity(folder) or {"course": None, "part": None, "run": folder.name}
    config, metrics = _config(folder), _read_json(folder / "metrics.json")
    device = str(config.get("device_resolved") or metrics.get("device") or config.get("device") or "cpu")
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if in_process and torch is not None else config.get("threads") or None
    quick = bool(who.get("quick") or config.get("quick") is True or metrics.get("quick") is True)
    return {"course": who["course"], "part": who["part"], "run": who["run"], "quick": quick,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
            "machine": machine(device) if in_process or not device.startswith("cuda") else "GPU (name not recorded)",
            "device": device.split(":")[0], "threads": threads,
            "precision": config.get("precision_resolved") or metrics.get("precision") or config.get("precision"),
            "epochs": _epochs(folder, metrics, config), "runs": trained_runs(folder) or None,
            "train_seconds": round(train_seconds, 1) if train_seconds is not None else training_seconds(folder),
            "wall_seconds": process_seconds() if in_process else None, "resumed": bool(config.get("resume")),
            "headline": headline_numbers(folder, headline), "source": SUMMARY if in_process else "metrics.json"}


def write_summary(folder: Path, headline=(), train_seconds: float | None = None, in_process: bool = True) -> Path:
    """End a run: write ``summary.json`` (one line) into its folder, after its metrics.json, with
    the numbers ``headline`` names (:func:`summarize`); returns the file."""
    path = Path(folder) / SUMMARY
    record = summarize(folder, headline, train_seconds, in_process)
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n")
    return path
