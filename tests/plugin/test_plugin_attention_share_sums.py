"""attention.share reports text->special and image->special, so that per layer the reported shares of each query
modality add up to 1: on a bidirectional single-stream model (ViLT) and a causal decoder (LLaVA)."""
import json
from collections import defaultdict

import pytest


@pytest.mark.parametrize("model, skipped", [("random:tiny-vilt", set()),
                                             # image tokens precede the caption: no image query sees text
                                             ("random:tiny-llava", {"image->text"})])
def test_reported_shares_of_each_query_modality_sum_to_one(pytester, model, skipped):
    result = pytester.runpytest(f"--mm-model={model}", "--mm-samples=6", "--mm-batch-size=3", "--mm-no-cache",
                                "--mm-bootstrap=0", "-p", "no:cacheprovider", "--color=no", "-k", "attention_share",
                                "--mm-json=r.json")
    assert result.ret == 0
    doc = json.loads((pytester.path / "r.json").read_text())
    sums, seen = defaultdict(float), defaultdict(set)
    for r in doc["results"]:
        if r["check"] != "attention.share":
            continue
        direction, layer = r["params"]["direction"], r["params"]["layer"]
        if r["status"] == "skip":
            assert direction in skipped
            continue
        query = direction.split("->")[0]
        sums[query, layer] += r["value"]
        seen[query, layer].add(direction.split("->")[1])
        assert r["details"]["query_sum"] == pytest.approx(1.0, abs=1e-5)
    layers = sorted({layer for _, layer in sums})
    assert layers == [1, 2, 3]
    for (query, layer), total in sums.items():
        expected = {"image", "text", "special"} - {d.split("->")[1] for d in skipped if d.startswith(query + "->")}
        assert seen[query, layer] == expected
        assert total == pytest.approx(1.0, abs=1e-5), (model, query, layer)
    # the special share is what was missing from the sum
    special = [r["value"] for r in doc["results"] if r["check"] == "attention.share"
               and r["params"]["direction"] == "text->special"]
    assert len(special) == 3 and all(0.0 < v < 1.0 for v in special)
    directions = doc["series"]["attention.share"]["directions"]
    assert {"text->special", "image->special"} <= set(directions)
