"""Settings that cannot work are refused before the forward pass (issue "Reliability II", class 5).

Each is a usage error (exit 4) in one line naming the option, within seconds of the start.
"""
import json
import os
import time
from types import SimpleNamespace

import pytest

from mmdiag.data.load import MAX_GENERATED_SAMPLES, MAX_SYNTHETIC_SAMPLES, generated_samples_problem
from mmdiag.errors import SpecError
from mmdiag.runner import check_model_limits

FAST = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=4", "-p", "no:cacheprovider",
        "--color=no", "-k", "gap_norm")


@pytest.mark.parametrize("args, expected", [
    (["--mm-report-dir=afile"], "--mm-report-dir='afile': afile is a file, not a directory"),
    (["--mm-report-dir=afile/sub"], "--mm-report-dir='afile/sub': afile/sub cannot be created: * is not a directory"),
    (["--mm-json=out/r.json", "--mm-html=out/r.json"],
     "--mm-json='out/r.json' and --mm-html='out/r.json' name the same file out/r.json: the results JSON and the HTML "
     "report would overwrite each other*"),
    (["--mm-html=r.json", "--mm-save-baseline=r.json"],
     "--mm-html='r.json' and --mm-save-baseline='r.json' name the same*"),
    (["--mm-markdown=v.md", "--mm-json=v.md"], "--mm-json='v.md' and --mm-markdown='v.md' name the same*"),
    (["--mm-report-dir=rep", "--mm-markdown=rep/report.html"],
     "--mm-report-dir='rep' (report.html) and --mm-markdown='rep/report.html' name the same*"),
    (["--mm-json=adir"], "--mm-json='adir': adir is a directory, not a regular file"),
    (["--mm-json=afile/r.json"], "--mm-json='afile/r.json': afile/r.json cannot be created: * is not a directory"),
    (["--mm-cache-dir=afile"], "--mm-cache-dir='afile': * is a file, not a directory*--mm-no-cache*"),
    (["--mm-seed=4294967296"], "--mm-seed=4294967296 must be below 2**32*"),
    (["--mm-seed=-1"], "--mm-seed=-1 must be at least 0"),
    (["--mm-attention-head=4"],
     "--mm-attention-head=4: random:tiny-clip has 4 attention heads (heads are numbered 0..3)"),
    (["--mm-probe-rank=33"], "--mm-probe-rank=33 is beyond the hidden size of random:tiny-clip (32)*"),
    ([f"--mm-samples={MAX_SYNTHETIC_SAMPLES + 1}"],
     "--mm-samples=65537: the synthetic generator builds at most 65,536 scenes*"),
    (["--mm-data=noise", "--mm-samples=100000"], "--mm-samples=100000: the noise generator builds at most 10,000*"),
    (["--mm-bootstrap=99999999999999999999999"], "--mm-bootstrap=99999999999999999999999 resamples: at most 100,000*"),
], ids=["report-dir-file", "report-dir-under-file", "json-is-html", "html-is-baseline", "markdown-is-json",
        "report-dir-html-is-markdown", "json-is-dir", "json-under-file", "cache-dir-file", "seed-2**32", "seed-neg",
        "head-beyond", "rank-beyond", "synthetic-too-many", "noise-too-many", "bootstrap-too-many"])
def test_refused_before_the_forward_pass(pytester, args, expected, usage_line):
    (pytester.path / "afile").write_text("not a directory")
    (pytester.path / "adir").mkdir()
    start = time.perf_counter()
    line = usage_line(pytester.runpytest(*FAST, *args))
    assert time.perf_counter() - start < 30  # no forward pass, no sample generation
    assert pytester.path.joinpath("reports").exists() is False
    from fnmatch import fnmatch

    assert fnmatch(line, f"ERROR: mmdiag: {expected}"), line


def test_default_report_directory_that_is_a_file_is_named(pytester, usage_line):
    (pytester.path / "reports").write_text("a file where the reports folder goes")
    line = usage_line(pytester.runpytest(*FAST))
    assert "the default report directory (give --mm-report-dir): " in line and "is a file, not a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_report_dir_that_is_not_writable(pytester, usage_line):
    locked = pytester.mkdir("locked")
    locked.chmod(0o500)
    try:
        line = usage_line(pytester.runpytest(*FAST, "--mm-report-dir=locked"))
    finally:
        locked.chmod(0o700)
    assert "--mm-report-dir='locked': the directory locked is not writable" in line


def test_same_path_for_the_same_content_is_allowed(pytester):
    """--mm-json and --mm-save-baseline write the same document: one path for both is fine."""
    result = pytester.runpytest(*FAST, "--mm-json=r.json", "--mm-save-baseline=r.json", "--mm-seed=4294967295")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert json.loads((pytester.path / "r.json").read_text())["results"]


def test_model_limits_use_the_largest_tower_and_skip_unknown_sizes():
    text = SimpleNamespace(num_attention_heads=8, hidden_size=512)
    vision = SimpleNamespace(num_attention_heads=12, hidden_size=768)
    adapter = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(text_config=text, vision_config=vision)))
    cfg = SimpleNamespace(model="m", attention_head=11, probe_rank=768)
    check_model_limits(cfg, adapter)  # valid for the vision tower
    with pytest.raises(SpecError, match="--mm-attention-head=12: m has 12 attention heads"):
        check_model_limits(SimpleNamespace(model="m", attention_head=12, probe_rank=None), adapter)
    with pytest.raises(SpecError, match=r"--mm-probe-rank=769 is beyond the hidden size of m \(768\)"):
        check_model_limits(SimpleNamespace(model="m", attention_head=None, probe_rank=769), adapter)
    check_model_limits(SimpleNamespace(model="m", attention_head=99, probe_rank=9999), SimpleNamespace())  # unknown


def test_generated_sample_limit():
    assert generated_samples_problem("synthetic", MAX_SYNTHETIC_SAMPLES) == ""  # deferred images: 16k scenes run
    assert generated_samples_problem("noise", MAX_GENERATED_SAMPLES) == ""
    assert generated_samples_problem("captions.jsonl", 10 ** 6) == ""  # files are read batch by batch
    assert "--mm-samples=10001" in generated_samples_problem("noise", MAX_GENERATED_SAMPLES + 1)
    assert "--mm-samples=65537" in generated_samples_problem("synthetic", MAX_SYNTHETIC_SAMPLES + 1)
