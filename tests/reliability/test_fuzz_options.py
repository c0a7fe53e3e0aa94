"""Fuzzing the ``--mm-*`` command line: whatever the values, a run passes, fails or is a usage error (exit 4 with an
``ERROR: mmdiag:`` line), never a traceback or an INTERNALERROR.

Paths drawn are relative (inside the pytester directory) so no example writes outside it. 25 examples take ~9 s
on 2 CPU cores (300 examples were tried once by hand: 246 exit 4, 53 exit 0, 1 exit 1, none unclean).
"""
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

BASE = ("--mm-model=random:tiny-clip", "--mm-samples=4", "--mm-batch-size=4", "--mm-bootstrap=0",
        "-p", "no:cacheprovider", "--color=no", "-k", "gap_norm")

numbers = st.sampled_from(["0", "-1", "-0", "1", "2", "3", "1.5", "1e3", "1e999", "nan", "inf", "-inf", "0x10",
                           "99999999999999999999999", str(2 ** 63), "١٢", "4\u200b", " 4 ", "+4", "4_000"])
odd_text = st.sampled_from(["", " ", "[bold]", "[bold]x[/bold]", "[/]", "[link=http://x]y", "\u202e", "é",
                            "x\ty", "%s", "%(x)s", "{0}", "..", ".", "-", "--", "\\", "null", "None", "true"])
paths = st.sampled_from(["does/not/exist", "missing.json", "no such dir/x.npz", "[bold]d/x", "é/ü.json", "out.json",
                         "reports", "x.npz", "x.safetensors", "a.txt", ".", "sub/"])
anything = st.one_of(numbers, odd_text, paths, st.text(max_size=8).filter(lambda s: "\x00" not in s))

#: option -> what it may be given (plus ``anything``)
OPTIONS = {
    "--mm-samples": numbers, "--mm-batch-size": numbers | st.just("auto"), "--mm-seed": numbers,
    "--mm-bootstrap": st.sampled_from(["0", "-1", "1", "2", "nan", "x", "1e3", ""]),
    "--mm-probe-rank": numbers, "--mm-attention-head": numbers, "--mm-shift-batch": numbers,
    "--mm-treebank-sentences": numbers,
    "--mm-device": st.sampled_from(["cpu", "auto", "cuda:99", "gpu", "mps", "", "cpu:0", "[bold]"]),
    "--mm-dtype": st.sampled_from(["fp32", "bf16", "fp16", "float32", "", "[bold]"]),
    "--mm-device-map": st.sampled_from(["auto", "balanced", "", "[bold]"]),
    "--mm-gate": st.sampled_from(["ci", "value", "both", "", "[bold]"]),
    "--mm-controls": st.sampled_from(["noise", "random-init", "noise,noise", "bogus", ",", "noise,[bold]"]),
    "--mm-probe-regimen": st.sampled_from(["fast", "paper", "slow", ""]),
    "--mm-data": st.sampled_from(["synthetic", "noise", "does/not/exist", "x.jsonl", "coco.json", "[bold]", ""]),
    "--mm-treebank": paths, "--mm-json": paths, "--mm-html": paths, "--mm-report-dir": paths,
    "--mm-markdown": paths, "--mm-save-baseline": paths, "--mm-baseline": paths, "--mm-cache-dir": paths,
    "--mm-region-features": paths,
    "--mm-threshold": st.sampled_from(["gap.norm=<=:1", "gap.norm=<=:x", "gap.norm", "=", "nope=<=:1",
                                       "gap.norm=<=:1:fatal", "gap.norm[x=1]=<=:1", "[bold]=<=:1",
                                       "gap.norm=<=:1e999", "gap.norm=<=:nan"]),
    "--mm-compare-fail": st.sampled_from(["*:5%", "gap.norm:0.02", "x", "*:-5%", "*:1e999%", "[bold]:5%"]),
    "--mm-text-reference": st.sampled_from(["random:nope", "does/not/exist", ""]),
    "--mm-model": st.sampled_from(["random:nope", "random:", "", "[bold]x", "does/not/exist", "zoo:nope"]),
}
FLAGS = ["--mm-no-cache", "--mm-skip-bad-samples", "--mm-allow-outside-data", "--mm-baseline-any", "--mm-checks"]


@st.composite
def command_lines(draw):
    names = draw(st.lists(st.sampled_from(sorted(OPTIONS)), min_size=1, max_size=3, unique=True))
    args = []
    for name in names:
        value = draw(OPTIONS[name] | anything)
        args.append(f"{name}={value}")
    args += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    return args


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=command_lines())
@example(args=["--mm-attention-head=0", "--mm-model=--"])  # argparse dropped "--" and the run collected nothing
@example(args=["--mm-bootstrap=99999999999999999999999"])  # accepted, and the first bootstrap never ended
def test_any_option_values_give_a_clean_outcome(pytester, args):
    result = pytester.runpytest(*BASE, *args)
    out = result.stdout.str() + "\n" + result.stderr.str()
    assert int(result.ret) in (0, 1, 4), (args, int(result.ret), out[-3000:])
    assert "Traceback" not in out and "INTERNALERROR" not in out, (args, out[-3000:])
    if int(result.ret) == 4:
        assert "ERROR: mmdiag:" in out, (args, out[-3000:])
