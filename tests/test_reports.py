"""common.report: reports filled from (fake) run folders, the verdicts that read
the numbers, the quick and placeholder banners, the "not yet run" fallback, math kept away from
Markdown, tables and the PDF.

The runs are fakes written into tmp_path from what each report.md reads (``report.references``)
and from contrived numbers (``BASE``, ``FLIPS``), so these tests need no training, no data and no
network. The gallery's tests: tests/test_gallery.py."""
from __future__ import annotations

import copy
import html as _html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common import deliver, report, runs
from common.courses import courses
from helpers import ROOT

REPORTS = {c.key: c.path / c.report for c in courses() if c.report}
COURSES = sorted(REPORTS)
HAVE_PDF_TOOLS = deliver.chromium() is not None and shutil.which("pdftoppm") is not None and shutil.which("pdftotext")
NO_PDF_REASON = "Chromium, pdftoppm or pdftotext not installed (apt-get install chromium poppler-utils)"


# --------------------------------------------------------------------------------------------
# Contrived runs that flip every verdict. BASE[course]: the JSON files a report's verdicts read,
# keyed "alias[/sub]:metrics|config"; FLIPS[course]: overrides, one scenario each. Across the base
# and its flips every branch of every {% if %} block is taken at least once.


def _stages(fds, epochs=None):
    epochs = epochs or [5 * i for i in range(len(fds))]
    return [{"epoch": e, "updates": 10 * e, "frechet_distance": f, "judge_confidence": 0.9, "class_entropy": 2.2}
            for e, f in zip(epochs, fds)]


def _bs_runs(fd_epochs, fd_updates, events=(0, 0, 0, 0), budget=40):
    sizes = (128, 256, 512, 1024)
    return {str(b): {"batch_size": b, "updates_total": 40 * 1024 // b, "fd_equal_epochs": fe,
                     f"fd_at_{budget}_updates": fu, "g_loss_epoch_std_last": 0.1 + i / 10,
                     "divergence_epochs": ev, "collapse_events": 0}
            for i, (b, fe, fu, ev) in enumerate(zip(sizes, fd_epochs, fd_updates, events))}


def _sched(fd_final, fd_best, std, events):
    return {"fd_final": fd_final, "fd_best": fd_best, "g_loss_epoch_std_last": std, "divergence_epochs": events,
            "collapse_events": 0}


A3_BASE = {
    "st:config": {"epochs": 10, "batch_size": 128, "snapshot_every": 5, "n_eval": 5000, "dropout": 0.3, "lr": 2e-4,
                  "beta1": 0.5, "latent_dim": 100},
    "st:metrics": {"stages": _stages([300.0, 100.0, 60.0]), "best_epoch": 10, "best_frechet_distance": 60.0,
                   "frechet_distance": 60.0, "class_entropy": 2.2, "frechet_floor_train_vs_test": 2.5},
    "bs:config": {"batch_sizes": [128, 256, 512, 1024], "epochs": 10},
    "bs:metrics": {"epochs": 10, "equal_updates_budget": 40, "least_stable_batch_size": 1024,
                   "runs": _bs_runs([50.0, 60.0, 70.0, 90.0], [80.0, 70.0, 75.0, 90.0])},
    "sc:config": {"gamma": 0.1, "step_every": 10, "warmup_epochs": 3, "epochs": 25},
    "sc:metrics": {"batch_size": 1024, "epochs": 25, "runs": {
        "constant": _sched(100.0, 80.0, 0.5, 3), "step_decay": _sched(80.0, 78.0, 0.2, 0),
        "warmup_cosine": _sched(120.0, 90.0, 0.6, 1)}},
}
A3_FLIPS = [
    {"st:metrics": {"stages": _stages([300.0, 250.0, 150.0, 180.0]), "best_epoch": 10, "best_frechet_distance": 150.0,
                    "frechet_distance": 180.0, "class_entropy": 1.5},
     "bs:metrics": {"least_stable_batch_size": 128,
                    "runs": _bs_runs([95.0, 80.0, 70.0, 60.0], [90.0, 80.0, 70.0, 60.0], events=(2, 0, 0, 1))},
     "sc:metrics": {"batch_size": 512, "runs": {
         "constant": _sched(70.0, 69.0, 0.1, 0), "step_decay": _sched(90.0, 60.0, 0.3, 1),
         "warmup_cosine": _sched(60.0, 59.0, 0.05, 0)}}},
    {"st:metrics": {"stages": _stages([300.0, 290.0, 280.0]), "best_epoch": 10, "best_frechet_distance": 280.0,
                    "frechet_distance": 280.0, "class_entropy": 0.3},
     "bs:metrics": {"least_stable_batch_size": 256},
     "sc:metrics": {"runs": {"constant": _sched(70.0, 69.0, 0.01, 0), "step_decay": _sched(90.0, 60.0, 0.3, 1),
                             "warmup_cosine": _sched(60.0, 59.0, 0.05, 2)}}},
    {"sc:metrics": {"runs": {"constant": _sched(70.0, 69.0, 0.5, 2), "step_decay": _sched(90.0, 60.0, 0.3, 0),
                             "warmup_cosine": _sched(60.0, 59.0, 0.05, 1)}}},
]

