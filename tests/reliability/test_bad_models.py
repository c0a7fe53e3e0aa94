"""Bad models and options get a clear answer; a failing check never takes the others (or the report) with it;
mmdiag neither unpickles nor reaches the network."""
import json
import re
import socket
from pathlib import Path

import pytest

import mmdiag

# -- models ---------------------------------------------------------------------------------------------------------


def _tiny_clip_config():
    from mmdiag.models.presets import PRESETS

    return PRESETS["tiny-clip"].make_config()


def test_directory_with_config_but_no_weights_is_a_usage_error(pytester, tmp_path):
    folder = tmp_path / "no_weights"
    _tiny_clip_config().save_pretrained(folder)
    result = pytester.runpytest(f"--mm-model={folder}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*mmdiag: --mm-model='{folder}': the config loaded but the weights*"
                                 "no file named model.safetensors*save_pretrained*"])


def _remote_code_model(folder: Path, model_type: str = "my-custom-vlm") -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": model_type, "hidden_size": 8,
        "auto_map": {"AutoConfig": "configuration_my.MyConfig", "AutoModel": "modeling_my.MyModel"}}))
    (folder / "configuration_my.py").write_text("raise SystemExit('remote code ran')\n")
    return folder


def test_model_needing_remote_code_is_refused(pytester, tmp_path):
    folder = _remote_code_model(tmp_path / "remote")
    result = pytester.runpytest(f"--mm-model={folder}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*mmdiag: --mm-model='{folder}' needs remote code*mm_model fixture override*"])
    assert "remote code ran" not in result.stdout.str() + result.stderr.str()


