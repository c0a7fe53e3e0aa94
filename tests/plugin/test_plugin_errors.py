"""User mistakes end in a usage error (exit 4) that says what was wrong, without a traceback."""
import pytest


@pytest.mark.parametrize("args,expected", [
    (["--mm-model=random:nope"], "*unknown preset 'nope'*accepted: random:clip-vit-base-patch32*"),
    (["--mm-model=./no/such/dir"], "*no such directory*accepted*"),
    (["--mm-model=random:tiny-clip", "--mm-samples=zero"], "*--mm-samples='zero' is not an integer*"),
    (["--mm-model=random:tiny-clip", "--mm-samples=1"], "*--mm-samples=1 must be at least 2*"),
    (["--mm-model=random:tiny-clip", "--mm-threshold=gap.norm<1"], "*expected CHECK*OP:VALUE*"),
    (["--mm-model=random:tiny-clip", "--mm-threshold=gap.nrom=<:1"], "*unknown check 'gap.nrom'*valid checks*"),
    (["--mm-model=random:tiny-clip", "--mm-threshold=gap.norm=<:1:oops"], "*unknown level 'oops'*"),
    (["--mm-model=random:tiny-clip", "--mm-dtype=fp16"], "*--mm-dtype='fp16' is not supported*"),
    (["--mm-model=random:tiny-clip", "--mm-data=missing.jsonl"], "*--mm-data='missing.jsonl': no such file*"),
    (["--mm-model=random:tiny-clip", "--mm-controls=bogus"], "*unknown control 'bogus'*"),
    (["--mm-model=random:tiny-clip", "--mm-baseline=nothere.json"], "*--mm-baseline='nothere.json': no such file*"),
])
def test_usage_errors(pytester, args, expected):
    result = pytester.runpytest(*args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_usage_error_output_has_no_traceback(pytester):
    result = pytester.runpytest_subprocess("--mm-model=random:nope", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: mmdiag: --mm-model='random:nope': unknown preset*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_unresolvable_hub_id_offline_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = pytester.runpytest("--mm-model=nobody-here/no-such-model", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*nobody-here/no-such-model*cannot load a model config*accepted: random:*"])


def test_directory_without_config_is_a_usage_error(pytester):
    pytester.mkdir("empty_model")
    result = pytester.runpytest("--mm-model=empty_model", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*has no config.json*"])


def test_unsupported_architecture_names_the_fixture_route(pytester, tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=8, image_size=8,
                       patch_size=4)
    ViTModel(config).save_pretrained(tmp_path / "vit")
    result = pytester.runpytest(f"--mm-model={tmp_path / 'vit'}", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'vit' model, which no built-in adapter supports*mm_model*fixture*"])


def test_pytest_help_works_wherever_mmdiag_is_installed(tmp_path):
    """argparse %-formats option help: a bare % in mmdiag's help once crashed `pytest --help` in every project."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--mm-compare-fail" in done.stdout and "CHECK:5%," in done.stdout