PROBES = ("trained D (DCGAN)", "random D (untrained, same architecture)", "raw pixels")


def _probe(trained, trained_train, random, pixels):
    return {name: {"test_accuracy": t, "train_accuracy": tr, "n_test": 10000} for name, t, tr in
            zip(PROBES, (trained, random, pixels), (trained_train, 1.0, 1.0))}


def _per_m(test, train, pca):
    return {str(m): {"test_mse_unit": a, "train_mse_unit": b, "pca_test_mse_unit": c}
            for m, a, b, c in zip((16, 64, 256), test, train, pca)}


ECE_BASE = {
    "p1:metrics": {"class_entropy": 2.2, "class_entropy_max": 2.302585, "epochs": 20, "probe_n_train": 6000,
                   "probe": _probe(0.95, 0.97, 0.80, 0.85)},
    "p1:config": {"lr": 2e-4, "beta1": 0.5, "batch_size": 128, "nz": 100, "probe_fraction": 0.1, "epochs": 20},
    "p2:config": {"data_source": "full", "hidden": [16, 64, 256], "k": 5, "sigma": 1.0, "n_train": 60000,
                  "n_test": 10000, "lr": 1e-3, "batch_size": 128, "weight_decay": 0.0, "epochs": 25},
    "p2:metrics": {"epochs": 25, "mean_image_mse_unit": {"test": 0.06, "train": 0.06},
                   "per_M": _per_m([0.05, 0.04, 0.03], [0.049, 0.039, 0.0295], [0.01, 0.005, 0.001])},
    "p3:config": {"epochs": 50, "val_fraction": 0.2, "lr": 1e-3, "batch_size": 128},
    "p3:metrics": {"n_tsne": 10000,
                   "vae": {"test_elbo": -250.0, "test_kl": 25.0, "tsne_neighbour_agreement": 0.8},
                   "cvae": {"test_elbo": -240.0, "test_kl": 15.0, "tsne_neighbour_agreement": 0.4},
                   "cvae_samples_judge": {"class_accuracy": 0.9, "n_samples": 1000}},
}
ECE_FLIPS = [
    {"p1:metrics": {"class_entropy": 1.5, "probe": _probe(0.80, 0.99, 0.805, 0.85)},
     "p2:config": {"data_source": "synthetic"},
     "p2:metrics": {"per_M": _per_m([0.05, 0.052, 0.058], [0.04, 0.04, 0.04], [0.1, 0.1, 0.1])},
     "p3:metrics": {"vae": {"test_elbo": -250.0, "test_kl": 25.0, "tsne_neighbour_agreement": 0.4},
                    "cvae": {"test_elbo": -260.0, "test_kl": 30.0, "tsne_neighbour_agreement": 0.8},
                    "cvae_samples_judge": {"class_accuracy": 0.5, "n_samples": 1000}}},
    {"p1:metrics": {"class_entropy": 0.5, "probe": _probe(0.70, 0.72, 0.80, 0.85)},
     "p2:config": {"data_source": "sample"},
     "p2:metrics": {"per_M": _per_m([0.05, 0.04, 0.03], [0.049, 0.039, 0.0295], [0.01, 0.1, 0.1])},
     "p3:metrics": {"vae": {"test_elbo": -250.0, "test_kl": 25.0, "tsne_neighbour_agreement": 0.5},
                    "cvae": {"test_elbo": -240.0, "test_kl": 15.0, "tsne_neighbour_agreement": 0.52},
                    "cvae_samples_judge": {"class_accuracy": 0.1, "n_samples": 1000}}},
]

ABLATIONS = ("baseline", "g_channels_x2", "g_extra_layer", "d_extra_layer", "dropout_0.1", "dropout_0.5",
             "equal_lr", "lr_d_x2", "d_freq_2", "d_freq_3")


def _ablations(fd, entropy, d_g_z=None):
    d_g_z = d_g_z or {}
    return {f"abl/{name}:metrics": {"frechet_distance": fd.get(name, 100.0), "class_entropy": entropy.get(name, 2.2),
                                    "mean_D_G_z": d_g_z.get(name, 0.3), "epochs": 20,
                                    "frechet_floor_train_vs_test": 2.5}
            for name in ABLATIONS}


def _pix(u_thr, u_ber, c_thr, acc, per_class, u_fd=30.0, c_fd=20.0, u_entropy=2.2):
    return {"epochs": 10, "binarize": "threshold",
            "unconditional": {"test_nll_nats_threshold": u_thr, "test_nll_nats_bernoulli": u_ber,
                              "frechet_distance": u_fd, "class_entropy": u_entropy},
            "conditional": {"test_nll_nats_threshold": c_thr, "test_nll_nats_bernoulli": c_thr + 1,
                            "frechet_distance": c_fd, "class_accuracy": acc,
                            "class_accuracy_per_class": {str(d): a for d, a in enumerate(per_class)}}}


