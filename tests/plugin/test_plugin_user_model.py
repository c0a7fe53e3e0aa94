"""Bring your own model: an mm_model fixture override, and a save_pretrained directory."""
import json

CONFTEST = '''
import numpy as np
import pytest
import torch

from mmdiag.models.base import Trace


class ToyAdapter:
    """A hand-written two-tower 'model': pixel statistics and hashed words through random maps."""

    family = "toy"
    modalities = ("image", "text")

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.pixel_map = torch.randn(3, 8, generator=g)
        self.word_table = torch.randn(97, 8, generator=g)
        self.calls = 0

    def layer_counts(self):
        return {"image": 2, "text": 2}

    def prepare(self, samples):
        pixels = torch.stack([torch.tensor(np.asarray(s.image.resize((4, 4))), dtype=torch.float32)
                              .reshape(16, 3) / 255 for s in samples])
        words = [s.words or tuple(s.caption.split()) for s in samples]
        width = max(len(w) for w in words)
        ids = torch.zeros(len(samples), width, dtype=torch.long)
        word_ids = torch.full((len(samples), width), -1)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                ids[i, j] = sum(map(ord, w)) % 97
                word_ids[i, j] = j
        return pixels, ids, word_ids

    def forward(self, batch):
        self.calls += 1
        pixels, ids, word_ids = batch
        img0 = pixels @ self.pixel_map                     # (B, 16 patches, 8)
        img1 = torch.tanh(img0.cumsum(1))
        txt0 = self.word_table[ids]                        # (B, T, 8)
        txt1 = torch.tanh(txt0.cumsum(1))
        mask = word_ids >= 0
        patches = torch.ones(pixels.shape[:2], dtype=torch.bool)
        last = mask.sum(1) - 1
        return Trace(
            hidden={"image": (img0, img1), "text": (txt0, txt1)},
            mask={"image": patches, "text": mask},
            pool_index={"image": None, "text": last},
            content={"image": patches, "text": mask},
            embeds={"image": img1.mean(1), "text": txt1[torch.arange(len(ids)), last]},
            word_ids=word_ids, logit_scale=10.0)


ADAPTER = ToyAdapter()


@pytest.fixture(scope="session")
def mm_model():
    return ADAPTER


def pytest_sessionfinish(session):
    print("FORWARD_CALLS", ADAPTER.calls)
'''


def test_fixture_override_supplies_the_model(pytester):
    pytester.makeconftest(CONFTEST)
    result = pytester.runpytest("--mm-checks", "--mm-samples=12", "--mm-batch-size=4", "-v", "--color=no",
                                "--mm-json=r.json", "-p", "no:cacheprovider", "-s")
    out = result.stdout.str()
    assert "test_cone_layer[image-L01]" in out and "test_gap_norm" in out
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["model"]["family"] == "toy"
    assert any(r["check"] == "gap.norm" and r["value"] is not None for r in doc["results"])
    # one forward pass over 12 samples in batches of 4, shared by every check
    result.stdout.fnmatch_lines(["*FORWARD_CALLS 3*"])


def test_save_pretrained_directory_loads_like_a_hub_id(pytester, tmp_path):
    from mmdiag.models.load import save_preset

    model_dir = save_preset("random:tiny-clip", tmp_path / "tiny-clip", seed=3)
    result = pytester.runpytest(f"--mm-model={model_dir}", "--mm-samples=8", "--mm-batch-size=8",
                                "-p", "no:cacheprovider", "--mm-json=r.json", "-k", "gap_norm or cone_final",
                                "--mm-threshold=cone.final=<=:1")
    assert result.ret == 0, result.stdout.str()
    doc = json.loads((pytester.path / "r.json").read_text())
    assert doc["model"]["family"] == "clip" and doc["model"]["weights"] == "pretrained weights"


def test_directory_and_preset_give_the_same_numbers(tmp_path):
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.metrics.gap import gap_norm
    from mmdiag.models.load import load_adapter, save_preset
    from mmdiag.record import record

    samples = make_synthetic(6, seed=1)
    preset = record(load_adapter("random:tiny-clip", "cpu", seed=3), samples, 6)
    saved = record(load_adapter(str(save_preset("random:tiny-clip", tmp_path / "m", seed=3)), "cpu"), samples, 6)
    a = gap_norm(preset.embeds["image"], preset.embeds["text"])
    b = gap_norm(saved.embeds["image"], saved.embeds["text"])
    assert abs(a - b) < 1e-5
