"""``python -m mmdiag.bench`` on a tiny model: it runs, and its figures are complete and sane.

Timings are only checked for positivity and internal consistency (never
against a budget: this is a command that prints figures, not a timed test).
"""
from __future__ import annotations

import json
import os
import math

import pytest

from mmdiag.devtools import bench


def test_bench_tiny_writes_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--model", "random:tiny-clip", "-n", "8", "--batch-size", "4", "--families", "cone,gap",
                       "--device", "cpu", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "forward_s" in printed and "suite_s" in printed and f"wrote {out}" in printed
    assert "allocator" in printed and "pytest plugins: mmdiag only" in printed

    fig = json.loads(out.read_text())
    for key in ("forward_s", "suite_s", "ratio", "peak_rss_mb", "n", "model", "device", "load_s",
                "mm_forward_s", "checks_s", "checks_pct", "suite_peak_rss_mb", "floor_peak_rss_mb"):
        assert key in fig, key
    assert fig["model"] == "random:tiny-clip" and fig["n"] == 8 and fig["device"] == "cpu"
    assert fig["plugins"] == "mmdiag only" and isinstance(fig["allocator_tuned"], bool)
    assert fig["forward_s"] > 0 and fig["suite_s"] > 0 and fig["load_s"] > 0
    assert math.isclose(fig["ratio"], fig["suite_s"] / fig["forward_s"])
    assert fig["ratio"] > 0
    # the suite ran only the selected families, and its own timings add up to less than its wall time
    assert set(fig["checks_s"]) == {"cone", "gap"}
    assert fig["families"] == ["cone", "gap"]
    assert 0 < fig["mm_forward_s"] < fig["suite_s"]
    # the recorded forward's CPU seconds (run.timings.forward_cpu_s) against the floor's
    assert 0 < fig["mm_forward_cpu_s"] < fig["suite_cpu_s"]
    assert math.isclose(fig["mm_forward_cpu_ratio"], fig["mm_forward_cpu_s"] / fig["forward_cpu_s"])
    assert "forward_cpu_s" not in fig["other_timings"]
    # the floor's preparation of the batches, timed apart (the recorded forward includes it)
    assert fig["prepare_s"] > 0 and fig["prepare_cpu_s"] > 0
    assert math.isclose(fig["mm_forward_ratio_with_prepare"],
                        fig["mm_forward_s"] / (fig["forward_s"] + fig["prepare_s"]))
    assert fig["mm_forward_ratio_with_prepare"] < fig["mm_forward_ratio"]
    assert fig["suite_load_s"] + fig["mm_forward_s"] + sum(fig["checks_s"].values()) < fig["suite_s"]
    assert all(0 <= pct <= 100 for pct in fig["checks_pct"].values())
    assert fig["suite_exit_code"] in (0, 1)  # 1: a check failed (tiny random models do), the bench still reports
    assert fig["statuses"] and set(fig["statuses"]) <= {"pass", "warn", "fail", "info", "skip", "error"}
    # memory: MB of a Python process with torch loaded (well above 50 MB, well below 1 TB)
    for key in ("peak_rss_mb", "suite_peak_rss_mb", "floor_peak_rss_mb"):
        assert 50 < fig[key] < 1e6, (key, fig[key])
    assert fig["peak_rss_mb"] >= max(fig["suite_peak_rss_mb"], fig["floor_peak_rss_mb"]) - 1e-6


def test_family_selection_arguments():
    checks = bench.family_args(None, "k")
    assert len(checks) == 1 and checks[0].endswith("checks")
    assert bench.family_args(("cone", "gap"), "k")[:2] == ["-k", "cone or gap"]
    files = bench.family_args(("probe",), "files")
    assert len(files) == 1 and files[0].endswith("test_mm_probe.py")
    assert bench.parse_families("cone, gap,cone") == ("cone", "gap")
    assert bench.parse_families("all") is None
    with pytest.raises(Exception, match="unknown families"):
        bench.parse_families("cone,cones")