def _vae(elbo, recon, kl, fd, epochs=25):
    return {"test_elbo_nats": elbo, "test_recon_nats": recon, "test_kl_nats": kl, "epochs": epochs,
            "prior_samples": {"frechet_distance": fd}}


EE_BASE = {
    "gan:config": {"lr_g_used": 4e-4, "lr_d_used": 2e-4, "d_freq": 1, "dim_z": 100, "g_channels": [64, 128, 256],
                   "d_channels": [256, 128, 64], "dropout": 0.3, "beta1": 0.5, "batch_size": 128, "epochs": 50},
    "gan:metrics": {"epochs": 50, "final_d_loss": 1.2, "mean_D_x": 0.6, "mean_D_G_z": 0.4, "class_entropy": 2.2},
    **{f"abl/{name}:config": cfg for name, cfg in {
        "baseline": {"lr_g_used": 4e-4, "lr_d_used": 2e-4}, "g_channels_x2": {"g_channels": [128, 256, 512]},
        "g_extra_layer": {"g_channels": [64, 128, 256, 512]}, "d_extra_layer": {"d_channels": [512, 256, 128, 64]},
        "dropout_0.1": {"dropout": 0.1}, "dropout_0.5": {"dropout": 0.5},
        "equal_lr": {"lr_d_used": 2e-4, "lr_g_used": 2e-4}, "lr_d_x2": {"lr_d_used": 4e-4, "lr_g_used": 2e-4},
        "d_freq_2": {"d_freq": 2}, "d_freq_3": {"d_freq": 3}}.items()},
    **_ablations({"g_channels_x2": 80.0, "equal_lr": 150.0}, {"equal_lr": 0.4}, {"d_freq_3": 0.1}),
    "pix:config": {"digit": 7, "n_layers": 12, "channels": 32, "kernel": 3, "lr": 3e-3, "batch_size": 64,
                   "epochs": 7, "warmup_epochs": 0.5, "binarize": "threshold"},
    "pix:metrics": _pix(90.0, 95.0, 85.0, 0.95, [0.9, 1.0, 0.95, 0.9, 0.9, 0.9, 0.9, 0.92, 0.9, 0.85]),
    "vae:config": {"z_size": 2, "hidden_dims": [256, 128, 64, 4], "lr": 1e-3, "batch_size": 128, "coeff": 1.0,
                   "epochs": 25},
    "vae:metrics": {"epochs": 25, "prior_samples": {"class_entropy": 2.2}},
    **{f"sweep/{name}:config": {"epochs": 25, "lr": lr, "coeff": coeff, "hidden_dims": hidden}
       for name, lr, coeff, hidden in (
           ("default", 1e-3, 1.0, [256, 128, 64, 4]), ("lr_1e-4", 1e-4, 1.0, [256, 128, 64, 4]),
           ("lr_1e-2", 1e-2, 1.0, [256, 128, 64, 4]), ("coeff_0.1", 1e-3, 0.1, [256, 128, 64, 4]),
           ("coeff_0.01", 1e-3, 0.01, [256, 128, 64, 4]), ("coeff_0.001", 1e-3, 0.001, [256, 128, 64, 4]),
           ("hidden_32_32_16", 1e-3, 1.0, [32, 32, 16, 4]), ("hidden_128_64_32", 1e-3, 1.0, [128, 64, 32, 4]),
           ("hidden_256_256_256", 1e-3, 1.0, [256, 256, 256, 4]))},
    "sweep/default:metrics": _vae(-150.0, 140.0, 10.0, 20.0),
    "sweep/lr_1e-2:metrics": _vae(-140.0, 130.0, 10.0, 20.0),
    "sweep/lr_1e-4:metrics": _vae(-200.0, 190.0, 10.0, 20.0),
    "sweep/coeff_0.001:metrics": _vae(-170.0, 120.0, 50.0, 40.0),
    "sweep/hidden_32_32_16:metrics": _vae(-180.0, 170.0, 10.0, 20.0),
    "sweep/hidden_128_64_32:metrics": _vae(-160.0, 150.0, 10.0, 20.0),
    "sweep/hidden_256_256_256:metrics": _vae(-145.0, 135.0, 10.0, 20.0),
}
EE_FLIPS = [
    {"gan:metrics": {"final_d_loss": 0.05, "mean_D_x": 0.99, "mean_D_G_z": 0.01, "class_entropy": 1.5},
     **_ablations({"g_channels_x2": 98.0, "equal_lr": 90.0}, {"g_channels_x2": 0.5}, {"d_freq_3": 0.29}),
     "pix:metrics": _pix(90.0, 85.0, 95.0, 0.6, [0.6] * 10, u_fd=20.0, c_fd=30.0, u_entropy=1.0),
     "vae:metrics": {"prior_samples": {"class_entropy": 1.5}},
     "sweep/lr_1e-2:metrics": _vae(-160.0, 150.0, 10.0, 20.0, epochs=3),
     "sweep/lr_1e-4:metrics": _vae(-140.0, 130.0, 10.0, 20.0),
     "sweep/coeff_0.001:metrics": _vae(-170.0, 150.0, 8.0, 15.0),
     "sweep/hidden_32_32_16:metrics": _vae(-140.0, 130.0, 10.0, 20.0)},
    {"gan:config": {"lr_g_used": 2e-4, "lr_d_used": 2e-4},
     "gan:metrics": {"final_d_loss": 1.5, "mean_D_x": 0.45, "mean_D_G_z": 0.55, "class_entropy": 0.3},
     **_ablations({}, {name: 0.2 for name in ABLATIONS}),
     "pix:metrics": _pix(90.0, 95.0, 85.0, 0.2, [0.1, 0.3] * 5),
     "vae:config": {"z_size": 3},
     "vae:metrics": {"prior_samples": {"class_entropy": 0.3}},
     "sweep/lr_1e-2:metrics": _vae(-160.0, 150.0, 10.0, 20.0),
     "sweep/coeff_0.001:metrics": _vae(-140.0, 130.0, 5.0, 15.0)},
    {**_ablations({"equal_lr": 90.0}, {}), "sweep/coeff_0.001:metrics": _vae(-160.0, 130.0, 20.0, 15.0)},
]


