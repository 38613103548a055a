"""common.bench's share-of-peak helpers (issue 20): FLOP counts against the analytic counts of a
tiny matmul and convolution, the peak measurement, the summary lines make bench parses, and one
course benchmark's quick run printing them. Timings are never asserted."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from common import bench as B
from helpers import ROOT


def test_count_flops_matmul_is_2mnk():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert B.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_count_flops_conv_forward_and_backward():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    forward = 2 * 2 * 5 * 3 * 9 * 8 * 8  # 2 x N x Cout x Cin x k x k x H x W
    x = torch.randn(2, 3, 8, 8)
    assert B.count_flops(lambda: conv(x)) == forward
    # backward: the weight gradient (one forward's worth) and, only where asked for, the input's
    assert B.count_flops(lambda: conv(x).sum().backward()) == 2 * forward
    xg = x.clone().requires_grad_(True)
    assert B.count_flops(lambda: conv(xg).sum().backward()) == 3 * forward


def test_count_flops_survives_a_gradient_penalty():
    """autograd.grad with create_graph (WGAN-GP) fails under FlopCounterMode's module tracker."""
    lin = nn.Linear(6, 1, bias=False)
    x = torch.randn(4, 6, requires_grad=True)

    def step():
        (g,) = torch.autograd.grad(lin(x).sum(), x, create_graph=True)
        (g.norm(2, dim=1) - 1).pow(2).mean().backward()

    assert B.count_flops(step) >= 2 * 4 * 6 * 1


