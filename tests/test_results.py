"""One naming of run folders (common.paths), the summary line every run ends with, the results on
record (common.results add) and the README tables generated from them. Tiny fake run folders: no
training, no data."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from common import courses, paths, results, summary
from common.summary import FRECHET, Headline
from helpers import ROOT


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    monkeypatch.setattr(paths, "OUTPUTS", out)
    monkeypatch.setattr(courses, "OUTPUTS", out)
    return out


@pytest.fixture
def record(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results")
    return tmp_path / "results"


GAN = (FRECHET, Headline("class_entropy", "class entropy (of 2.303)", unit="nats", fmt=".3f", better="higher"))


def fake_run(folder: Path, quick: bool = False, fd: float = 8.2912, epochs: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"quick": quick, "epochs": epochs, "threads": 2,
                                                    "device_resolved": "cpu", "precision_resolved": "bf16"}))
    (folder / "metrics.json").write_text(json.dumps({"frechet_distance": fd, "frechet_floor_train_vs_test": 0.5234,
                                                     "class_entropy": 2.2901, "epochs": epochs}))
    (folder / "history.json").write_text(json.dumps({"steps": [], "epochs": [{"epoch": e + 1, "seconds": 10.0 + e}
                                                                             for e in range(epochs)]}))
    return folder


# ---- the naming rule ----------------------------------------------------------------------------


def test_a_quick_run_is_the_full_runs_path_with_quick_appended(outputs):
    assert paths.run_path("c_hw1", "step1", "gan") == outputs / "c_hw1/step1/gan"
    assert paths.run_path("c_hw1", "step1", "gan", quick=True) == outputs / "c_hw1/step1/gan_quick"
    assert paths.run_path("c_hw1", "step1", "gan_quick", quick=True).name == "gan_quick"  # never twice
    assert paths.run_path("c_hw1", "step1", "gan", out_dir=outputs.parent / "mine", quick=True) == outputs.parent / "mine"
    with pytest.raises(ValueError):
        paths.run_path("c_hw1", "", "gan")
    # a run made without run_path (common.training.Run's guard): the run folder gets the suffix, sub-runs stay below it
    assert paths.quick_folder(outputs / "c/p/study/sub", True) == outputs / "c/p/study_quick/sub"
    assert paths.quick_folder(outputs / "c/p/study_quick/sub", True) == outputs / "c/p/study_quick/sub"
    assert paths.run_identity(outputs / "c/p/gan_quick/sub") == {"course": "c", "part": "p", "run": "gan", "quick": True}
    assert paths.run_identity(outputs.parent / "elsewhere") is None


def test_demo_listing_gallery_and_reports_find_quick_runs_by_the_same_name(outputs):
    from common.runs import is_quick_run, locate, resolve_run

    for name in ("gan", "gan_quick", "vae_quick"):
        (outputs / "c/p" / name).mkdir(parents=True)
    (outputs / "c/p/gan_quick/config.json").write_text("{}")  # named quick: quick, whatever its files say
    assert [r.name for r in courses.run_folders(outputs / "c", quick=True)] == ["gan_quick", "vae_quick"]
    assert [r.name for r in courses.run_folders(outputs / "c", quick=False)] == ["gan"]
    assert is_quick_run(outputs / "c/p/gan_quick")
    assert resolve_run(outputs / "c/p/gan") == outputs / "c/p/gan"  # the full run first
    assert resolve_run(outputs / "c/p/vae") == outputs / "c/p/vae_quick"  # else its quick twin
    assert resolve_run(outputs / "c/p/none") is None
    assert locate(outputs / "c/p", "vae/samples.png") == outputs / "c/p/vae_quick/samples.png"
    assert locate(outputs / "c/p", "gan/samples.png") == outputs / "c/p/gan/samples.png"


def _course_of(call: ast.Call, tree: ast.Module, folder: Path):
    """The value of a run_dir/run_path call's course argument, read from the script (or the sibling module it imports)."""
    arg = call.args[0]
    if isinstance(arg, ast.Constant):
        return arg.value
    name = arg.attr if isinstance(arg, ast.Attribute) else arg.id
    for source in [tree] + [ast.parse(p.read_text()) for p in sorted(folder.glob("*.py"))]:
        for node in source.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    names = [target] if isinstance(target, ast.Name) else getattr(target, "elts", [])
                    values = [node.value] if isinstance(target, ast.Name) else getattr(node.value, "elts", [])
                    for t, v in zip(names, values):
                        if isinstance(t, ast.Name) and t.id == name and isinstance(v, ast.Constant):
                            return v.value
    return None