def _dcgan(fd, d_x=0.7, d_g_z=0.3, entropy=2.2, params_d=100_000, seconds=10.0, fds=None):
    return {"frechet_distance": fd, "class_entropy": entropy, "class_entropy_max": 2.302585,
            "final_epoch": {"d_loss": 0.5, "g_loss": 2.0, "D_x": d_x, "D_G_z": d_g_z}, "params_G": 300_000,
            "params_D": params_d, "mean_seconds_per_epoch": seconds,
            "frechet_per_epoch": fds or [300.0, 50.0, 30.0, fd], "frechet_per_epoch_epochs": list(range(4))}


RDFIA_BASE = {
    "dc:config": {"lr_decay_epochs": [2, 3], "epochs": 3, "init": "course", "lr": 2e-4, "nz": 100, "ngf": 32,
                  "ndf": 32, "beta1": 0.5, "batch_size": 128},
    "dc:metrics": _dcgan(20.0, fds=[300.0, 50.0, 30.0, 20.0]),
    "nz10:config": {"nz": 10}, "nz1000:config": {"nz": 1000}, "nz10000:config": {"nz": 10000},
    "nz10:metrics": _dcgan(10.0), "nz1000:metrics": _dcgan(30.0), "nz10000:metrics": _dcgan(40.0, seconds=30.0),
    "ptinit:metrics": _dcgan(21.0),
    "sat:metrics": _dcgan(200.0, d_g_z=0.01, entropy=0.5),
    "wide:config": {"ngf": 128, "ndf": 256}, "wide:metrics": _dcgan(150.0, d_g_z=0.01, params_d=6_300_000),
    "lrhi:config": {"lr": 1e-3}, "lrhi:metrics": _dcgan(15.0),
    "lrlo:config": {"lr": 5e-5}, "lrlo:metrics": _dcgan(60.0, fds=[300.0, 200.0, 100.0, 60.0]),
    "cifar:config": {"data_source": "full"}, "cifar:metrics": {"final_epoch": {"D_x": 0.7, "D_G_z": 0.3}},
    "cg:metrics": {**_dcgan(15.0, entropy=2.25), "class_accuracy": 0.95},
}
RDFIA_FLIPS = [
    {"dc:config": {"lr_decay_epochs": [11, 16]},
     "dc:metrics": _dcgan(40.0, d_x=0.2, d_g_z=0.6, entropy=1.5, fds=[300.0, 200.0, 100.0, 40.0]),
     "sat:metrics": _dcgan(45.0, d_g_z=0.3),
     "nz10:metrics": _dcgan(50.0), "nz1000:metrics": _dcgan(30.0), "nz10000:metrics": _dcgan(20.0, seconds=5.0),
     "ptinit:metrics": _dcgan(10.0), "wide:metrics": _dcgan(30.0, d_g_z=0.3, params_d=6_300_000),
     "lrhi:metrics": _dcgan(60.0), "lrlo:metrics": _dcgan(30.0, fds=[300.0, 100.0, 20.0, 30.0]),
     "cifar:config": {"data_source": "synthetic"},
     "cg:metrics": {**_dcgan(45.0, entropy=1.0), "class_accuracy": 0.6}},
    {"dc:config": {"init": "pytorch"},
     "dc:metrics": _dcgan(20.0, d_g_z=0.01, entropy=0.3, fds=[300.0, 290.0, 19.0, 20.0]),
     "sat:metrics": _dcgan(200.0, d_g_z=0.3),
     "nz10:metrics": _dcgan(25.0), "nz1000:metrics": _dcgan(15.0), "nz10000:metrics": _dcgan(30.0),
     "ptinit:metrics": _dcgan(40.0), "wide:metrics": _dcgan(30.0, d_g_z=0.3, params_d=6_300_000),
     "lrhi:metrics": _dcgan(30.0), "lrlo:metrics": _dcgan(25.0),
     "cg:metrics": {**_dcgan(25.0, entropy=2.2), "class_accuracy": 0.2}},
    {"dc:metrics": _dcgan(400.0, fds=[300.0, 350.0, 310.0, 400.0])},
]

