"""The zoo's training script: loss, tokenizer, determinism, saving (mmdiag/zoo/training/)."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdiag.data.synthetic import SYNTHETIC_VOCAB, make_synthetic
from mmdiag.metrics.shift import symmetric_infonce
from mmdiag.zoo import training as zt

TINY = zt.TrainConfig(steps=15, batch_size=16, warmup=3, n_eval=0, log_every=0, lr=1e-3)


@pytest.fixture(scope="module")
def scenes():
    # rendered at 64 px (the model's input size) to keep the tests fast
    return make_synthetic(32, seed=zt.TRAIN_DATA_SEED, image_size=64)


@pytest.fixture(scope="module")
def tiny_run(scenes):
    return zt.train(TINY, log=None, train_samples=scenes)


def _numpy_infonce(img: np.ndarray, txt: np.ndarray, scale: float) -> float:
    """Brute-force symmetric InfoNCE with explicit loops over rows and columns."""
    a = img / np.linalg.norm(img, axis=1, keepdims=True)
    b = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    n = a.shape[0]
    s = scale * a @ b.T
    i2t = [-(s[i, i] - math.log(sum(math.exp(s[i, j]) for j in range(n)))) for i in range(n)]
    t2i = [-(s[j, j] - math.log(sum(math.exp(s[i, j]) for i in range(n)))) for j in range(n)]
    return 0.5 * (sum(i2t) / n + sum(t2i) / n)


def test_loss_falls(tiny_run):
    """A smoke test of the optimisation direction: 15 steps from random init only take the
    loss from above log B down to about log B (uniform logits); real learning is asserted on
    the shipped models (tests/zoo/test_zoo_models.py: held-out retrieval far above chance)."""
    losses = tiny_run.losses
    assert len(losses) == TINY.steps
    assert all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < first - 0.1, (first, last)
    assert last < math.log(TINY.batch_size) + 0.05


def test_training_is_deterministic(scenes, tiny_run):
    again = zt.train(replace(TINY, steps=5), log=None, train_samples=scenes)
    assert again.losses == tiny_run.losses[:5]
    other = zt.train(replace(TINY, steps=5, seed=1), log=None, train_samples=scenes)
    assert other.losses != again.losses


def test_learned_temperature_moves_and_is_clamped(tiny_run):
    scale = float(tiny_run.model.logit_scale.detach())
    assert tiny_run.model.logit_scale.requires_grad
    assert scale != pytest.approx(zt.INIT_LOGIT_SCALE, abs=1e-7)
    assert 0.0 <= scale <= zt.MAX_LOGIT_SCALE


@pytest.mark.parametrize("tau", [1.0, 0.01])
def test_fixed_temperature_is_frozen(scenes, tau):
    run = zt.train(replace(TINY, steps=3, temperature=tau), log=None, train_samples=scenes)
    assert not run.model.logit_scale.requires_grad
    assert float(run.model.logit_scale.exp()) == pytest.approx(1.0 / tau, rel=1e-6)
    assert run.logit_scale == pytest.approx(1.0 / tau, rel=1e-6)


def test_loss_matches_references():
    gen = torch.Generator().manual_seed(3)
    img, txt = torch.randn(7, 5, generator=gen, dtype=torch.float64), torch.randn(7, 5, generator=gen,
                                                                                 dtype=torch.float64)
    for tau in (1.0, 0.1, 0.01):
        ours = float(zt.contrastive_loss(img, txt, torch.tensor(math.log(1 / tau), dtype=torch.float64)))
        assert ours == pytest.approx(symmetric_infonce(img, txt, tau), rel=1e-9)
        assert ours == pytest.approx(_numpy_infonce(img.numpy(), txt.numpy(), 1 / tau), rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 9), scale=st.floats(0.0, 4.6), seed=st.integers(0, 10_000),
       stretch=st.floats(0.1, 10.0))
def test_loss_properties(n, scale, seed, stretch):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    txt = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    s = torch.tensor(scale, dtype=torch.float64)
    loss = float(zt.contrastive_loss(img, txt, s))
    # invariant to rescaling rows (cosine logits) and symmetric in the modalities
    assert float(zt.contrastive_loss(stretch * img, txt, s)) == pytest.approx(loss, rel=1e-9, abs=1e-12)
    assert float(zt.contrastive_loss(txt, img, s)) == pytest.approx(loss, rel=1e-9, abs=1e-12)
    # identical embeddings everywhere: every logit ties, loss = log n exactly
    same = torch.ones(n, 4, dtype=torch.float64)
    assert float(zt.contrastive_loss(same, same, s)) == pytest.approx(math.log(n), rel=1e-12)


def test_tokenizer_is_small_and_matches_config():
    cfg, tok = zt.zoo_config(), zt.zoo_tokenizer()
    tc = cfg.text_config
    assert len(tok) == tc.vocab_size <= 300
    assert tok.bos_token_id == tc.bos_token_id and tok.eos_token_id == tc.eos_token_id
    assert tc.eos_token_id != 2            # CLIP then pools the first EOS, not the argmax id
    assert tok.pad_token_id == tc.eos_token_id
    ids = tok.convert_tokens_to_ids(list(SYNTHETIC_VOCAB))
    assert tok.unk_token_id not in ids     # every grammar word is one token
    enc = tok(["a", "red", "circle", "."], is_split_into_words=True)["input_ids"]
    assert enc[0] == tc.bos_token_id and enc[-1] == tc.eos_token_id and len(enc) == 6


def test_embed_text_chunks_are_exact(scenes):
    model, tok, proc = zt.build_model(0)
    data = zt.encode(scenes[:12], tok, proc)
    with torch.no_grad():
        one = zt.embed(model, data["pixels"], data["ids"], data["mask"], text_chunks=1)
        four = zt.embed(model, data["pixels"], data["ids"], data["mask"], text_chunks=4)
    torch.testing.assert_close(one[0], four[0])
    torch.testing.assert_close(one[1], four[1], atol=1e-5, rtol=1e-5)


def test_cli_trains_saves_and_loads(tmp_path, capsys):
    from mmdiag.models.load import load_adapter

    out = tmp_path / "m"
    rc = zt.main(["shapes-clip-t0.1", "--out", str(out), "--steps", "2", "--n-train", "32",
                  "--batch-size", "16", "--n-eval", "16", "--log-every", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "step     1  loss" in text and "image→text" in text and "text→image" in text
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    adapter = load_adapter(str(out), "cpu")
    assert adapter.family == "clip"
    assert float(adapter.model.logit_scale.detach().exp()) == pytest.approx(10.0, rel=1e-6)
    samples = make_synthetic(4, seed=0, image_size=64)
    trace = adapter.forward(adapter.prepare(samples))
    assert trace.embeds["image"].shape == (4, 64) and trace.embeds["text"].shape == (4, 64)


def test_rejects_bad_settings(scenes):
    with pytest.raises(ValueError):
        zt.train(replace(TINY, seed=-1), log=None, train_samples=scenes)
    with pytest.raises(ValueError):
        zt.train(replace(TINY, batch_size=128), log=None, train_samples=scenes)
