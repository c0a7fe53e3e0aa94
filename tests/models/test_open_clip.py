"""open_clip specs, the usage errors without open_clip, and the reading of open_clip-shaped towers.

These run without open_clip (CI's CPU torch has no torchvision, so open_clip does not import there): the tower
tests use a small replica written from open_clip 3.3.0's ``transformer.Transformer`` / ``VisionTransformer`` /
``CLIP.encode_text``, checking mmdiag's hooks, pooling and masks against that structure (``batch_first``
False included, which the library's default towers do not exercise). The same reading against the real
library is in ``test_open_clip_real.py``, which runs where open_clip and torchvision import.
"""
import pytest
import torch
from PIL import Image
from torch import nn

from mmdiag.data.noise import make_noise
from mmdiag.data.synthetic import make_synthetic
from mmdiag.errors import SpecError
from mmdiag.models import open_clip as oc
from mmdiag.models.base import ModelInfo
from mmdiag.models.open_clip_towers import BlockStates, OpenClipAdapter, OpenClipTokens, pool_positions


# -- specs -----------------------------------------------------------------------------------------------------

def test_the_four_spec_forms_parse(tmp_path):
    weights = tmp_path / "ckpt.pt"
    weights.write_bytes(b"x")
    assert oc.parse_spec("open_clip:ViT-B-32") == oc.OpenClipSpec("ViT-B-32")
    assert oc.parse_spec("open_clip:ViT-B-32/laion2b_s34b_b79k") == oc.OpenClipSpec("ViT-B-32", "laion2b_s34b_b79k")
    hub = oc.parse_spec("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert hub.hf_hub == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert hub.model_name == "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert oc.parse_spec(f"open_clip:ViT-B-32@{weights}") == oc.OpenClipSpec("ViT-B-32", weights=weights)


@pytest.mark.parametrize("spec", ["open_clip:", "open_clip:/tag", "open_clip:ViT-B-32/", "open_clip:A/b/c",
                                  "open_clip:hf-hub:", "open_clip:hf-hub:org", "open_clip:hf-hub:org/a/b",
                                  "open_clip:ViT-B-32@", "open_clip:@/x"])
def test_a_malformed_spec_is_a_usage_error_listing_the_forms(spec):
    with pytest.raises(SpecError, match="open_clip:ARCH/PRETRAINED_TAG"):
        oc.parse_spec(spec)


def test_a_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="no checkpoint file.*nothing.pt"):
        oc.parse_spec(f"open_clip:ViT-B-32@{tmp_path / 'nothing.pt'}")


def test_without_open_clip_the_spec_says_how_to_install_it(monkeypatch):
    from mmdiag.models.load import load_adapter

    monkeypatch.setattr(oc, "installed", lambda: False)
    with pytest.raises(SpecError, match=r"not installed: pip install 'mmdiag\[open_clip\]'"):
        load_adapter("open_clip:ViT-B-32", "cpu")


def test_an_open_clip_that_does_not_import_says_why(monkeypatch):
    def broken(name):
        raise RuntimeError("operator torchvision::nms does not exist\nmore lines")

    monkeypatch.setattr(oc, "installed", lambda: True)
    monkeypatch.setattr(oc.importlib, "import_module", broken)
    with pytest.raises(SpecError, match="does not import .RuntimeError: operator torchvision::nms does not exist.; "
                                        "it needs torchvision"):
        oc.import_open_clip()


def test_the_plugin_turns_a_missing_open_clip_into_a_usage_error(pytester, monkeypatch):
    monkeypatch.setattr(oc, "installed", lambda: False)
    result = pytester.runpytest("--mm-model=open_clip:ViT-B-32", "-p", "no:cacheprovider")
    err = result.stderr.str() + result.stdout.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, err
    assert "mmdiag[open_clip]" in err and "Traceback" not in err


# -- a replica of open_clip's tower structure -----------------------------------------------------------------