BASE = {"assignment3": A3_BASE, "ece685d": ECE_BASE, "ee8520": EE_BASE, "rdfia": RDFIA_BASE}
FLIPS = {"assignment3": A3_FLIPS, "ece685d": ECE_FLIPS, "ee8520": EE_FLIPS, "rdfia": RDFIA_FLIPS}


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def _update_json(path: Path, fn) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    fn(data)
    path.write_text(json.dumps(data))


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def scenario(course: str, i: int) -> dict:
    """The contrived numbers of ``course``: the base (0), or the base with flip ``i`` (1, 2, ...)."""
    return _merge(BASE[course], FLIPS[course][i - 1]) if i else copy.deepcopy(BASE[course])


def fake_runs(source: Path, outputs: Path, quick: bool = True, data: dict | None = None) -> list[str]:
    """Write every run, key, figure, table and text ``source`` reads (``data``: JSON files by
    "alias[/sub]:metrics|config", written first; every other value a placeholder reads gets a
    number of its own); returns the strings that the filled values must render as."""
    src = report.parse_source(source)
    refs = report.references(source)
    course = outputs / src.meta["outputs"]
    folders = {}
    for alias, spec in refs["runs"].items():
        folder = course / (spec[:-2] + "/run_b" if spec.endswith("/*") else spec)
        _update_json(folder / "config.json", lambda d: d.update(quick=quick))
        folders[alias] = folder

    def where(ref: str) -> Path:
        alias, _, rest = ref.partition("/")
        return folders[alias] / rest if rest else folders[alias]

    for name, content in (data or {}).items():
        ref, _, file = name.rpartition(":")
        _update_json(where(ref) / f"{file}.json", lambda d, c=content: d.update(copy.deepcopy(c)))
    expected = []
    for i, (ref, file, key, fmt) in enumerate(refs["values"] + refs["branch_values"]):
        path = where(ref) / f"{file}.json"
        try:  # a key used twice (with another format), or set by ``data``, keeps its value
            value = report._lookup(json.loads(path.read_text()) if path.exists() else {}, key)
        except KeyError:
            value = 7000 + 11 * i + 0.25
            _update_json(path, lambda d, k=key, v=value: _set(d, k, v))
        if (ref, file, key, fmt) not in refs["branch_values"]:  # shown whatever the verdicts say
            expected.append(report.fmt_value(value, fmt))
    for i, ref in enumerate(refs["figures"]):
        _png(where(ref), seed=i)
    for ref in refs["tables"]:
        stem = where(ref)
        stem.parent.mkdir(parents=True, exist_ok=True)
        columns = [c.rstrip("?").replace("*", "1") for c in refs["table_columns"].get(ref, ["setting", "score"])]
        cells = ["alpha"] + [str(0.123456 * (j + 1)) for j in range(len(columns) - 1)]
        stem.with_suffix(".csv").write_text(",".join(f'"{c}"' for c in columns) + "\n" + ",".join(cells) + "\n")
        stem.with_suffix(".md").write_text("### A fake table\n\n| x |\n|---|\n| alpha |\n")
        expected += ["0.123"]
    for ref in refs["texts"] + refs["markdowns"]:
        where(ref).parent.mkdir(parents=True, exist_ok=True)
        where(ref).write_text("# Title\n\nthe run's own words\n")
        expected.append("the run&#x27;s own words" if ref in refs["texts"] else "the run's own words")
    return expected


@pytest.mark.parametrize("course", COURSES)
def test_report_fills_every_placeholder_from_the_run(course, tmp_path):
    source = REPORTS[course]
    expected = fake_runs(source, tmp_path / "outputs", data=scenario(course, 0))
    html = report.render_html(source, "Doe", tmp_path / "outputs")
    assert "not yet run" not in html and "Incomplete report" not in html
    for text in expected:
        assert text in html, f"{text!r} missing from the {course} report"
    refs = report.references(source)
    assert html.count('<img src="data:image/png;base64,') == len(refs["figures"])
    assert "Built from quick runs" in html  # the first-page banner
    assert html.index("Built from quick runs") < html.index("<h2")  # before the first section
    assert "{{" not in html and "{%" not in html and "MATHSTASH" not in html
    figures_ = [int(n) for n in re.findall(r"<b>Figure (\d+)\.</b>", html)]
    tables = [int(n) for n in re.findall(r"<b>Table (\d+)\.</b>", html)]
    assert figures_ == list(range(1, len(figures_) + 1)) and tables == list(range(1, len(tables) + 1))


@pytest.mark.parametrize("course", COURSES)
def test_report_of_full_runs_has_no_banner(course, tmp_path):
    source = REPORTS[course]
    fake_runs(source, tmp_path / "outputs", quick=False, data=scenario(course, 0))
    html = report.render_html(source, "Doe", tmp_path / "outputs")
    assert "Built from quick runs" not in html and "not yet run" not in html and "Incomplete report" not in html


