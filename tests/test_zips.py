"""Submission zips (``common.zips``): each holds its course's scripts, the course modules they
import and only the helper code they reach (pruned into ``utils/``; for a course whose scripts must
stand alone, one file per script built from its template), a one-page README and requirements.txt; no data,
no other course, nothing of the repository. Unzipped, every script runs in quick mode under a
Python that cannot import the repository, from the unzipped folder."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from common import zips
from common.courses import courses, find
from common.metrics import _judge_path
from helpers import ROOT, full_data_available

ZIPPED = sorted(c.folder for c in courses() if c.zip)
# Courses whose zip holds scripts built from templates (zip_templates): each runs alone, with plain
# flags (--quick) and torchvision's ./data, tested below; the others run with the shared flags.
TEMPLATED = [c for c in ZIPPED if zips._settings(find(c)).get("zip_templates")]
SCRIPTS = [(c, s) for c in ZIPPED if c not in TEMPLATED for s in zips.entry_scripts(find(c))]
PART2 = ["part2_training_stages.py", "part2_batch_sizes.py", "part2_lr_schedules.py"]  # Assignment 3, Part II

# How each course is named; a zip may name its own course only.
COURSE_NAMES = {"ee8520_hw2": r"EE ?8520|ee8520", "csc8851_hw2": r"CSC ?8851|csc8851",
                "assignment3": r"Assignment[ _]?3|assignment3", "ece685d_hw5": r"ECE ?685D?|ece685d",
                "rdfia_tp2": r"RDFIA|rdfia"}
# The repository and its history, which a grader who has only the zip does not have.
FOREIGN = [r"\bissues?\b", r"\bsessions?\b", r"\bagents?\b", r"`make\b", r"\bMakefile\b",
           r"\bmake (?:judges|bench|test|demo|setup|zips?|reports?|gallery|results)\b", r"\bmake [a-z0-9]+-[a-z0-9-]+",
           r"\bbench", r"\.\./", r"\bshared/", r"/work/", r"\btests?/", r"\bcommon[./]", r"\bcommon import\b",
           r"\bimport common\b", r"course\.toml", r"\bdist/", r"\.venv", r"pyproject"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each course's zip, built once: course folder -> (unzipped folder, its file names)."""
    out = {}
    base = tmp_path_factory.mktemp("zips")
    for course in ZIPPED:
        path = zips.build_zip(course, "Doe", dist_dir=base / "dist")
        stem = find(course).zip.format(name="Doe")
        assert path == base / "dist" / f"{stem}.zip"
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            z.extractall(base / course)
        parts = [PurePosixPath(n).parts for n in names]
        assert {p[0] for p in parts} == {stem}  # one top folder named like the zip
        out[course] = (base / course / stem, {"/".join(p[1:]) for p in parts})
    return out


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A Python with this environment's PyPI packages but not the repository: a virtual
    environment whose site-packages points at ours through a ``.pth`` line, so the editable
    install's finder (a ``.pth`` of ours) never runs."""
    env = tmp_path_factory.mktemp("bare") / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    theirs = next((env / "lib").glob("python*/site-packages"))
    (theirs / "pypi_packages.pth").write_text("\n".join(ours) + "\n")
    return env / "bin" / "python"


