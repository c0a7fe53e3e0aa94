"""The noise control wraps its random token ids with the tokenizer's special ids, not a stale config's.

The published openai/clip-vit-base-patch32 config.json says bos/eos/pad = 0/2/1 while its tokenizer uses
49406/49407; the CLIP here has the same mismatch (config 0/2/1, tokenizer VOCAB-2/VOCAB-1).
"""
import json
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st
from transformers import CLIPConfig, CLIPModel

from mmdiag.data.noise import make_noise
from mmdiag.models import offline
from mmdiag.models.special import resolve_special_ids

VOCAB = 120
BOS, EOS = VOCAB - 2, VOCAB - 1  # the real CLIP's specials are its two largest ids too


def legacy_clip(directory):
    """A tiny CLIP whose config carries the published 0/2/1 ids while its tokenizer uses BOS/EOS."""
    text = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 2,
            "pad_token_id": 1}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(directory)
    offline.clip_tokenizer(VOCAB, BOS, EOS, 32).save_pretrained(directory)
    offline.clip_image_processor(32).save_pretrained(directory)
    return directory


def test_the_tokenizer_ids_win_over_the_config_ids():
    from types import SimpleNamespace

    tok = SimpleNamespace(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    cfg = SimpleNamespace(bos_token_id=0, eos_token_id=2, pad_token_id=1)
    assert resolve_special_ids(tok, cfg).to_json() == {"bos": 49406, "eos": 49407, "pad": 49407}


def test_the_config_fills_only_what_the_tokenizer_lacks_and_says_so():
    from types import SimpleNamespace

    from mmdiag.api import MMDiagWarning

    tok = SimpleNamespace(bos_token_id=None, eos_token_id=7, pad_token_id=None)
    cfg = SimpleNamespace(bos_token_id=5, eos_token_id=2, pad_token_id=None)
    with pytest.warns(MMDiagWarning, match="no bos token.*bos=5 from the model config"):
        ids = resolve_special_ids(tok, cfg, default_pad=3)
    assert ids.to_json() == {"bos": 5, "eos": 7, "pad": 3} and ids.from_config == ("bos",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing taken from the config: no warning
        assert resolve_special_ids(tok, cfg, use=("eos",)).to_json() == {"bos": None, "eos": 7, "pad": 0}


def test_noise_captions_start_with_bos_and_pool_on_eos(tmp_path):
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record  # noqa: F401  (the adapter is the one a run builds)

    adapter = load_adapter(str(legacy_clip(tmp_path / "clip")), "cpu")
    assert adapter.special_ids() == (BOS, EOS, EOS)  # the tokenizer pads with EOS, as CLIP's does
    samples = make_noise(6, seed=1, vocab_size=len(adapter.tokenizer), exclude_ids=adapter.tokenizer.all_special_ids,
                         image_size=32)
    batch = adapter.prepare(samples)
    ids, mask = batch["text"].input_ids, batch["text"].attention_mask.bool()
    lengths = mask.sum(dim=1)
    assert (ids[:, 0] == BOS).all()
    assert (ids[torch.arange(len(samples)), lengths - 1] == EOS).all()
    trace = adapter.forward(batch)
    # the config's eos is 2, so CLIP pools the largest id: with the tokenizer's ids that is the EOS position
    assert trace.pool_index["text"].tolist() == (lengths - 1).tolist()
    assert adapter.noise_special_ids == {"bos": BOS, "eos": EOS, "pad": EOS}


def test_results_json_records_the_ids_the_noise_control_used(pytester, tmp_path):
    directory = legacy_clip(tmp_path / "clip")
    result = pytester.runpytest(f"--mm-model={directory}", "--mm-samples=6", "--mm-bootstrap=0",
                                "--mm-controls=noise", "-p", "no:cacheprovider", "--mm-json=out.json",
                                "-k", "cone_final")
    assert result.ret in (0, 1), result.stdout.str()
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["data"]["special_ids"] == {"bos": BOS, "eos": EOS, "pad": EOS}


def test_a_run_on_real_captions_records_no_special_ids(pytester, tmp_path):
    directory = legacy_clip(tmp_path / "clip")
    result = pytester.runpytest(f"--mm-model={directory}", "--mm-samples=6", "--mm-bootstrap=0",
                                "-p", "no:cacheprovider", "--mm-json=out.json", "-k", "gap_norm")
    assert result.ret in (0, 1), result.stdout.str()
    assert "special_ids" not in json.loads((pytester.path / "out.json").read_text())["data"]


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.lists(st.integers(3, 90), min_size=0, max_size=12), min_size=1, max_size=4),
       bos=st.one_of(st.none(), st.just(98)), eos=st.one_of(st.none(), st.just(99)), max_length=st.integers(3, 10))
def test_raw_ids_are_wrapped_with_exactly_the_ids_recorded(rows, bos, eos, max_length):
    from mmdiag.data.types import Sample
    from mmdiag.models.dual import tokenize_captions

    samples = [Sample(uid=str(i), image=None, caption="", token_ids=tuple(r)) for i, r in enumerate(rows)]
    text = tokenize_captions(None, samples, max_length, bos_id=bos, eos_id=eos, pad_id=1)
    assert text.special == {"bos": bos, "eos": eos, "pad": 1}
    room = max_length - (bos is not None) - (eos is not None)
    for i, ids in enumerate(rows):
        kept = ids[:room]
        row = text.input_ids[i][text.attention_mask[i].bool()].tolist()
        assert row == ([bos] if bos is not None else []) + kept + ([eos] if eos is not None else [])
        assert int((text.word_ids[i] >= 0).sum()) == len(kept)
        assert (text.input_ids[i][~text.attention_mask[i].bool()] == 1).all()
    assert text.truncated == sum(len(r) > room for r in rows)


def test_a_cached_noise_pass_still_records_its_ids(pytester, tmp_path):
    """--mm-data=noise twice: the second run reads the activations from the cache (nothing is tokenised), and
    results.json still says which ids the noise captions were wrapped with."""
    directory = legacy_clip(tmp_path / "clip")
    docs = []
    for name in ("first.json", "second.json"):
        result = pytester.runpytest(f"--mm-model={directory}", "--mm-data=noise", "--mm-samples=6",
                                    "--mm-bootstrap=0", "-p", "no:cacheprovider", f"--mm-json={name}",
                                    "-k", "gap_norm")
        assert result.ret in (0, 1), result.stdout.str()
        docs.append(json.loads((pytester.path / name).read_text()))
    assert "hit" in json.dumps(docs[1]["run"]).lower(), docs[1]["run"]  # the second pass came from the cache
    for doc in docs:
        assert doc["data"]["special_ids"] == {"bos": BOS, "eos": EOS, "pad": EOS}