@pytest.mark.parametrize("course", COURSES)
def test_report_without_runs_says_so_on_page_one(course, tmp_path):
    source = REPORTS[course]
    html = report.render_html(source, "Doe", tmp_path / "no-outputs")
    targets = {r.target for r in report.parse_source(source).runs.values()}
    for target in targets:
        assert f"(not yet run: {target})" in html
    assert 'class="missing-figure"' in html
    assert "Incomplete report" in html and html.index("Incomplete report") < html.index("<h2")
    assert "{{" not in html and "{%" not in html


def _blocks(pieces: list) -> list:
    """Every {% if %} block of a parsed body, nested ones too."""
    out = []
    for piece in pieces:
        if isinstance(piece, tuple) and piece[0] == "if":
            out.append(piece)
            for _, body in piece[1]:
                out += _blocks(body)
            out += _blocks(piece[2][0] or [])
    return out


def _lead(pieces: list) -> str:
    """The literal words a branch opens with (up to its first value, math or tag), as plain text."""
    text = next((p for p in pieces if isinstance(p, str) and p.strip()), "") if pieces else ""
    if pieces and not isinstance(pieces[0], str):
        return ""
    text = re.split(r"\{\{|\{%|\$", text)[0]
    return " ".join(text.replace("**", "").split())[:40]


@pytest.mark.parametrize("course", COURSES)
def test_every_verdict_flips_with_its_numbers(course, tmp_path):
    """The base numbers and each flip take every branch of every verdict at least once, and the
    text of the branch taken is in the report."""
    source = REPORTS[course]
    blocks = _blocks(runs._parse_blocks(report.parse_source(source).body, source))
    assert blocks, f"{course}: no verdicts"
    branches = {tuple(c for c, _ in b[1]): [body for _, body in b[1]] + [b[2][0] or []] for b in blocks}
    taken: dict[tuple, set] = {key: set() for key in branches}
    for i in range(len(FLIPS[course]) + 1):
        out = tmp_path / f"scenario{i}"
        fake_runs(source, out, data=scenario(course, i))
        src, text = report.fill_source(source, "Doe", out)
        assert "not yet run" not in text, f"{course} scenario {i}: {re.findall(r'not yet run[^<]*<?', text)[:3]}"
        plain = " ".join(_html.unescape(text).replace("**", "").split())
        for conditions, branch in src.verdicts:
            assert branch is not None, f"{course} scenario {i}: {conditions} read a missing value"
            taken[tuple(conditions)].add(branch)
            lead = _lead(branches[tuple(conditions)][branch])
            assert len(lead) < 8 or lead in plain, f"{course} scenario {i}: {lead!r} ({conditions}) not in the text"
    for key, seen in taken.items():
        assert seen == set(range(len(branches[key]))), f"{course}: branches {sorted(seen)} of {key} taken"


def test_flipped_numbers_flip_the_words(tmp_path):
    """Spot checks of whole sentences: the same report, two sets of numbers, two verdicts."""
    source = REPORTS["assignment3"]
    texts = []
    for i in (0, 1):
        fake_runs(source, tmp_path / f"s{i}", data=scenario("assignment3", i))
        texts.append(" ".join(report.fill_source(source, "Doe", tmp_path / f"s{i}")[1].split()))
    assert "the smallest batch, with 8 times as many updates, ended below the largest (50.0 against 90.0)" in texts[0]
    assert "the smallest batch did not profit from its 8 times more updates" in texts[1]
    assert "**Step decay** resolves the instability best" in texts[0]
    assert "Neither schedule removed a divergent epoch or collapse (0 with a constant lr" in texts[1]
    assert "**warmup + cosine** only made training steadier" in texts[1]
    assert "the least stable batch size is **1024**, the largest" in texts[0]
    assert "the least stable batch size is **128**, the smallest" in texts[1]


def test_stand_in_data_is_named_in_headings_and_captions(tmp_path):
    for course, alias, stand_in, real in (
            ("ece685d", "p2", "synthetic bars, a stand-in for KMNIST", "KMNIST"),
            ("rdfia", "cifar", "synthetic bar images, a stand-in for CIFAR-10", "CIFAR-10")):
        source = REPORTS[course]
        data = _merge(scenario(course, 0), {f"{alias}:config": {"data_source": "synthetic"}})
        fake_runs(source, tmp_path / course, data=data)
        html = report.render_html(source, "Doe", tmp_path / course)
        assert stand_in in html
        for caption in re.findall(r"<figcaption>(.*?)</figcaption>", html) + re.findall(r"<h\d[^>]*>(.*?)</h\d>", html):
            assert real not in caption or stand_in in caption, caption
        if course == "ece685d":
            assert re.search(r"<h3[^>]*>2.2 GB-RBM on synthetic bars, a stand-in for KMNIST</h3>", html)
        data = _merge(scenario(course, 0), {f"{alias}:config": {"data_source": "full"}})
        fake_runs(source, tmp_path / f"{course}-full", data=data)
        assert stand_in not in report.render_html(source, "Doe", tmp_path / f"{course}-full")