def test_remote_code_refusal_is_immediate_and_says_what_to_do(pytester, tmp_path):
    folder = _remote_code_model(tmp_path / "remote")
    result = pytester.runpytest(f"--mm-model={folder}", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "[y/N]" not in output
    assert re.search(r"remote code", output, re.I) and "mm_model" in output


# -- options -------------------------------------------------------------------------------------------------------
# (tests/plugin/test_plugin_errors.py covers presets, --mm-samples, threshold syntax, --mm-dtype, a missing
# --mm-data file, --mm-controls and --mm-baseline; these are the remaining options)

@pytest.mark.parametrize("args, expected", [
    (["--mm-batch-size=0"], "*--mm-batch-size=0 must be at least 1*"),
    (["--mm-batch-size=1.5"], "*--mm-batch-size='1.5' is not an integer*"),
    (["--mm-seed=-3"], "*--mm-seed=-3 must be at least 0*"),
    (["--mm-probe-rank=full"], "*--mm-probe-rank='full' is not an integer*"),
    (["--mm-probe-regimen=slow"], "*--mm-probe-regimen='slow': accepted: fast, paper*"),
    (["--mm-data=notes.txt"], "*--mm-data='notes.txt': unknown file type '.txt'*accepted*"),
    (["--mm-treebank=missing.conllu"], "*--mm-treebank='missing.conllu': no such file*CoNLL-U*"),
    (["--mm-compare-fail=gap.norm:5%"], "*--mm-compare-fail needs --mm-baseline*"),
    (["--mm-threshold=gap.norm=<:abc"], "*'abc' is not a number*"),
    (["--mm-threshold=nocheck.at_all=<:1"], "*unknown check 'nocheck.at_all'*valid checks*cone.final*"),
    (["--mm-device=tpu:0"], "*--mm-device='tpu:0'*"),
], ids=["batch-zero", "batch-float", "seed-negative", "probe-rank", "regimen", "data-suffix", "treebank-missing",
        "compare-without-baseline", "threshold-value", "threshold-check", "device"])
def test_more_usage_errors(pytester, args, expected):
    pytester.makefile(".txt", notes="hello")
    result = pytester.runpytest("--mm-model=random:tiny-clip", *args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([expected])
    assert "Traceback" not in result.stderr.str()


def test_bad_pyproject_threshold_table_is_a_usage_error_naming_the_file(pytester):
    pytester.makepyprojecttoml('[tool.mmdiag.thresholds]\n"gap.norm" = "about one"\n')
    result = pytester.runpytest("--mm-model=random:tiny-clip", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pyproject.toml*gap.norm*"])


def test_baseline_whose_results_are_not_a_list_is_a_usage_error(pytester):
    # (a malformed, missing or other-schema baseline is covered in tests/plugin/test_plugin_baseline.py)
    (pytester.path / "base.json").write_text(json.dumps({"schema": "mmdiag/1", "results": 5}))
    result = pytester.runpytest("--mm-model=random:tiny-clip", "--mm-baseline=base.json", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mm-baseline='base.json'*results*"])


def test_too_few_samples_skip_with_the_minimum(mmrun):
    result, doc, output = mmrun("--mm-samples=5", "-k", "mknn or separability",
                                fast=("--mm-model=random:tiny-clip", "-p", "no:cacheprovider"))
    assert doc is not None, output
    reasons = {r["check"]: (r["status"], r["message"]) for r in doc["results"]}
    assert reasons["geometry.mknn"] == ("skip", "geometry.mknn needs at least 11 samples, the run has 5 "
                                                "(raise --mm-samples)")
    assert reasons["gap.separability"][0] == "skip" and "at least 10 samples" in reasons["gap.separability"][1]


# -- a check that errors does not stop the others; reports are still written --------------------------------------

_RUNS: dict = {}


def _overclaiming_run(pytester, rel):
    """A toy model whose layer_counts() claims 4 hidden states per tower but whose forward() returns 3."""
    if "overclaim" not in _RUNS:
        pytester.makeconftest(rel.toy_conftest(layers=3, claimed=4))
        result = pytester.runpytest(*rel.TOY_FAST, "--mm-report-dir=out", "-k", "rankme or gap_norm or uniformity")
        doc_path, html_path = pytester.path / "out" / "results.json", pytester.path / "out" / "report.html"
        _RUNS["overclaim"] = (result.ret, result.stdout.str(),
                              json.loads(doc_path.read_text()) if doc_path.exists() else None,
                              html_path.read_text() if html_path.exists() else None)
    return _RUNS["overclaim"]


def test_an_adapter_breaking_its_promise_fails_every_check_but_keeps_the_reports(pytester, rel):
    """An adapter whose forward() returns fewer layers than layer_counts() promises: every check says so,
    and the JSON and HTML are still written."""
    ret, output, doc, html = _overclaiming_run(pytester, rel)
    assert ret == pytest.ExitCode.TESTS_FAILED
    assert doc is not None and html is not None, output
    assert doc["results"] and all(r["status"] == "error" for r in doc["results"])
    assert all("layer_counts" in r["message"] for r in doc["results"])
    assert "layer_counts" in html


def test_layer_count_mismatch_is_named(pytester, rel):
    ret, output, doc, html = _overclaiming_run(pytester, rel)
    broken = [r for r in doc["results"] if r["check"] == "geometry.rankme" and r["params"]["layer"] == 3]
    assert broken and all("layer_counts" in r["message"] for r in broken)


def test_a_metric_raising_inside_one_check_is_recorded_as_its_error(pytester, monkeypatch):
    """One built-in check crashes (its metric raises); the run goes on and the reports say which and why."""
    import mmdiag.metrics.geometry

    def boom(*args, **kwargs):
        raise RuntimeError("simulated metric crash")

    # the built-in checks import the metric when the run collects them, so they get the crashing one
    monkeypatch.setattr(mmdiag.metrics.geometry, "uniformity", boom)
    result = pytester.runpytest("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=8",
                                "-p", "no:cacheprovider", "--mm-report-dir=out", "-k", "uniformity or gap_norm")
    doc = json.loads((pytester.path / "out" / "results.json").read_text())
    html = (pytester.path / "out" / "report.html").read_text()
    by_check = {}
    for r in doc["results"]:
        by_check.setdefault(r["check"], []).append(r)
    assert [r["status"] for r in by_check["geometry.uniformity"]] == ["error", "error"]
    assert all(r["message"] == "RuntimeError: simulated metric crash" for r in by_check["geometry.uniformity"])
    assert by_check["gap.norm"][0]["value"] is not None
    assert "simulated metric crash" in html
    result.assert_outcomes(failed=2, passed=1, warnings=result.parseoutcomes().get("warnings", 0))


# -- security: no pickle, no network ---------------------------------------------------------------------------

def _package_sources():
    root = Path(mmdiag.__file__).parent
    return {path: path.read_text(encoding="utf-8") for path in root.rglob("*.py")}


PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def _unsafe_calls(tree) -> list:
    """Code (not strings or comments) that deserialises with pickle or runs a model's own code."""
    import ast

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "torch.load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    found.append(f"{ast.unparse(node)} without weights_only=True")
            if name in ("torch.save", "np.save", "numpy.save", "pickle.dump", "pickle.dumps"):
                found.append(f"{name}(...) writes a pickle")
            for key in ("allow_pickle", "trust_remote_code"):
                value = keywords.get(key)
                if isinstance(value, ast.Constant) and value.value is True:
                    found.append(f"{name}(..., {key}=True)")
    return found


def test_results_and_cache_never_use_pickle():
    """Reading results, baselines or cached activations must not execute code: no pickle, no unsafe torch.load,
    no trust_remote_code=True anywhere in the package."""
    import ast

    offenders = [f"{path}: {what}" for path, text in _package_sources().items()
                 for what in _unsafe_calls(ast.parse(text))]
    assert not offenders, offenders


def test_the_pickle_detector_detects():
    import ast

    bad = ("import pickle\nfrom joblib import load\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "np.load(p, allow_pickle=True)\nAutoModel.from_pretrained(p, trust_remote_code=True)\ntorch.save(x, p)\n")
    assert len(_unsafe_calls(ast.parse(bad))) == 7
    good = '"""never pickle"""\n# import pickle\ntorch.load(p, weights_only=True)\nsafetensors.torch.load_file(p)\n'
    assert _unsafe_calls(ast.parse(good)) == []


def test_activation_cache_file_is_not_a_pickle(tmp_path, tiny_clip):
    """The cache writes safetensors (a header and raw tensors) and JSON, never a pickle stream."""
    cache = pytest.importorskip("mmdiag.cache")
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.record import record

    acts = record(tiny_clip, make_synthetic(4, seed=1), 4)
    path = tmp_path / "entry.safetensors"
    cache.save(acts, path)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    for file in written:
        head = file.read_bytes()[:2]
        assert head[:1] != b"\x80", f"{file} starts like a pickle stream"
    loaded = cache.load(path, tiny_clip.device)
    assert loaded is not None and loaded.n == acts.n


def test_random_preset_runs_offline_without_any_connection(mmrun, monkeypatch):
    """With HF_HUB_OFFLINE=1 (set for every test here) and sockets that refuse to connect, a random: run works."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    result, doc, output = mmrun("--mm-model=random:tiny-siglip", "-k", "gap_norm or cone_final or rankme",
                                fast=("--mm-samples=8", "--mm-batch-size=8", "-p", "no:cacheprovider"))
    assert doc is not None, output
    assert doc["model"]["family"] == "siglip"
    assert [r for r in doc["results"] if r["value"] is not None]
    assert not attempts
