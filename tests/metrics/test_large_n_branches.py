"""The checks' large-N forms, run end to end with their row limits lowered: geometry.uniformity on blocks and
gap.retrieval bootstrapped against the fixed gallery give values and intervals (at N = 16k they are what runs)."""
import json

import pytest

from mmdiag.metrics import gap, geometry
from mmdiag.metrics.geometry import uniformity_blocks

FAST = ("--mm-model=random:tiny-clip", "--mm-batch-size=8", "-p", "no:cacheprovider", "--color=no", "--mm-no-cache",
        "--mm-samples=24", "--mm-bootstrap=50", "--mm-json=out.json")


def test_uniformity_and_retrieval_take_their_large_n_forms(pytester, monkeypatch):
    monkeypatch.setattr(geometry, "UNIFORMITY_BLOCK_ROWS", 10)  # 24 rows: 3 blocks of 8
    monkeypatch.setattr(gap, "RETRIEVAL_RERANK_ROWS", 10)
    result = pytester.runpytest(*FAST, "--mm-threshold=gap.retrieval=>=:0.0", "-k", "uniformity or retrieval")
    assert result.ret in (0, 1), result.stdout.str()
    found = {(r["check"], r["params"].get("modality")): r
             for r in json.loads((pytester.path / "out.json").read_text())["results"]}
    for modality in ("image", "text"):
        r = found[("geometry.uniformity", modality)]
        assert r["details"]["blocks"]["count"] == 3 and r["details"]["blocks"]["of"] == 24, r
        assert r["ci"]["method"] == "t-over-blocks" and r["ci"]["low"] <= r["value"] <= r["ci"]["high"] <= 0.0
    retrieval = found[("gap.retrieval", None)]
    assert "gallery held fixed" in retrieval["details"]["bootstrap"]
    assert retrieval["ci"]["method"].startswith("bootstrap") and 0.0 <= retrieval["ci"]["low"] <= retrieval["value"]


def test_uniformity_blocks_match_the_run(pytester, monkeypatch):
    """The check's value is uniformity_blocks of the run's embeddings with the run's seed."""
    from mmdiag.data.load import load_samples
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record

    monkeypatch.setattr(geometry, "UNIFORMITY_BLOCK_ROWS", 10)
    result = pytester.runpytest(*FAST, "-k", "uniformity")
    assert result.ret in (0, 1), result.stdout.str()
    doc = json.loads((pytester.path / "out.json").read_text())
    acts = record(load_adapter("random:tiny-clip", "cpu"), load_samples("synthetic", 24), 8)
    for r in doc["results"]:
        expected = uniformity_blocks(acts.embeds[r["params"]["modality"]], t=2, block_rows=10, seed=0)["value"]
        assert r["value"] == pytest.approx(expected, abs=1e-6)