def test_verdict_syntax(tmp_path):
    run = tmp_path / "outputs/course/part/r1"
    _update_json(run / "metrics.json", lambda d: d.update(
        fd=3.0, runs={"128": {"fd": 5.0, "std": 0.1}, "256": {"fd": 4.0, "std": float("nan")}}, curve=[9, 7, 8]))
    _update_json(run / "config.json", lambda d: d.update(every=1, sizes=[128, 256]))
    body = ("{% set best = argmin(r.metrics.runs, \"fd\") %}\n"
            "{% if r.metrics.fd < 4 %}\nlow\n{% elif r.metrics.fd < 10 %}\nmid\n{% else %}\nhigh\n{% endif %}\n"
            "and on. Best {{ = best }} ({{ = r.metrics.runs[best].fd :.1f }}), "
            "{{ = every(r.config.every, \"epoch\") }}, {{ = plural(2, \"epoch\") }}, sizes {{ r.config.sizes }}, "
            "noisiest {{ = argmax(r.metrics.runs, \"std\") }}, "
            "{{ = [x * 2 for x in r.metrics.curve] }}, {{ = decreasing(r.metrics.curve) }}. "
            "Gone: {% if r.metrics.absent > 1 %}yes{% endif %}; {{ = r.metrics.runs[\"512\"].fd }}.\n")
    src, text = report.fill_source(_mini(tmp_path, body), "Doe", tmp_path / "outputs")
    assert text.startswith("low\nand on.")  # a tag alone on its line takes its line break with it
    assert "Best 256 (4.0), every epoch, 2 epochs, sizes 128 and 256, noisiest 128, 18, 14 and 16, False." in text
    assert "Gone: <span class=\"missing\">(not yet run: make thing) (no metrics.absent)</span>" in text
    assert "(no metrics.runs.512)" in text
    assert src.verdicts == [(["r.metrics.fd < 4", "r.metrics.fd < 10"], 0), (["r.metrics.absent > 1"], None)]
    for bad in ("{% if __import__('os') %}x{% endif %}", "{% if r.metrics.fd.__class__ %}x{% endif %}",
                "{{ = open('x') }}", "{% if 1 %}unclosed", "{% endif %}"):
        with pytest.raises(ValueError):
            report.fill_source(_mini(tmp_path, bad), "Doe", tmp_path / "outputs")


def _mini(tmp_path: Path, body: str, runs: str = "run r: part/* | make thing") -> Path:
    src = tmp_path / "mini.md"
    src.write_text(f"---\ntitle: Mini\npdf: {{name}}_Mini.pdf\noutputs: course\n{runs}\n---\n{body}")
    return src


def test_tables_have_readable_columns_and_one_format_per_column():
    from common.tables import column_format, column_label

    rows = [["128", "1815.7386", "0.0002", "0.0605", "a_b"], ["1024", "5.25", "1.921e-06", "0.0061", "c"]]
    html = report.table_html("", ["batch_size", "fd_equal_epochs", "final_lr", "g_loss_epoch_std_last", "note"], rows)
    assert "<th>batch size</th><th>FD, equal epochs</th><th>final lr</th>" in html and "_<wbr>" not in html
    assert "<td>1815.74</td>" in html and "<td>5.25</td>" in html  # one format down the FD column
    assert "<td>2.00e-04</td>" in html and "<td>1.92e-06</td>" in html
    assert "<td>0.0605</td>" in html and "<td>0.0061</td>" in html
    assert column_label("fd_at_58_updates") == "FD at 58 updates" and column_label("test MSE [0,1]") == "test MSE [0,1]"
    assert column_format(["1", "12"]) == "d" and column_format(["1.0", "12.0"]) == ".0f"
    assert column_format(["0.95", "0.5"]) == ".3f" and column_format(["abc"]) is None
    n = report.WIDE_TABLE_COLUMNS + 1
    wide = report.table_html("", [f"c{i}" for i in range(n)], [["x"] * n])
    assert 'class="results wide"' in wide and "table.wide" in report.CSS


def test_table_placeholder_picks_renames_and_labels_columns(tmp_path):
    run = tmp_path / "outputs/course/part/r1"
    run.mkdir(parents=True)
    (run / "t.csv").write_text("schedule,fd_final,fd_at_40_updates,extra\nstep decay,12.3456,1.5,x\ncifar10,7,2,y\n")
    _update_json(run / "metrics.json", lambda d: d.update(n=40))
    body = ("{{ table: r/t | After {{ r.metrics.n }} updates. | schedule; fd_final = final FD :.3f; "
            "fd_at_*_updates = FD at equal updates; absent? = never shown | cifar10 -> stand-in data }}\n\n"
            "{{ table: r/t | | nothere }}\n")
    html = report.render_html(_mini(tmp_path, body), "Doe", tmp_path / "outputs")
    assert "<caption><b>Table 1.</b> After 40 updates.</caption>" in html
    assert "<th>schedule</th><th>final FD</th><th>FD at equal updates</th></tr>" in html and "extra" not in html
    assert "<td>12.346</td>" in html and "<td>7.000</td>" in html and "step decay" in html and "stand-in data" in html
    assert "(not yet run: make thing) (no column nothere in t)" in html