def _env(data_root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HW_QUICK", "HW_OUTPUTS")}
    return {**env, "HW_DATA_ROOT": str(data_root), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("course", ZIPPED)
def test_zip_holds_the_scripts_and_the_code_they_use(course, built):
    folder, inside = built[course]
    info = find(course)
    scripts = zips.zip_scripts(info)
    code = sorted(n for n in inside if n.endswith(".py"))
    assert set(scripts) <= set(code) and not any(Path(n).name.startswith("bench") for n in code)
    assert inside - set(code) == {"README.md", "requirements.txt"}  # code only: no data, outputs or templates
    if course in TEMPLATED:
        assert code == sorted(scripts)  # one file per script, each standing alone
    for name in code:
        tree = ast.parse((folder / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "common" not in imported, name
    assert sum((folder / n).stat().st_size for n in inside) < 1_000_000


@pytest.mark.parametrize("course", ZIPPED)
def test_zip_names_no_other_course_and_nothing_of_the_repository(course, built):
    folder, inside = built[course]
    others = "|".join(p for c, p in COURSE_NAMES.items() if c != course)
    assert course in COURSE_NAMES
    for name in sorted(inside):
        for i, line in enumerate((folder / name).read_text().splitlines(), 1):
            assert not re.search(others, line), f"{name}:{i} names another course: {line.strip()}"
            for pattern in FOREIGN:
                assert not re.search(pattern, line), f"{name}:{i} ({pattern}): {line.strip()}"


@pytest.mark.parametrize("course", ZIPPED)
def test_readme_and_requirements(course, built):
    folder, inside = built[course]
    text = (folder / "README.md").read_text()
    assert "{files}" not in text and "{versions}" not in text and "{times}" not in text
    if "{times}" in (find(course).path / "zip_readme.md").read_text():  # each part's time, from the record
        for _, title in find(course).parts:
            assert f"- {title}: CPU " in text, title
    for name in (n for n in inside if n.endswith(".py")):
        assert f"`{name}` | {len((folder / name).read_text().splitlines())} |" in text  # the file table
    assert f"torch {importlib.metadata.version('torch')}" in text
    for script in zips.zip_scripts(find(course)):
        assert f"python {script}" in text  # how to run each part
    assert len(text.splitlines()) < 80  # one page
    reqs = (folder / "requirements.txt").read_text()
    assert "torch==" in reqs and "pytest" not in reqs and "nbconvert" not in reqs


def test_zip_names_follow_the_handouts(tmp_path):
    assert zips.build_zip("ee8520", "Doe", tmp_path).name == "Doe_EE8520_F25.zip"
    with pytest.raises(SystemExit, match="csc8851_hw2 has no zip"):  # its upload is the notebook and its PDF
        zips.build_zip("csc8851_hw2", "Doe", tmp_path)


@pytest.mark.skipif(not full_data_available(), reason="needs HW_DATA_ROOT with MNIST (CI sets it)")
@pytest.mark.parametrize("course,script", SCRIPTS)
def test_unzipped_script_runs_on_its_own(course, script, built, bare_python):
    folder, inside = built[course]
    env = _env(Path(os.environ["HW_DATA_ROOT"]))
    where = subprocess.run([str(bare_python), "-c", "import common"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.returncode != 0 and "No module named 'common'" in where.stderr  # the repository is out of reach
    if any(n.startswith(f"{zips.HELPERS}/") for n in inside):
        where = subprocess.run([str(bare_python), "-c", f"import {zips.HELPERS}; print({zips.HELPERS}.__file__)"],
                               cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert where.returncode == 0 and Path(where.stdout.strip()).resolve().is_relative_to(folder.resolve())
    # Judge weights are a cache, not code: reuse the repository's when there are some (a quick
    # judge would otherwise be trained first, ~40 s of CPU).
    for cached in {_judge_path(d, q) for d in ("mnist", "fashion") for q in (False, True)}:
        if cached.exists():
            (folder / "data" / "cache").mkdir(parents=True, exist_ok=True)
            shutil.copy(cached, folder / "data" / "cache" / cached.name)
    before = set(ROOT.joinpath(course).iterdir())
    proc = subprocess.run([str(bare_python), script, "--quick", "--threads", "1"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    assert (folder / "outputs").is_dir()  # the run folders are under the unzipped folder
    assert set(ROOT.joinpath(course).iterdir()) == before


def test_unzipped_quick_run_without_data_says_so_in_one_line(built, bare_python, tmp_path):
    folder, _ = built["ee8520_hw2"]
    empty = tmp_path / "no-data"
    empty.mkdir()
    empty.chmod(0o555)  # read-only: nothing can be downloaded into it either
    proc = subprocess.run([str(bare_python), "hw2_step1_main.py", "--quick"], cwd=folder, env=_env(empty),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "MNIST" in err


# --------------------------------------------------------------------------------------------
# Assignment 3, Part II: three code files, one per study, each a plain script that runs alone


def test_part2_is_three_plain_scripts_of_homework_length(built):
    folder, inside = built["assignment3"]
    assert sorted(n for n in inside if n.endswith(".py")) == sorted(PART2)
    for name in PART2:
        text = (folder / name).read_text()
        lines = text.splitlines()
        assert 150 <= len(lines) <= 300, f"{name}: {len(lines)} lines"
        assert max(map(len, lines)) <= 122, name
        assert "#| inline:" not in text and "import common" not in text
        tree = ast.parse(text)
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        # the GAN of Part I, its loop and the study, all in the file
        assert {"Generator", "Discriminator", "make_optimizers", "train_epoch", "d_loss_real", "d_loss_fake",
                "g_loss_fn", "set_requires_grad", "sample", "frechet_distance", "main"} <= defined, name
        assert "class Generator(nn.Sequential)" in text and "class Discriminator(nn.Sequential)" in text
        assert "transforms.Normalize((0.5,), (0.5,))" in text and "DataLoader(" in text
        assert ast.unparse(tree.body[-1]) == "if __name__ == '__main__':\n    main()"
        names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert len(names) == len(set(names)), f"{name} defines a name twice"
    schedules = (folder / "part2_lr_schedules.py").read_text()
    assert "StepLR(" in schedules and "def warmup_cosine" in schedules and "CosineAnnealingLR" in schedules
    assert "BATCH_SIZES = [128, 256, 512, 1024]" in (folder / "part2_batch_sizes.py").read_text()


def test_part2_expansion_refuses_an_import_the_template_lacks(tmp_path):
    template = tmp_path / "t.py"
    template.write_text('"""A template."""\n#| inline: assignment3/mlp_gan.py: make_optimizers\n')
    with pytest.raises(zips.ZipError, match="import torch"):
        zips.expand_template(template)
    template.write_text('"""A template."""\nimport torch\n\n#| inline: assignment3/mlp_gan.py: no_such_name\n')
    with pytest.raises(zips.ZipError, match="no_such_name"):
        zips.expand_template(template)


def test_part2_scripts_run_alone_on_torchvision_data_in_their_folder(built, bare_python, tmp_path):
    """Each script runs with --quick under a Python that cannot import the repository, from a copy
    of the unzipped folder whose ./data holds the embedded MNIST sample as torchvision's files."""
    from common.deliver import place_data

    folder = tmp_path / "upload"
    shutil.copytree(built["assignment3"][0], folder)
    place_data(folder, quick=True)
    data_before = {p: p.stat().st_mtime for p in (folder / "data").rglob("*")}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HW_DATA_ROOT", "HW_QUICK")}
    env["OMP_NUM_THREADS"] = "1"
    where = subprocess.run([str(bare_python), "-c", "import common"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.returncode != 0 and "No module named 'common'" in where.stderr

    def run(script):
        proc = subprocess.run([str(bare_python), script, "--quick"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    # II.3 first, alone: without II.2's numbers it says so and uses its own batch size
    out = run("part2_lr_schedules.py")
    assert "batch_sizes.json is missing" in out and "Verdict at batch size 128:" in out
    out = run("part2_training_stages.py")
    assert "FD per stage" in out and ("The last stage was the best" in out or "The best stage was epoch" in out)
    out = run("part2_batch_sizes.py")
    assert "Least stable: batch" in out and "Lowest FD: batch" in out
    numbers = json.loads((folder / "results_quick" / "batch_sizes.json").read_text())
    assert sorted(map(int, numbers["runs"])) == [128, 256, 512, 1024] and numbers["least_stable"] in (128, 256, 512, 1024)
    assert f"Least stable: batch {numbers['least_stable']} " in out  # the sentence names the saved number
    figures = {p.name for p in (folder / "results_quick").glob("*.png")}
    assert figures == {"stages.png", "stages_curves.png", "batch_sizes_losses.png", "batch_sizes_samples.png",
                       "lr_schedules_curves.png", "lr_schedules_samples.png"}
    assert all((folder / "results_quick" / f).stat().st_size > 10_000 for f in figures)
    assert not (folder / "results").exists()  # a smoke run never touches a full run's folder
    assert {p: p.stat().st_mtime for p in (folder / "data").rglob("*")} == data_before  # read, not downloaded
