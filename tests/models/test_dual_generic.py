"""The generic dual encoder: SigLIP 2, ALIGN, AltCLIP, Chinese-CLIP and MetaCLIP 2 run from a save_pretrained
directory (tiny random configs, tokenizers and image processors built offline) with per-layer tower states."""
import json

import pytest
import torch
import transformers as T

from mmdiag.data.noise import make_noise
from mmdiag.data.synthetic import make_synthetic
from mmdiag.models import offline
from mmdiag.models.dual_generic import MODEL_TYPES, GenericDualAdapter, cnn_states

VOCAB = 120
LAYERS = 2
VIT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 2,
       "image_size": 32, "patch_size": 8}


def _text(**extra):
    return {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": LAYERS,
            "num_attention_heads": 2, "max_position_embeddings": 40, **extra}


def build(model_type):
    """(model, tokenizer, image processor) of a tiny random ``model_type``."""
    torch.manual_seed(0)
    if model_type == "siglip2":
        text = _text(max_position_embeddings=16, pad_token_id=1, eos_token_id=2, bos_token_id=None)
        vision = {k: v for k, v in VIT.items() if k != "image_size"} | {"num_patches": 16}
        model = T.Siglip2Model(T.Siglip2Config(text_config=text, vision_config=vision))
        return model, offline.siglip_tokenizer(VOCAB, 1, 2, 3, 16), T.Siglip2ImageProcessorPil(
            patch_size=8, max_num_patches=16)
    if model_type == "align":
        vision = {"image_size": 32, "hidden_dim": 64, "width_coefficient": 0.1, "depth_coefficient": 0.1}
        # the image embedding is the last block's channels (320 scaled by the width: 32); text projects to it
        model = T.AlignModel(T.AlignConfig(text_config=_text(), vision_config=vision, projection_dim=32))
        return model, offline.bert_tokenizer(VOCAB, 40), T.EfficientNetImageProcessorPil(
            size={"height": 32, "width": 32})
    if model_type == "altclip":  # XLM-R text tower: <s>=0 <pad>=1 </s>=2, positions offset by the padding index
        text = _text(max_position_embeddings=42, pad_token_id=1, bos_token_id=0, eos_token_id=2, project_dim=16)
        model = T.AltCLIPModel(T.AltCLIPConfig(text_config=text, vision_config=VIT, projection_dim=16))
        tok = offline.word_tokenizer(VOCAB, {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, ("<s>", "</s>"),
                                     pad="<pad>", unk="<unk>", max_length=40)
        return model, tok, offline.clip_image_processor(32)
    if model_type == "chinese_clip":
        model = T.ChineseCLIPModel(T.ChineseCLIPConfig(text_config=_text(), vision_config=VIT, projection_dim=16))
        return model, offline.bert_tokenizer(VOCAB, 40), T.ChineseCLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    assert model_type == "metaclip_2"
    text = _text(max_position_embeddings=32, bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, pad_token_id=1)
    model = T.MetaClip2Model(T.MetaClip2Config(text_config=text, vision_config=VIT, projection_dim=16))
    return model, offline.clip_tokenizer(VOCAB, VOCAB - 2, VOCAB - 1, 32), offline.clip_image_processor(32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each model type written with save_pretrained, and run once in this process (pytester's in-process runs
    keep only modules imported before them)."""
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record

    out = {}
    for model_type in MODEL_TYPES:
        directory = tmp_path_factory.mktemp(model_type)
        for part in build(model_type):
            part.save_pretrained(directory)
        adapter = load_adapter(str(directory), "cpu")
        record(adapter, make_synthetic(2, seed=0), 2, words=True, attentions=True)
        out[model_type] = directory
    return out


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_towers_give_one_state_per_layer_and_projected_embeddings(saved, model_type):
    from mmdiag.models.load import load_adapter

    adapter = load_adapter(str(saved[model_type]), "cpu")
    assert isinstance(adapter, GenericDualAdapter) and adapter.family == "dual"
    adapter.output_attentions = True
    samples = make_synthetic(3, seed=1)
    trace = adapter.forward(adapter.prepare(samples))
    counts = adapter.layer_counts()
    assert counts["text"] == LAYERS + 1
    for modality in ("image", "text"):
        assert len(trace.hidden[modality]) == counts[modality]
        assert trace.embeds[modality].shape[0] == 3 and trace.embeds[modality].dim() == 2
        first = trace.hidden[modality][0]
        assert trace.mask[modality].shape == first.shape[:2] == trace.content[modality].shape
    # the embedding the adapter reports is the one get_*_features computes on the same inputs
    batch = adapter.prepare(samples)
    extra = batch["vision_extra"]
    with torch.inference_mode():
        image = adapter.model.get_image_features(pixel_values=batch["pixel_values"], **extra, return_dict=True)
    assert torch.allclose(trace.embeds["image"], image.pooler_output.flatten(1), atol=1e-5)
    if model_type == "align":  # an EfficientNet: no attention maps, each layer the mean of its feature map
        assert "image" not in trace.attention and trace.patch_grid is None
        assert all(h.shape[1] == 1 for h in trace.hidden["image"])
    else:
        assert len(trace.attention["image"].maps) == LAYERS == len(trace.attention["text"].maps)
        assert trace.patch_grid == (4, 4)
    assert trace.patch_offset == (1 if model_type in ("altclip", "chinese_clip", "metaclip_2") else 0)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_noise_captions_are_wrapped_like_real_ones(saved, model_type):
    from mmdiag.models.load import load_adapter

    adapter = load_adapter(str(saved[model_type]), "cpu")
    tok = adapter.tokenizer
    template = tok("", add_special_tokens=True)["input_ids"]  # what the tokenizer puts around a caption
    noise = make_noise(4, seed=0, vocab_size=len(tok), exclude_ids=tok.all_special_ids, image_size=32)
    text = adapter.prepare(noise)["text"]
    lengths = text.attention_mask.sum(dim=1)
    bos, eos, _ = adapter.special_ids()
    assert [t for t in (bos, eos) if t is not None] == template
    if bos is not None:
        assert (text.input_ids[:, 0] == bos).all()
    last = text.input_ids[torch.arange(4), lengths - 1]
    assert (last == eos).all()
    assert adapter.noise_special_ids == {"bos": bos, "eos": eos, "pad": adapter.special_ids()[2]}


def test_a_cnn_layer_is_the_spatial_mean_of_its_map():
    maps = (torch.arange(24.0).reshape(1, 2, 3, 4), torch.ones(1, 5, 7))
    states = cnn_states(maps)
    assert states[0].shape == (1, 1, 2)
    assert states[0][0, 0].tolist() == [5.5, 17.5]  # means of 0..11 and 12..23
    assert states[1] is maps[1]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_saved_directory_runs_the_builtin_checks(pytester, saved, model_type):
    result = pytester.runpytest(f"--mm-model={saved[model_type]}", "--mm-samples=6", "--mm-batch-size=6",
                                "--mm-bootstrap=0", "-p", "no:cacheprovider", "--mm-json=out.json", "--color=no",
                                "-k", "cone or gap or geometry")
    out = result.stdout.str()
    assert result.ret in (0, 1), out
    assert "Traceback" not in out
    doc = json.loads((pytester.path / "out.json").read_text())
    assert doc["model"]["family"] == "dual" and doc["model"]["model_type"] == model_type
    valued = {r["check"].split(".")[0] for r in doc["results"] if r["value"] is not None}
    assert {"cone", "gap", "geometry"} <= valued
    assert not [r for r in doc["results"] if r["status"] == "error"]
    layers = {r["params"]["layer"] for r in doc["results"]
              if r["check"] == "cone.layer" and r["params"]["modality"] == "text"}
    assert layers == set(range(LAYERS + 1))