def test_count_step_flops_leaves_the_state_alone():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(7, 5)

    def step(m, o):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()

    # addmm forward + weight gradient (the input needs none): 2 x (2 x 7 x 5 x 3)
    assert B.count_step_flops(step, model, opt) == 2 * (2 * 7 * 5 * 3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not opt.state  # the copy's optimizer stepped, not this one


def test_peak_meter_and_share_line(capsys):
    peak = B.PeakMeter("fp32")
    peak.samples["fp32"] = [90.0, 100.0, 130.0]  # GFLOP/s per thread, as if measured: median 100
    threads = torch.get_num_threads()  # the peak scales with the loop's threads
    share = B.print_share("toy loop", 50e9, 1.0, "fp32", peak)
    out = capsys.readouterr().out.splitlines()
    assert share == pytest.approx(0.5 / threads) and peak.best("fp32") == 130.0
    assert out[-1] == f"toy loop share of peak: {50 / threads:.1f}%"
    assert B.parse_summary("\n".join(out + ["toy loop speedup: 2.50x"])) == {
        "toy loop": {"share": pytest.approx(0.5 / threads, abs=1e-3), "ratio": 2.5}}
    assert B.matmul_gflops(torch.float32, n=128, repeats=1) > 0
    assert B.matmul_gflops(torch.bfloat16, n=128, repeats=1) > 0


def test_hardware_precisions_leave_out_bf16_where_the_cpu_emulates_it(monkeypatch):
    """An AVX2-only CPU computes a bf16 matmul hundreds of times slower than fp32: make bench
    must neither sample its peak nor time a bf16 loop there (it took minutes per sample)."""
    from common import training as T
    cpu = torch.device("cpu")
    monkeypatch.setattr(T, "cpu_supports_bf16", lambda: False)
    assert B.hardware_precisions(cpu) == ("fp32",)
    monkeypatch.setattr(T, "cpu_supports_bf16", lambda: True)
    assert B.hardware_precisions(cpu) == ("fp32", "bf16")


def test_parse_summary_reads_every_benchmark_of_a_script():
    text = ("noise\ncgan epoch share of peak: 76.8%\ndcgan epoch share of peak: 56.5%\n"
            "dcgan epoch share of memory roofline: 41.0%\ncgan epoch speedup: 2.55x\ndcgan epoch speedup: 2.17x\n")
    assert B.parse_summary(text) == {"cgan epoch": {"share": pytest.approx(0.768), "ratio": 2.55},
                                     "dcgan epoch": {"share": pytest.approx(0.565), "ratio": 2.17,
                                                     "memory": pytest.approx(0.41)}}
    names = {n for _, _, targets in B.course_benchmarks() for n in targets}
    assert {"pixelcnn training", "cgan epoch", "dcgan epoch", "wgan-gp epoch", "mlp gan epoch",
            "step1 gan epoch", "ece dcgan epoch"} <= names


def test_side_by_side_timing_prints_share_then_speedup(capsys):
    torch.manual_seed(0)
    lin = nn.Linear(8, 4, bias=False)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    seen = []

    def step(model, optimizer, batch):
        seen.append(len(batch[0]))
        optimizer.zero_grad()
        model(batch[0]).pow(2).mean().backward()
        optimizer.step()

    batches = [(torch.randn(16, 8),), (torch.randn(16, 8),), (torch.randn(5, 8),)]
    loops = [B.TimedLoop("baseline", step, (lin, opt), batches, False),
             B.TimedLoop("ours", step, (lin, opt), batches, True)]
    peak = B.PeakMeter("fp32")
    peak.samples["fp32"] = [100.0]  # as if measured: no 2048^3 products in a unit test
    peak.sample = lambda: None
    per_batch = B.time_side_by_side(loops, batches=7, chunk=3, warmup=1, peak=peak)
    assert len(seen) == 2 * (1 + 7) and set(per_batch) == {"baseline", "ours"}  # round and round the loader
    assert all(v > 0 for v in per_batch.values())
    before = lin.weight.detach().clone()
    ratio = B.print_side_by_side("toy", loops, per_batch, 100, "fp32", peak)
    assert torch.equal(lin.weight, before)  # FLOPs counted on copies
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"toy speedup: {ratio:.2f}x" and out[-2].startswith("toy share of peak: ")
    assert B.parse_summary("\n".join(out))["toy"]["ratio"] == pytest.approx(ratio, abs=0.01)


def test_dcgan_bench_quick_prints_share_and_speedup_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HW_QUICK"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "bench_dcgan.py", "--quick", "--threads", "1", "--out-dir", str(tmp_path)],
                          cwd=ROOT / "rdfia_tp2", env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 2:  # no full MNIST here (the benchmark needs it)
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("dcgan epoch speedup: ")
    found = B.parse_summary(proc.stdout)
    for name in ("cgan epoch", "dcgan epoch"):
        assert found[name]["ratio"] > 0 and 0 < found[name]["share"]


@pytest.mark.parametrize("folder, script, name, args", [
    ("ee8520_hw2", "bench_step1_gan.py", "step1 gan epoch", ["--batches", "4", "--chunk", "2", "--warmup", "1"]),
    ("ece685d_hw5", "bench_dcgan.py", "ece dcgan epoch", ["--batches", "1", "--chunk", "1", "--warmup", "0"]),
])
def test_mlp_gan_and_ece_dcgan_benches_print_share_and_speedup(folder, script, name, args):
    env = {k: v for k, v in os.environ.items() if k != "HW_QUICK"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT / folder, env=env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode == 2:  # no full MNIST here (the benchmark needs it)
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(f"{name} speedup: ")
    found = B.parse_summary(proc.stdout)[name]
    assert found["ratio"] > 0 and 0 < found["share"]


def test_bench_all_writes_results_with_each_scripts_seconds(tmp_path, monkeypatch, capsys):
    """make bench's summary: one row per target with its speedup, share, verdict and the wall
    seconds of the script that printed it; the peak only in the precisions this CPU has."""
    monkeypatch.setattr(B, "OUTPUTS", tmp_path)
    monkeypatch.setattr(B, "bench_data", lambda root=None: 12.0)
    monkeypatch.setattr(B, "course_benchmarks", lambda: [("course_a", "bench_a.py", {"toy a": 2.0, "toy b": 1.5})])
    monkeypatch.setattr(B, "run_course_benchmark", lambda folder, script: (
        {"toy a": {"ratio": 2.5, "share": 0.6, "memory": 0.4}, "toy b": {"ratio": 1.2}}, ""))
    sampled = []
    monkeypatch.setattr(B, "matmul_gflops", lambda dtype, n=B.PEAK_N, repeats=3: sampled.append(dtype) or 80.0)
    monkeypatch.setattr(B, "ROOT", tmp_path / "root")
    B.main(["all"])
    table = (tmp_path / "bench" / "results.md").read_text().splitlines()
    assert not (tmp_path / "root").exists()  # only --record writes results/bench.md
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table if r.startswith("| ")]
    rows = {c[0]: c for c in cells}
    assert rows["toy a"][1:6] == ["2.50x", "60.0%", "40.0%", "2x", "yes"] and rows["toy a"][6].isdigit()
    assert rows["toy b"][1:6] == ["1.20x", "", "", "1.5x", "no"] and rows["toy b"][6] == ""  # same script: seconds once
    assert rows["data loader"][1] == "12.00x"
    (tmp_path / "root" / "results").mkdir(parents=True)
    B.main(["all", "--record"])
    assert (tmp_path / "root" / "results" / "bench.md").read_text().startswith("# Benchmarks")
    assert set(sampled) == {B.PRECISION_DTYPES[p] for p in B.hardware_precisions()}
    assert capsys.readouterr().out.strip().splitlines()[-1] == "toy b speedup: 1.20x"
