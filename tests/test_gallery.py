"""common.gallery (outputs/index.html) and the list of run folders `make demo` ends with: fake run
folders in tmp_path, read through the course manifests; no training, no data."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common import deliver, gallery
from common.summary import FRECHET, Headline, write_summary
from common.courses import courses, figures
from helpers import ROOT


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _age(folder: Path, seconds: float) -> None:
    t = time.time() - seconds
    for f in folder.rglob("*"):
        os.utime(f, (t, t))


def fake_outputs(root: Path) -> list[Path]:
    """EE 8520's Step 1 (a full run, and a newer quick one) and Step 3 sweep (quick), and a notebook."""
    gan, quick = root / "ee8520_hw2/step1/gan", root / "ee8520_hw2/step1/gan_quick"
    sweep = root / "ee8520_hw2/step3/sweep_quick"
    pngs = [gan / "generated_images.png", gan / "loss_monitoring.png", quick / "generated_images.png",
            sweep / "default/VAE_recon.png", sweep / "sweep_elbo_curves.png",
            root / "notebooks/nb_quick/figures_quick/f.png"]
    for i, p in enumerate(pngs):
        _png(p, seed=i)
    _png(gan / "imgs/generated_images.png")  # the skeleton's copy: shown once
    _json(gan / "config.json", {"quick": False, "epochs": 100, "data_root": str(ROOT / "data")})
    _json(gan / "metrics.json", {"frechet_distance": 154.234, "frechet_floor_train_vs_test": 3.391, "class_entropy": 2.289,
                                 "nested": {"judge_confidence": 0.93}})
    _json(quick / "config.json", {"quick": True})
    _json(quick / "metrics.json", {"frechet_distance": 1532.9, "frechet_floor_train_vs_test": 25.7, "class_entropy": 0.0})
    _json(sweep / "default/config.json", {"quick": True})
    _json(sweep / "default/metrics.json", {"test_elbo_nats": -273.14})
    gan_headline = (FRECHET, Headline("class_entropy", "class entropy", unit="nats", fmt=".3f", better="higher"))
    write_summary(gan, gan_headline)
    write_summary(quick, gan_headline)
    write_summary(sweep, (Headline("*/test_elbo_nats", "{}: test ELBO", unit="nats", fmt=".2f"),))
    (sweep / "sweep_table.md").write_text("### Sweep table\n\n| run | test ELBO (nats) |\n|---|---|\n| default | -273.1 |\n")
    _age(gan, 600)  # the quick run is newer; the full run is still the one each card shows
    return pngs


def test_gallery_shows_headline_numbers_figures_and_folded_metrics(tmp_path):
    out = tmp_path / "outputs"
    pngs = fake_outputs(out)
    page = gallery.build_gallery(out)
    html = page.read_text()
    assert page == out / "index.html"
    for p in pngs:
        assert f'src="{p.relative_to(out).as_posix()}"' in html  # every figure, by relative path
    assert html.count('src="ee8520_hw2/step1/gan/imgs/generated_images.png"') == 0
    assert str(tmp_path) not in html and str(ROOT) not in html  # no absolute path anywhere
    assert "&quot;data_root&quot;: &quot;./data&quot;" in html
    assert "Step 1: MLP GAN" in html and "Step 3: MLP VAE" in html  # the parts' titles from course.toml
    assert html.count('<section id="') == 2 and 'id="ee8520_hw2"' in html and 'id="notebooks"' in html
    # the card of Step 1 shows the full run: headline numbers with their labels, units and floors, and its best figure
    card = re.search(r'<div class="card">(.*?)</div></div>', html, re.S).group(1)
    assert "<code>gan</code>" in card and "full run" in card
    assert "Fréchet distance" in card and "<b>154.23</b>" in card and "floor 3.39" in card
    assert "class entropy" in card and "2.289 nats" in card and 'src="ee8520_hw2/step1/gan/generated_images.png"' in card
    assert "default: test ELBO" in html and "-273.14 nats" in html and "Sweep table" in html
    # raw metric keys only inside the folded metrics.json
    assert '<details class="json"><summary>metrics.json' in html and "&quot;judge_confidence&quot;: 0.93" in html
    unfolded = re.sub(r'<details class="json">.*?</details>', "", html, flags=re.S)
    assert "frechet_distance" not in unfolded and "judge_confidence" not in unfolded
    assert "quick run" in html and "full run" in html


def test_gallery_without_runs_says_what_to_run(tmp_path):
    html = gallery.build_gallery(tmp_path / "outputs").read_text()
    assert "make demo" in html and "<section" not in html


@pytest.mark.skipif(deliver.chromium() is None, reason="Chromium not installed (apt-get install chromium)")
def test_gallery_renders_in_headless_chromium(tmp_path):
    import tempfile

    fake_outputs(tmp_path / "outputs")
    page = gallery.build_gallery(tmp_path / "outputs")
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([deliver.chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--allow-file-access-from-files", "--virtual-time-budget=3000", "--window-size=1280,800",
                        f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.std() > 10  # not a blank page
    assert (np.abs(np.diff(img, axis=2)).sum(2) > 60).mean() > 0.01  # the colourful fake figures are drawn


def test_demo_lists_each_quick_run_folder_and_its_figures(tmp_path):
    course = courses()[0]
    for run, pngs in (("a/default_quick", 2), ("a/default", 1), ("b/x_quick", 0)):
        (tmp_path / course.outputs / run / "imgs").mkdir(parents=True)
        for i in range(pngs):
            (tmp_path / course.outputs / run / "imgs" / f"{i}.png").touch()
    (tmp_path / "notebooks" / "nb_quick" / "figures_quick").mkdir(parents=True)  # a notebook's own layout
    (tmp_path / "notebooks" / "nb_quick" / "figures_quick" / "f.png").touch()
    quick = figures(quick=True, outputs=tmp_path)
    assert quick[0] == f"{course.title}:" and "notebooks:" in quick
    assert any(line.endswith("default_quick/  (2 PNGs)") for line in quick)
    assert any(line.endswith("x_quick/  (0 PNGs)") for line in quick)
    assert any(line.endswith("nb_quick/figures_quick/  (1 PNG)") for line in quick)
    assert not any(line.endswith("a/default/  (1 PNG)") for line in quick)
    assert figures(quick=False, outputs=tmp_path)[1].endswith("default/  (1 PNG)")
    assert figures(quick=True, outputs=tmp_path / "none") == []