def test_placeholder_syntax_and_missing_key(tmp_path):
    run = tmp_path / "outputs/course/part/r1"
    _update_json(run / "metrics.json", lambda d: d.update(fd=3.14159, nested={"a b": {"x": 2}}, n=10000))
    _update_json(run / "config.json", lambda d: d.update(epochs=25))
    (run / "table.csv").parent.mkdir(parents=True, exist_ok=True)
    (run / "table.csv").write_text("model,E_q log p(x|z)\nVAE,-249.0123\n")  # a | inside a cell: read from the CSV
    body = ("FD {{ r.metrics.fd:.2f }}, raw {{ r.metrics.fd }}, {{ r.metrics.nested.a b.x }}, "
            "{{ r.config.epochs }} epochs, n={{ r.metrics.n }}, gone: {{ r.metrics.absent:.2f }}, by {{ name }}.\n\n"
            "{{ table: r/table }}\n\n{{ figure: r/none.png | a caption }}\n")
    html = report.render_html(_mini(tmp_path, body), "Doe", tmp_path / "outputs")
    assert "FD 3.14, raw 3.142, 2, 25 epochs, n=10000" in html and "by Doe" in html
    assert "(not yet run: make thing) (no absent in metrics.json)" in html
    assert "<th>E_q log p(x|z)</th>" in html and "<td>-249.0</td>" in html and '<td class="t nowrap">VAE</td>' in html
    assert "Figure 1.</b> a caption" in html and "(none.png)" in html
    assert "Built from quick runs" not in html and "Incomplete report: 2 placeholders" in html


def test_newest_full_run_is_used_and_quick_only_without_one(tmp_path):
    import os
    import time

    def make_run(name, v, quick, age):
        run = tmp_path / "outputs/course/part" / name
        _update_json(run / "metrics.json", lambda d: d.update(v=v))
        _update_json(run / "config.json", lambda d: d.update(quick=quick))
        t = time.time() - age
        for f in run.iterdir():
            os.utime(f, (t, t))

    make_run("quick", 0, True, age=100)
    html = report.render_html(_mini(tmp_path, "v = {{ r.metrics.v }}"), "Doe", tmp_path / "outputs")
    assert "v = 0" in html and "Built from quick runs" in html  # only a quick run: used, and said so
    make_run("old", 1, False, age=300)
    make_run("full", 2, False, age=200)
    html = report.render_html(_mini(tmp_path, "v = {{ r.metrics.v }}"), "Doe", tmp_path / "outputs")
    assert "v = 2" in html and "Built from quick runs" not in html
    assert "outputs/course/part" not in html  # a finished report names no folder of ours
    src, _ = report.fill_source(_mini(tmp_path, "v = {{ r.metrics.v }}"), "Doe", tmp_path / "outputs")
    assert src.runs["r"].folder == tmp_path / "outputs/course/part/full"


def test_math_is_kept_away_from_markdown(tmp_path):
    body = ("Inline $a_1 * b_2 * c_3$ and $\\mathbb{E}_{q}[x]$; cost \\$5.\n\n"
            "$$\n\\begin{aligned} x_{i}^{*} &= \\frac{p_{\\text{data}}}{p_{\\text{data}} + p_g} \\\\ y &= w < z \\end{aligned}\n$$\n\n"
            "Code: `a_b*c` and ordinary *emphasis*.\n")
    html = report.render_html(_mini(tmp_path, body, runs=""), "Doe", tmp_path / "outputs")
    assert "$a_1 * b_2 * c_3$" in html and "$\\mathbb{E}_{q}[x]$" in html
    assert "x_{i}^{*} &amp;= \\frac{p_{\\text{data}}}" in html and "y &amp;= w &lt; z" in html
    assert "<em>emphasis</em>" in html and html.count("<em>") == 1
    assert "jupyter_server_mathjax/static/MathJax.js" in html and "inlineMath" in html


@pytest.mark.skipif(not HAVE_PDF_TOOLS, reason=NO_PDF_REASON)
def test_report_pdf_renders_with_typeset_math(tmp_path):
    fake_runs(ROOT / "ee8520_hw2/report.md", tmp_path / "outputs", data=scenario("ee8520", 0))
    out = report.build_report("ee8520", "Doe", tmp_path / "outputs", tmp_path / "dist")
    pdf = out["pdf"]
    assert pdf == tmp_path / "dist/Doe_EE8520_F25.pdf" and pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")], check=True)
    page = np.asarray(Image.open(next(tmp_path.glob("page*.png"))).convert("L"))
    assert page.std() > 5 and (page < 128).mean() > 0.01  # text on the page
    first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "Built from quick runs" in first
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "$$" not in text and "\\frac" not in text and "Math Processing Error" not in text