def test_suite_args_isolate_project_config(tmp_path):
    cfg = bench.BenchConfig(model="random:tiny-clip", samples=5, batch_size=2, families=("geometry",))
    args = bench.suite_args(cfg, tmp_path / "r.json", tmp_path / "pytest.ini")
    assert "--mm-samples=5" in args and "--mm-batch-size=2" in args and f"--mm-json={tmp_path / 'r.json'}" in args
    assert args[args.index("-c") + 1] == str(tmp_path / "pytest.ini")
    assert args[args.index("--rootdir") + 1] == str(tmp_path)
    # other installed pytest plugins are not loaded (run_suite turns autoloading off), mmdiag's is named
    assert args[args.index("-p", args.index("no:cacheprovider")) + 1] == "mmdiag.plugin"
    everything = bench.suite_args(bench.BenchConfig(all_plugins=True), tmp_path / "r.json", tmp_path / "pytest.ini")
    assert "mmdiag.plugin" not in everything


def test_suite_runs_without_other_plugins_unless_asked(tmp_path, monkeypatch):
    import pytest as pytest_module

    seen = {}

    def fake_main(args, plugins=()):
        seen["autoload_off"] = os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
        return 0

    monkeypatch.setattr(pytest_module, "main", fake_main)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    cfg = bench.BenchConfig(model="random:tiny-clip", samples=2, batch_size=2)
    bench.run_suite(cfg, bench.PeakTracker(), tmp_path)
    assert seen["autoload_off"] == "1" and "PYTEST_DISABLE_PLUGIN_AUTOLOAD" not in os.environ
    bench.run_suite(bench.BenchConfig(all_plugins=True), bench.PeakTracker(), tmp_path)
    assert seen["autoload_off"] is None


def test_bad_options_are_refused(capsys):
    assert bench.main(["-n", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--families", "nope"])


def test_peak_tracker_sees_an_allocation():
    import mmap

    peaks = bench.PeakTracker()
    peaks.start()
    # 40 MB of fresh pages, touched: an anonymous mapping, so that memory malloc keeps for reuse
    # (mmdiag.heap.tune_allocator, in effect after a run in this process) cannot serve it
    size = 40 * 2**20
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    before_free = bench.maxrss_mb()
    block.close()
    phase = peaks.stop()
    assert phase["peak_rss_mb"] >= before_free - 1 and phase["lifetime_peak_rss_mb"] >= phase["peak_rss_mb"]
    if peaks.resettable:  # Linux: the phase peak starts from the RSS at start(), so it includes the 40 MB
        assert phase["peak_rss_mb"] - (bench.status_mb("VmRSS") or 0) > 30


@pytest.mark.slow
def test_repeat_reports_the_median_run(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--model", "random:tiny-clip", "-n", "4", "--batch-size", "4", "--families", "cone",
                       "--device", "cpu", "--repeat", "2", "--json", str(out)])
    assert code == 0
    fig = json.loads(out.read_text())
    assert len(fig["repeats"]) == 2
    ratios = sorted(r["ratio"] for r in fig["repeats"])
    assert fig["ratio"] == ratios[0] and (fig["ratio_min"], fig["ratio_max"]) == (ratios[0], ratios[1])  # lower median
    assert math.isclose(fig["ratio"], fig["suite_s"] / fig["forward_s"])
    assert "median of 2 runs" in capsys.readouterr().out
    assert bench.main(["--repeat", "2", "--memory-scaling"]) == 2


def test_sdpa_floor_times_the_forward_and_switches_back_to_eager():
    from mmdiag.devtools.bench.run import prepare_batches, time_sdpa
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.models.load import load_adapter

    adapter = load_adapter("random:tiny-clip", "cpu")
    batches = prepare_batches(adapter, make_synthetic(4, seed=0), 2)
    seconds = time_sdpa(adapter, batches)
    assert seconds is not None and seconds > 0
    assert adapter.model.config._attn_implementation == "eager"  # the recorder needs the weights eager returns


def test_the_7b_bench_preset_has_the_published_size():
    import torch
    from transformers import LlavaForConditionalGeneration

    from mmdiag.models.presets import PRESETS

    with torch.device("meta"):  # shapes only: no 28 GB of weights
        model = LlavaForConditionalGeneration(PRESETS["llava-1.5-7b"].make_config())
    assert abs(sum(p.numel() for p in model.parameters()) / 1e9 - 7.06) < 0.01  # llava-hf/llava-1.5-7b-hf