class Block(nn.Module):
    """open_clip's ResidualAttentionBlock: pre-LN attention and MLP, called as block(x, attn_mask=...)."""

    def __init__(self, width, heads, batch_first):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=batch_first)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        y = self.ln_1(q_x)
        x = q_x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Stack(nn.Module):
    """open_clip's transformer.Transformer: (L, N, D) inside when not batch_first."""

    def __init__(self, width, layers, heads, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.resblocks = nn.ModuleList([Block(width, heads, batch_first) for _ in range(layers)])

    def forward(self, x, attn_mask=None):
        if not self.batch_first:
            x = x.transpose(0, 1).contiguous()
        for r in self.resblocks:
            x = r(x, attn_mask=attn_mask)
        return x if self.batch_first else x.transpose(0, 1)


class Visual(nn.Module):
    """open_clip's VisionTransformer (pool_type 'tok', no attentional pooler)."""

    def __init__(self, width=16, layers=3, patch=8, size=32, out=12, batch_first=True):
        super().__init__()
        self.grid_size = (size // patch, size // patch)
        self.pool_type, self.attn_pool = "tok", None
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.positional_embedding = nn.Parameter(torch.randn(self.grid_size[0] * self.grid_size[1] + 1, width))
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = Stack(width, layers, 2, batch_first)
        self.proj = nn.Parameter(torch.randn(width, out))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x)[:, 0] @ self.proj


class TinyCLIP(nn.Module):
    """open_clip's CLIP: text through model.transformer with a causal mask, pooled at the argmax id."""

    def __init__(self, vocab=100, context=16, width=16, layers=2, out=12, batch_first=True):
        super().__init__()
        self.visual = Visual(out=out, batch_first=batch_first)
        self.transformer = Stack(width, layers, 2, batch_first)
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, out))
        self.register_buffer("attn_mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)
        self.text_pool_type = "argmax"
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def encode_image(self, image):
        return self.visual(image)

    def encode_text(self, text):
        x = self.transformer(self.token_embedding(text) + self.positional_embedding, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


class CharBPE:
    """A stand-in for open_clip's SimpleTokenizer interface: encode(text) -> ids, sot/eot the two largest ids."""

    vocab_size, sot_token_id, eot_token_id, context_length = 100, 98, 99, 16
    all_special_ids = [98, 99]

    def encode(self, text):
        return [1 + (ord(c) % 90) for c in text.lower()[:3]]  # up to three pieces per word


@pytest.mark.parametrize("batch_first", [True, False])
def test_block_states_are_the_first_input_and_every_block_output_batch_first(batch_first):
    torch.manual_seed(0)
    stack = Stack(8, 3, 2, batch_first).eval()
    x = torch.randn(2, 5, 8)
    with BlockStates(stack) as states:
        final = stack(x)
    expected, h = [x], x if batch_first else x.transpose(0, 1)
    for block in stack.resblocks:
        h = block(h)
        expected.append(h if batch_first else h.transpose(0, 1))
    assert len(states.states) == 4
    for got, want in zip(states.states, expected):
        assert got.shape == (2, 5, 8) and torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(states.states[-1], final)
    assert not stack.resblocks[0]._forward_pre_hooks and not stack.resblocks[1]._forward_hooks  # removed


def test_a_tower_without_resblocks_is_a_usage_error():
    with pytest.raises(SpecError, match="without resblocks"):
        BlockStates(nn.Linear(2, 2))


def test_pool_positions_follow_text_global_pool():
    ids = torch.tensor([[98, 5, 7, 99, 0, 0], [98, 99, 0, 0, 0, 0]])
    assert pool_positions(ids, "argmax", None).tolist() == [3, 1]
    assert pool_positions(ids, "eos", 99).tolist() == [3, 1]
    assert pool_positions(ids, "first", None).tolist() == [0, 0]
    assert pool_positions(ids, "last", None).tolist() == [5, 5]


def test_captions_are_sot_words_eot_zero_padded_with_word_ids():
    from mmdiag.data.types import Sample

    tokens = OpenClipTokens(CharBPE(), 9)
    text = tokens.encode([Sample(uid="a", image=None, caption="red cube"),
                          Sample(uid="b", image=None, caption="a b c d e f g")])
    assert text.input_ids[0].tolist() == [98, *CharBPE().encode("red"), *CharBPE().encode("cube"), 99, 0]
    assert text.word_ids[0].tolist() == [-1, 0, 0, 0, 1, 1, 1, -1, -1]
    assert text.input_ids[1].tolist() == [98, *[1 + ord(c) % 90 for c in "abcdefg"], 99]  # 7 of 7 fit
    assert text.word_ids[1].tolist() == [-1, 0, 1, 2, 3, 4, 5, 6, -1]
    assert text.attention_mask[0].tolist() == [1] * 8 + [0] and text.truncated == 0
    long = tokens.encode([Sample(uid="c", image=None, caption="a b c d e f g h")])
    assert long.truncated == 1 and long.input_ids[0, -1] == 99  # EOT survives truncation
    assert long.word_ids[0].tolist() == [-1, 0, 1, 2, 3, 4, 5, 6, -1]


def _adapter(batch_first=True):
    torch.manual_seed(0)
    model = TinyCLIP(batch_first=batch_first)
    preprocess = lambda img: torch.from_numpy(__import__("numpy").asarray(img.resize((32, 32)), dtype="float32")
                                              ).permute(2, 0, 1) / 255.0
    info = ModelInfo(spec="open_clip:replica", family="open_clip")
    return OpenClipAdapter(model, OpenClipTokens(CharBPE(), 16), preprocess, info, torch.device("cpu"),
                           torch.float32)


@pytest.mark.parametrize("batch_first", [True, False])
def test_the_adapter_pools_the_tokens_the_model_pools(batch_first):
    adapter = _adapter(batch_first)
    assert adapter.layer_counts() == {"image": 4, "text": 3}
    samples = make_synthetic(3, seed=0)
    trace = adapter.forward(adapter.prepare(samples))
    model = adapter.model
    rows = torch.arange(3)
    text_last, image_last = trace.hidden["text"][-1], trace.hidden["image"][-1]
    with torch.inference_mode():  # the model's own pooling and projection applied to the last recorded states
        pooled_text = model.ln_final(text_last)[rows, trace.pool_index["text"]] @ model.text_projection
        pooled_image = model.visual.ln_post(image_last[:, 0]) @ model.visual.proj
    assert torch.allclose(pooled_text, trace.embeds["text"], atol=1e-5)
    assert image_last.shape == (3, 17, 16) and trace.patch_grid == (4, 4) and trace.patch_offset == 1
    assert torch.allclose(pooled_image, trace.embeds["image"], atol=1e-5)
    lengths = trace.mask["text"].sum(dim=1)
    assert (lengths - 1 == trace.pool_index["text"]).all()  # real tokens end at the pooled EOT
    assert trace.logit_scale == pytest.approx(float(torch.tensor(2.0).exp()))


def test_the_noise_control_is_wrapped_in_sot_eot_and_recorded():
    from mmdiag.record import record

    adapter = _adapter()
    noise = make_noise(4, seed=0, vocab_size=len(adapter.tokenizer), exclude_ids=adapter.tokenizer.all_special_ids,
                       image_size=32)
    acts = record(adapter, noise, 2)
    assert acts.n == 4 and len(acts.pooled["text"]) == 3
    assert adapter.noise_special_ids == {"bos": 98, "eos": 99, "pad": 0}
    text = adapter.prepare(noise)["text"]
    assert (text.input_ids[:, 0] == 98).all()
    assert (text.input_ids[torch.arange(4), text.input_ids.argmax(dim=-1)] == 99).all()
    assert isinstance(noise[0].image, Image.Image)


@pytest.mark.parametrize("mode, want", [("shortest", "crop"), ("longest", "pad"), ("squash", "resize")])
def test_the_preprocess_geometry_follows_open_clips_resize_mode(mode, want):
    from types import SimpleNamespace

    from mmdiag.models.open_clip_towers import PreprocessGeometry
    from mmdiag.models.regions import map_box, preprocess_geometry

    visual = SimpleNamespace(preprocess_cfg={"size": (32, 32), "resize_mode": mode}, image_size=(32, 32))
    geometry = preprocess_geometry(PreprocessGeometry.of(visual))
    assert geometry == (want, (32, 32))
    # a 96x48 image: 'longest' scales by 1/3 and pads 8 rows above and below, 'shortest' by 2/3 and cuts 16 columns
    expected = {"pad": (0.0, 8.0, 32.0, 24.0), "crop": (0.0, 0.0, 32.0, 32.0), "resize": (0.0, 0.0, 32.0, 32.0)}
    assert map_box((0, 0, 96, 48), (96, 48), geometry) == expected[want]
    assert map_box((48, 0, 72, 24), (96, 48), ("pad", (32, 32))) == (16.0, 8.0, 24.0, 16.0)
