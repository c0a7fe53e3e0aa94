"""A COCO file with several captions per image, end to end: every caption is kept and the gap checks use each
image once (their results say how many images and captions), matching a direct recomputation on the embeddings."""
import json

import numpy as np
import pytest

from mmdiag.data.groups import text_to_image_map
from mmdiag.data.load import load_samples
from mmdiag.metrics.gap import gap_norm, relative_modality_gap, retrieval_recall
from mmdiag.metrics.shift import shift_curve

FAST = ("--mm-model=random:tiny-clip", "--mm-batch-size=4", "-p", "no:cacheprovider", "--color=no",
        "--mm-bootstrap=0", "--mm-no-cache")


def _coco(folder, n_images=5, per=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png"})
        annotations += [{"image_id": i, "caption": f"picture {i} caption {k}"} for k in range(per)]
    rng.shuffle(annotations)  # COCO interleaves the captions of different images
    path = folder / "captions_images.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_keeps_every_caption_grouped_by_image(tmp_path):
    samples = load_samples(str(_coco(tmp_path)), 100)
    groups = text_to_image_map(samples)
    assert len(samples) == 15 and len(groups.image_rows) == 5
    assert all(samples[r].meta["image_key"] == f"coco-{samples[r].uid.split('-')[1].split('#')[0]}"
               for r in groups.image_rows)


def test_gap_checks_count_each_image_once(pytester, tmp_path):
    data = _coco(tmp_path / "coco")
    result = pytester.runpytest(*FAST, f"--mm-data={data}", "--mm-samples=15", "--mm-json=out.json",
                                "--mm-shift-batch=4", "-k", "gap_norm or gap_rmg or gap_retrieval or gap_l2i or shift")
    doc = json.loads((pytester.path / "out.json").read_text())
    found = {r["check"]: r for r in doc["results"]}
    assert doc["data"]["n"] == 15, result.stdout.str()
    for check in ("gap.norm", "gap.l2i", "gap.rmg", "gap.retrieval"):
        assert found[check]["details"]["images"] == 5 and found[check]["details"]["captions"] == 15, check
    assert 0.0 <= found["gap.rmg"]["value"] <= 1.0
    assert found["gap.retrieval"]["details"]["chance_t2i"] == pytest.approx(1 / 5)

    # the same numbers, recomputed directly from the model's embeddings of the same samples
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record

    samples = load_samples(str(data), 15)
    acts = record(load_adapter("random:tiny-clip", "cpu"), samples, 4)
    groups = text_to_image_map(samples)
    img = acts.embeds["image"][list(groups.image_rows)].double().numpy()
    txt = acts.embeds["text"].double().numpy()
    mapping = np.asarray(groups.text_to_image)
    assert found["gap.norm"]["value"] == pytest.approx(gap_norm(img, txt), abs=1e-5)
    assert found["gap.rmg"]["value"] == pytest.approx(relative_modality_gap(img, txt, mapping), abs=1e-5)
    assert found["gap.retrieval"]["value"] == pytest.approx(retrieval_recall(img, txt, mapping)[1], abs=1e-9)
    # the shift experiment: three caption rounds of 5 images, one batch of 4 distinct images from each
    shift = found["gap.shift_optimum"]
    assert shift["details"]["batching"]["batches"] == 3
    assert "no batch holds two captions of one image" in shift["details"]["captions_per_image"]
    curve = shift_curve(acts.embeds["image"].double().numpy(), txt, temperature=1.0 / acts.logit_scale,
                        batch_size=4, seed=0, text_to_image=mapping)
    assert shift["value"] == curve["optimum"] and shift["details"]["gap_norm"] == pytest.approx(curve["gap_norm"])
    distinct = {tuple(np.round(row, 5)) for row in acts.embeds["image"].numpy()}
    assert len(distinct) == 5  # the forward pass saw each image once per caption: 15 rows, 5 distinct


def test_grouped_shift_optimum_bootstraps_with_the_map_when_gated(pytester, tmp_path):
    """A threshold on gap.shift_optimum makes its (expensive) bootstrap run: each resample is batched afresh with
    the resampled captions' images, and the run gives an interval."""
    data = _coco(tmp_path / "coco")
    args = [a for a in FAST if a != "--mm-bootstrap=0"]
    result = pytester.runpytest(*args, f"--mm-data={data}", "--mm-samples=15", "--mm-json=out.json",
                                "--mm-shift-batch=4", "--mm-bootstrap=20", "--mm-threshold=gap.shift_optimum=<=:5",
                                "-k", "shift")
    assert result.ret in (0, 1), result.stdout.str()
    found = {r["check"]: r for r in json.loads((pytester.path / "out.json").read_text())["results"]}
    shift = found["gap.shift_optimum"]
    assert shift["status"] in ("pass", "warn", "fail") and shift["ci"]["method"].startswith("bootstrap")
    assert shift["ci"]["low"] <= shift["ci"]["high"]
