"""``python -m mmdiag.bench_probes`` on a tiny model: it runs, and its figures are complete and consistent.

No timing budget is asserted (a command that prints figures, not a timed test):
timings are only checked for positivity and internal consistency.
"""
from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from mmdiag import bench_probes
from mmdiag.analyses.probes import best
from mmdiag.probing.splits import split_indices


@pytest.fixture(scope="module")
def tiny_figures(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_probes") / "fig.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = bench_probes.main(["--model", "random:tiny-bert", "-n", "24", "--batch-size", "8", "--json", str(out),
                                  "--quiet"])
    return code, out, buf.getvalue()


def test_main_writes_complete_figures(tiny_figures):
    code, out, printed = tiny_figures
    assert code == 0
    fig = json.loads(out.read_text())
    for key in ("model", "n", "seed", "device", "threads", "forward_s", "load_s", "modalities", "targets",
                "fast_fit_total_s", "fast_fit_total_over_forward"):
        assert key in fig, key
    assert fig["model"] == "random:tiny-bert" and fig["n"] == 24 and fig["device"] == "cpu"
    assert list(fig["modalities"]) == ["text"]  # a text encoder: text probes only
    assert fig["forward_s"] > 0 and fig["load_s"] > 0
    assert f"wrote {out}" in printed


def test_regimen_figures_are_sane(tiny_figures):
    _, out, _ = tiny_figures
    fig = json.loads(out.read_text())
    text = fig["modalities"]["text"]
    # the split is split_indices' 60/20/20 of the probed sentences
    sizes = [len(part) for part in split_indices(text["n_sentences"], fig["seed"])]
    assert [text["split"][k] for k in ("n_train", "n_dev", "n_test")] == sizes
    assert text["layers"] == 4 and text["dim"] == 32  # tiny-bert: embeddings + 3 blocks, D=32
    assert text["rank"] is None and text["ranks"] == {"paper": 32, "fast": 32}  # each regimen's default: min(D, ...)
    for regimen in ("paper", "fast"):
        r = text[regimen]
        assert set(r["best"]) == {"nspr", "root_acc", "dspr", "uuas"}
        for key, value in r["best"].items():
            per_layer = r["per_layer"][key]
            assert len(per_layer) == text["layers"]
            # best value and layer agree with the per-layer list (the shared ``best`` helper)
            assert (r["best_layer"][key], value) == pytest.approx(best([np.nan if v is None else v
                                                                      for v in per_layer]))
            lo = -1.0 if key in ("nspr", "dspr") else 0.0
            assert lo <= value <= 1.0
        assert r["depth_fit_s"] > 0 and r["distance_fit_s"] > 0
        assert math.isclose(r["fit_s"], r["depth_fit_s"] + r["distance_fit_s"])
    for key, d in text["diff"].items():
        assert math.isclose(d, text["fast"]["best"][key] - text["paper"]["best"][key], abs_tol=1e-12)
    assert math.isclose(text["time_ratio"], text["fast"]["fit_s"] / text["paper"]["fit_s"])
    assert math.isclose(text["fast_fit_over_forward"], text["fast"]["fit_s"] / fig["forward_s"])
    assert math.isclose(fig["fast_fit_total_s"], text["fast"]["fit_s"])
    assert text["within_tolerance"] == (max(abs(d) for d in text["diff"].values()) <= fig["targets"]["score_tolerance"])


def test_printed_table(tiny_figures):
    _, out, printed = tiny_figures
    fig = json.loads(out.read_text())
    for word in ("forward_s", "[text]", "fast-pap", "time ratio fast/paper", "NSpr", "root acc", "DSpr", "UUAS"):
        assert word in printed, word
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip().startswith(("paper", "fast"))}
    for regimen in ("paper", "fast"):
        # the printed best NSpr and its layer are the JSON's
        assert float(rows[regimen][1]) == pytest.approx(fig["modalities"]["text"][regimen]["best"]["nspr"], abs=5e-4)
        assert int(rows[regimen][2]) == fig["modalities"]["text"][regimen]["best_layer"]["nspr"]


def test_too_few_samples_is_an_error(capsys):
    assert bench_probes.main(["--model", "random:tiny-bert", "-n", "3", "--quiet"]) == 2
    assert "-n must be at least" in capsys.readouterr().err


def test_unknown_model_is_a_clean_error(capsys):
    assert bench_probes.main(["--model", "random:no-such-preset", "-n", "24", "--quiet"]) == 2
    assert "unknown preset" in capsys.readouterr().err
