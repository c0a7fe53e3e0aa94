"""The --mm-treebank is used whole unless --mm-treebank-sentences caps it; few training sentences get a note."""
import json

import pytest

from mmdiag.analyses.probes import RELIABLE_TRAIN_SENTENCES, reliability_note
from mmdiag.data.conllu import parse_conllu, read_conllu
from mmdiag.devtools.bench.treebank import synthetic_conllu, write_synthetic_conllu
from mmdiag.errors import DataError
from mmdiag.report.terminal import render, table_notes
from mmdiag.thresholds import Result

RUN = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=16", "--mm-bootstrap=0", "--mm-no-cache",
       "-p", "no:cacheprovider", "--color=no", "-k", "probe_depth and text-L01")


def test_synthetic_treebank_is_valid_conllu_of_the_size_asked():
    trees = parse_conllu(synthetic_conllu(60, seed=3))
    assert len(trees) == 60 and all(4 <= len(t.heads) <= 14 for t in trees)
    assert synthetic_conllu(5, seed=1) == synthetic_conllu(5, seed=1) != synthetic_conllu(5, seed=2)


def test_limit_reads_the_first_sentences_and_leaves_the_rest_unparsed(tmp_path):
    text = synthetic_conllu(10)
    broken = text + "1\tx\tx\tNOUN\t_\t_\t7\tdep\t_\t_\n\n"  # HEAD out of range in sentence 11
    assert [t.words for t in parse_conllu(broken, limit=4)] == [t.words for t in parse_conllu(text)[:4]]
    assert len(parse_conllu(text, limit=100)) == 10
    path = tmp_path / "tb.conllu"
    path.write_text(broken)
    assert len(read_conllu(path, limit=10)) == 10
    with pytest.raises(DataError, match="HEAD '7'"):
        read_conllu(path)


def test_reliability_note_below_the_threshold_only():
    assert reliability_note(RELIABLE_TRAIN_SENTENCES) is None
    note = reliability_note(76)
    assert "76 sentences" in note and "unreliable" in note and "--mm-treebank-sentences" in note
    assert "--mm-treebank" not in reliability_note(10, "image")


def test_terminal_prints_each_note_once_under_the_table():
    note = reliability_note(12)
    results = [Result("probe.depth", {"modality": "text", "layer": k}, 0.5, "pass", None, {"note": note}, note, "x")
               for k in range(3)] + [Result("gap.norm", {}, 0.1, "pass", None, {}, "", "y")]
    assert table_notes(results) == {note: ["probe.depth[text]"]}
    text = render(results, "t", 200, color=False)
    assert text.count(note) == 1 and "note (probe.depth[text])" in text


def _run(pytester, tmp_path, *extra):
    tb = write_synthetic_conllu(tmp_path / "tb.conllu", 40, seed=0)
    result = pytester.runpytest(*RUN, f"--mm-treebank={tb}", f"--mm-json={tmp_path / 'r.json'}", *extra)
    return result, json.loads((tmp_path / "r.json").read_text())


def _probe_depth(doc):
    return next(r for r in doc["results"] if r["check"] == "probe.depth")


def test_whole_treebank_by_default_not_capped_by_samples(pytester, tmp_path):
    result, doc = _run(pytester, tmp_path)
    assert result.ret == 0, result.stdout.str()
    r = _probe_depth(doc)
    assert r["details"]["n_train"] + r["details"]["n_dev"] + r["details"]["n_test"] == 40
    assert "unreliable" in r["details"]["note"] and "unreliable" in r["message"]
    assert r["status"] != "fail"
    out = result.stdout.str()
    assert "note (probe.depth[text]): probes trained on 24 sentences" in out
    assert "mmdiag: treebank: forward pass 40/40 sentences" in out  # progress of the treebank pass and the fit
    assert "mmdiag: text probes (24 sentences, 8 epochs at most) 192/192 sentence passes" in out  # 8 epochs x 24 training sentences


def test_treebank_sentences_caps_it_and_controls_show_progress(pytester, tmp_path):
    result, doc = _run(pytester, tmp_path, "--mm-treebank-sentences=25", "--mm-controls=random-init", "-k",
                       "probe_depth and text-L01 or probe_selectivity and text")
    assert result.ret == 0, result.stdout.str()
    d = _probe_depth(doc)["details"]
    assert d["n_train"] + d["n_dev"] + d["n_test"] == 25
    sel = next(r for r in doc["results"] if r["check"] == "probe.selectivity")
    assert "unreliable" in sel["details"]["note"] and sel["details"]["n_train"] == 15
    out = result.stdout.str()
    assert "mmdiag: control random-init: forward pass 8/8 samples" in out
    assert "mmdiag: text probes: control task at layer" in out


class Recording:
    def __init__(self):
        self.started, self.done = [], 0

    def start(self, total, label, unit):
        self.started.append((total, label, unit))

    def __call__(self, n):
        self.done += n


def test_fit_progress_counts_training_sentences_up_to_its_total():
    from mmdiag.probing.fit import ProbeTask, fit_probes
    from tests.probing.test_probe_fit import planted

    data = planted(0, n_sent=30)
    progress = Recording()
    fit_probes([ProbeTask("depth", data.subset(range(20)), data.subset(range(20, 30)))], progress=progress,
               label="text probes")
    assert progress.started == [(8 * 20, "text probes (20 sentences, 8 epochs at most)", "sentence passes")]
    assert progress.done == 8 * 20  # an early stop jumps to the end


@pytest.mark.parametrize("args, expected", [
    (["--mm-treebank-sentences=0"], "*--mm-treebank-sentences=0 must be at least 1*"),
    (["--mm-treebank-sentences=all"], "*--mm-treebank-sentences='all' is not an integer*"),
    (["--mm-treebank-sentences=5"], "*--mm-treebank-sentences caps the --mm-treebank sentences*"),
])
def test_bad_treebank_sentences_is_a_usage_error(pytester, args, expected):
    result = pytester.runpytest("--mm-model=random:tiny-clip", *args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([expected])
