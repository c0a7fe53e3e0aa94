"""End to end on a Flickr30k-format root: --mm-scene-regions=boxes|union reach the image-region states and the
scene-tree probes, and results.json records the conventions (pytester, random:tiny-clip, a hand-made parser)."""
from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from mmdiag.data import flickr30k

from test_scene_regions import COREF, parser

N = 24


def _box(rng: random.Random, name: str) -> str:
    x0, y0 = rng.randint(1, 40), rng.randint(1, 40)
    x1, y1 = x0 + rng.randint(8, 23), y0 + rng.randint(8, 23)
    return (f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
            f"<ymax>{y1}</ymax></bndbox></object>")


@pytest.fixture
def root(tmp_path):
    rng = random.Random(0)
    root = tmp_path / "f30k"
    for sub in ("Sentences", "Annotations", "flickr30k-images"):
        (root / sub).mkdir(parents=True)
    for i in range(1, N + 1):
        (root / "Sentences" / f"{i}.txt").write_text(COREF + "\n", encoding="utf-8")
        # entity 7 (man ... he), 8 (shirt), 9 (two dogs: two boxes) and 12 (boxed, not in the caption)
        objects = "".join(_box(rng, name) for name in ("7", "8", "9", "9", "12"))
        (root / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><size><width>64</width><height>64</height></size>{objects}</annotation>", encoding="utf-8")
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        Image.new("RGB", (64, 64), colour).save(root / "flickr30k-images" / f"{i}.jpg")
    return root


def _image_results(pytester, root, *extra):
    pytester.runpytest("--mm-model=random:tiny-clip", f"--mm-data={root}", f"--mm-samples={N}", "--mm-bootstrap=0",
                       "--mm-no-cache", "-p", "no:cacheprovider", "-k", "probe_distance", "--mm-json=out.json", *extra)
    doc = json.loads((pytester.path / "out.json").read_text())
    results = [r for r in doc["results"] if r["check"] == "probe.distance" and r["value"] is not None]
    assert results, [(r["check"], r["status"], r.get("message")) for r in doc["results"]]
    return ([r for r in results if r["params"].get("modality") == "image"],
            [r for r in results if r["params"].get("modality") == "text"])


def test_scene_regions_modes_end_to_end(pytester, root, monkeypatch):
    monkeypatch.setattr(flickr30k, "spacy_parser", lambda: parser)
    boxes, text = _image_results(pytester, root)
    union, _ = _image_results(pytester, root, "--mm-scene-regions=union", "--mm-probe-punctuation=upos")
    assert boxes and union and text
    b, u = boxes[0]["details"], union[0]["details"]
    assert b["scene_regions"] == "boxes" and u["scene_regions"] == "union"
    # every box is a region (5 a caption) vs one union box per mentioned entity with a box (3 a caption);
    # only the test split is scored but regions_probed counts every caption probed
    assert (b["regions_probed"], u["regions_probed"]) == (5 * N, 3 * N)
    assert text[0]["details"]["punctuation"] == "ptb"
    assert text[0]["details"]["punctuation_sentences"] == {"ptb": N, "upos": 0, "none": 0}
    assert u["punctuation"] == "upos"


def test_bad_option_values_are_usage_errors(pytester, root):
    for option, accepted in (("--mm-scene-regions=box", "accepted: boxes, union"),
                             ("--mm-probe-punctuation=xpos", "accepted: ptb, upos")):
        result = pytester.runpytest("--mm-model=random:tiny-clip", f"--mm-data={root}", option)
        assert result.ret == 4
        assert accepted in result.stderr.str() + result.stdout.str()