@pytest.mark.parametrize("course", courses.courses(), ids=lambda c: c.folder)
def test_every_script_names_its_runs_by_the_one_rule(course):
    """Each run_dir/run_path call names the course by its folder, and passes quick= (benchmarks
    aside); each write_summary call names the run's headline numbers."""
    calls = 0
    for script in sorted(course.path.glob("*.py")):
        tree = ast.parse(script.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "write_summary":
                assert len(node.args) >= 2 or any(k.arg == "headline" for k in node.keywords), \
                    f"{script.relative_to(ROOT)}:{node.lineno}: write_summary without the run's headline numbers"
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("run_dir", "run_path"):
                calls += 1
                where = f"{script.relative_to(ROOT)}:{node.lineno}"
                assert _course_of(node, tree, course.path) == course.folder, f"{where}: the course is not {course.folder!r}"
                part = node.args[1] if len(node.args) > 1 else None
                if not (isinstance(part, ast.Constant) and part.value == "bench"):
                    assert any(k.arg == "quick" for k in node.keywords), f"{where}: no quick= (a smoke run would share the full run's folder)"
    assert calls, f"{course.folder}: no script makes a run folder"


# ---- the summary line -----------------------------------------------------------------------------


def test_a_run_ends_with_a_one_line_summary(outputs):
    run = fake_run(outputs / "ee8520_hw2/step1/gan")
    path = summary.write_summary(run, GAN)
    text = path.read_text()
    assert path.name == "summary.json" and text.count("\n") == 1
    s = json.loads(text)
    assert (s["course"], s["part"], s["run"], s["quick"]) == ("ee8520_hw2", "step1", "gan", False)
    assert s["precision"] == "bf16" and s["epochs"] == 3 and s["device"] == "cpu" and s["machine"]
    assert s["train_seconds"] == 33.0 and isinstance(s["threads"], int) and s["date"][:2] == "20"
    fd = s["headline"][0]
    assert (fd["label"], fd["text"], fd["floor_text"], fd["better"]) == ("Fréchet distance", "8.29", "0.52", "lower")
    assert s["headline"][1]["text"] == "2.290 nats"
    quick = json.loads(summary.write_summary(fake_run(outputs / "ee8520_hw2/step1/gan_quick", quick=True)).read_text())
    assert quick["quick"] is True and quick["run"] == "gan"


def test_headline_keys_with_wildcards_sub_runs_and_percentages(tmp_path):
    study = tmp_path / "study"
    for name, fd in (("a", 3.0), ("b", 4.5)):
        (study / name).mkdir(parents=True)
        (study / name / "metrics.json").write_text(json.dumps({"frechet_distance": fd, "frechet_floor_train_vs_test": 1}))
    (study / "metrics.json").write_text(json.dumps({"runs": {"128": {"fd": 7.25}, "256": {"fd": 9.5}},
                                                    "cond": {"class_accuracy": 0.99312}}))
    rows = summary.headline_numbers(study, (
        Headline("*/frechet_distance", "{}: FD", floor="frechet_floor_train_vs_test", fmt=".1f"),
        Headline("runs.*.fd", "batch {}: FD"),
        Headline("cond.class_accuracy", "class accuracy", unit="%"),
        Headline("absent", "nothing")))
    assert [(r["label"], results.number_text(r)) for r in rows] == [
        ("a: FD", "3.0 (floor 1.0)"), ("b: FD", "4.5 (floor 1.0)"), ("batch 128: FD", "7.25"),
        ("batch 256: FD", "9.5"), ("class accuracy", "99.3%")]


def test_every_manifest_run_kind_belongs_to_a_titled_part():
    for course in courses.courses():
        for kind in course.runs:
            part = kind.path.split("/")[0]
            assert part in dict(course.parts), f"{course.folder}: run {kind.path} of a part without a title"


# ---- results on record ----------------------------------------------------------------------------


def test_add_puts_full_runs_on_record_and_refuses_quick_ones(outputs, record):
    full = fake_run(outputs / "ee8520_hw2/step1/gan")
    summary.write_summary(full, GAN)
    old = {"course": "ee8520_hw2", "part": "step1", "run": "gan", "status": results.NOT_RERUN, "device": "cpu",
           "headline": [{"label": "Fréchet distance", "value": 9.1, "text": "9.1"}]}
    results.save([old, {**old, "device": "cuda"}, {**old, "run": "ablations"}])
    results.add([full])
    lines = (record / "ee8520_hw2.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the measured record replaced the run's "not yet re-run" one on a CPU, not on a GPU
    measured = [json.loads(x) for x in lines if json.loads(x).get("status") != results.NOT_RERUN]
    assert len(measured) == 1 and measured[0]["headline"][0]["text"] == "8.29"
    results.add([full])  # the same summary twice: kept once
    assert len(results.load("ee8520_hw2")) == 3
    with pytest.raises(ValueError, match="quick run"):
        results.add([fake_run(outputs / "ee8520_hw2/step1/gan_quick", quick=True)])
    empty = outputs / "ee8520_hw2/step1/empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a finished run"):
        results.add([empty])
    with pytest.raises(ValueError, match="not a run folder"):
        results.add([fake_run(outputs.parent / "elsewhere")])


def test_a_run_measured_before_summaries_is_entered_from_its_metrics(outputs, record):
    run = fake_run(outputs / "rdfia_tp2/cgan/default", epochs=2)
    (run / "metrics.json").write_text(json.dumps({"frechet_distance": 8.29, "frechet_floor_train_vs_test": 0.52,
                                                  "class_accuracy": 0.993}))
    [r] = results.add([run], machine_name="AMD EPYC 9654")
    assert r["source"] == "metrics.json" and r["machine"] == "AMD EPYC 9654" and r["epochs"] == 2
    assert r["headline"] == [] and r["train_seconds"] == 21.0  # the script's headline: write its summary.json first
    summary.write_summary(run, (FRECHET, Headline("class_accuracy", "class accuracy", unit="%")), in_process=False)
    [r] = results.add([run])
    assert [h["text"] for h in r["headline"]] == ["8.29", "99.3%"] and r["threads"] == 2


def test_the_command_says_one_line_and_exits_2_on_a_bad_folder(outputs, record, capsys):
    with pytest.raises(SystemExit) as exc:
        results.main(["add", str(outputs / "nothing")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a finished run" in err and "\n" not in err


# ---- README tables ----------------------------------------------------------------------------------


def test_tables_between_markers_are_generated_from_the_record(outputs, record):
    summary.write_summary(fake_run(outputs / "ee8520_hw2/step1/gan"), GAN)
    results.add([outputs / "ee8520_hw2/step1/gan"])
    results.save(results.load() + [{"course": "ee8520_hw2", "part": "step2", "run": "pixelcnn", "device": "cuda",
                                    "machine": "NVIDIA H100", "status": results.NOT_RERUN, "epochs": 20,
                                    "train_seconds": 5400, "headline": [{"label": "test NLL", "text": "81.3 nats"}]}])
    text = ("# Title\n\n<!-- results:ee8520_hw2 -->\nold table\n<!-- /results -->\n\nprose\n\n"
            "<!-- results:overview -->\n<!-- /results -->\n")
    new = results.render(text)
    assert "old table" not in new and new.startswith("# Title\n\n<!-- results:ee8520_hw2 -->\n") and "\nprose\n" in new
    assert "Step 1: MLP GAN | gan | Fréchet distance 8.29 (floor 0.52); class entropy (of 2.303) 2.290 nats | 3 |" in new
    assert "| 33 s (11 s an epoch) | Intel" in new or "| 33 s (11 s an epoch) |" in new
    assert "1.5 h (4 min an epoch), NVIDIA H100 (not yet re-run)" in new  # the overview's GPU column
    assert results.render(new) == new  # rendering is stable: a current README stays as it is


def test_the_courses_table_gives_each_course_one_row_of_its_parts(outputs, record):
    """``results:courses``: per course its command, what it makes and its upload from course.toml, and
    per part the main run's time on each kind of device and its first headline number (a number not
    re-run since it was typed in starred)."""
    summary.write_summary(fake_run(outputs / "ee8520_hw2/step1/gan"), GAN)
    results.add([outputs / "ee8520_hw2/step1/gan"])
    results.save(results.load() + [
        {"course": "ee8520_hw2", "part": "step1", "run": "ablations", "device": "cpu", "train_seconds": 7200,
         "headline": [{"label": "baseline: Fréchet distance", "text": "253"}]},
        {"course": "ee8520_hw2", "part": "step3", "run": "vae", "device": "cuda", "status": results.NOT_RERUN,
         "train_seconds": 158, "headline": [{"label": "test ELBO", "text": "-141.02 nats"}]}])
    table = results.table("courses")
    rows = table.splitlines()
    assert len(rows) == 2 + len(courses.courses())
    [row] = [r for r in rows if r.startswith("| EE 8520")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "`make ee8520`" and "PixelCNN" in cells[2]
    assert cells[4] == "Step 1 33 s"  # the main run (step1/gan), not the later ablations
    assert cells[5] == "Step 3 3 min*" and cells[6] == ("Step 1: Fréchet distance 8.29 (floor 0.52); "
                                                          "Step 3: test ELBO -141.02 nats*")


def test_the_bench_table_is_the_last_recorded_make_bench(record):
    assert "No benchmark on record yet" in results.table("bench")
    record.mkdir(parents=True, exist_ok=True)
    (record / "bench.md").write_text("# Benchmarks\n\nMachine: x\n\n| benchmark | speedup |\n|---|---|\n| a | 2.00x |\n")
    assert results.table("bench") == "Machine: x\n\n| benchmark | speedup |\n|---|---|\n| a | 2.00x |\n"


def test_a_zip_table_lists_what_the_zip_build_ships():
    table = results.table("zip:ee8520_hw2")
    files = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert "models/AR.py" in files and "hw2_step2_main.py" in files and not any("bench" in f for f in files)
    total = int(table.splitlines()[-1].split("|")[2])
    assert total == sum(int(line.split("|")[2]) for line in table.splitlines() if line.startswith("| `"))
    with pytest.raises(ValueError):
        results.table("zip:csc8851_hw2")  # its upload is a notebook, not a zip


def test_committed_readmes_hold_current_results_tables():
    stale = results.stale()
    assert not stale, f"run `make results` (python -m common.results tables): stale tables in {stale}"


def test_training_time_of_a_run_of_a_study_and_of_side_by_side_sub_runs(tmp_path):
    study = tmp_path / "study"
    for name, seconds in (("a", [10.0, 11.0]), ("b", [20.0])):
        fake_run(study / name, epochs=len(seconds))
        (study / name / "history.json").write_text(json.dumps({"epochs": [{"seconds": s} for s in seconds]}))
    assert summary.training_seconds(study) == 41.0 and summary.trained_runs(study) == 2  # a study: its runs, summed
    joined = fake_run(tmp_path / "joined", epochs=2)  # its own history wins over its parts'
    (joined / "history.json").write_text(json.dumps({"epochs": [{"seconds": 30, "seconds_wall": 16}, {"seconds": 28}]}))
    fake_run(joined / "part")
    assert summary.training_seconds(joined) == 44.0 and summary.trained_runs(joined) == 1
    assert summary.summarize(study, train_seconds=20.04)["train_seconds"] == 20.0  # side by side: the script says
