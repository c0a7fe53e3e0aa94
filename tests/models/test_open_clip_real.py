"""``--mm-model=open_clip:...`` against the real open_clip library (open-clip-torch 3.x and torchvision).

Every spec form is exercised offline on a tiny architecture registered through open_clip's own config
mechanism (``open_clip.add_model_config``): random init, ``ARCH@PATH`` (a ``torch.save``d state dict),
``hf-hub:ORG/NAME`` and ``ARCH/TAG`` from a Hugging Face cache laid out as ``hf_hub_download`` reads it.
Skipped, with the reason, where torchvision or open_clip does not import (the CPU-torch CI machines).
"""
import json

import pytest
import torch
from PIL import Image

try:  # a torchvision built for another torch raises OSError/RuntimeError, not ImportError
    import torchvision  # noqa: F401
except Exception as exc:  # noqa: BLE001
    pytest.skip(f"open_clip needs torchvision, which does not import here ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})", allow_module_level=True)
open_clip = pytest.importorskip("open_clip",
                                reason="open-clip-torch is not installed (pip install 'mmdiag[open_clip]')")

from mmdiag.data.synthetic import make_synthetic  # noqa: E402
from mmdiag.errors import SpecError  # noqa: E402
from mmdiag.models.load import load_adapter  # noqa: E402
from mmdiag.models.open_clip import weights_fingerprint  # noqa: E402
from mmdiag.models.regions import map_box, preprocess_geometry  # noqa: E402

ARCH = "mmdiag-tiny-oc"
CONFIG = {"embed_dim": 16,
          "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
          "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3}}
REPO = "mmdiag-test/tiny-oc"


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    """The tiny architecture, registered with open_clip the way a user adds a config JSON."""
    path = tmp_path_factory.mktemp("oc_configs") / f"{ARCH}.json"
    path.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(path)
    assert ARCH in open_clip.list_models()
    return ARCH


def _state_dict_file(path, seed):
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH)
    torch.save(model.state_dict(), path)
    return model


@pytest.fixture
def hub_cache(arch, tmp_path, monkeypatch):
    """A Hugging Face cache holding ``REPO`` (open_clip_config.json and the weights), used offline."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIG, "preprocess_cfg": {}}))
    model = _state_dict_file(snapshot / "open_clip_pytorch_model.bin", seed=7)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return model


def test_random_init_matches_the_library_end_to_end(arch):
    adapter = load_adapter(f"open_clip:{arch}", "cpu", seed=3)
    assert adapter.layer_counts() == {"image": 3, "text": 4}
    assert adapter.special_ids() == (49406, 49407, 0)
    samples = make_synthetic(4, seed=0)
    batch = adapter.prepare(samples)
    lib_tokens = open_clip.get_tokenizer(arch)([s.caption for s in samples])
    assert torch.equal(batch["text"].input_ids, lib_tokens)  # word-by-word ids = the library's tokenizer
    _, _, preprocess = open_clip.create_model_and_transforms(arch)
    assert torch.allclose(batch["pixel_values"], torch.stack([preprocess(s.image.convert("RGB")) for s in samples]))
    trace = adapter.forward(batch)
    model = adapter.model
    with torch.inference_mode():
        assert torch.allclose(trace.embeds["text"], model.encode_text(lib_tokens), atol=1e-5)
        rows = torch.arange(4)
        pooled = model.ln_final(trace.hidden["text"][-1])[rows, trace.pool_index["text"]] @ model.text_projection
        assert torch.allclose(pooled, trace.embeds["text"], atol=1e-5)
        visual = model.visual
        assert torch.allclose(trace.hidden["image"][0], visual._embeds(batch["pixel_values"]), atol=1e-6)
        assert torch.allclose(visual.ln_post(trace.hidden["image"][-1][:, 0]) @ visual.proj, trace.embeds["image"],
                              atol=1e-5)
    assert len(trace.hidden["text"]) == 4 and trace.hidden["text"][0].shape == (4, 16, 32)
    assert trace.hidden["image"][-1].shape == (4, 17, 32) and trace.patch_grid == (4, 4)
    assert (lib_tokens[rows, trace.pool_index["text"]] == 49407).all()  # pooled at the EOT
    assert adapter.info.extra["model_type"] == f"open_clip:{arch}" and "seed 3" in adapter.info.extra["weights"]
    again = load_adapter(f"open_clip:{arch}", "cpu", seed=3)
    assert again.info.fingerprint == adapter.info.fingerprint  # seeded: the same weights
    assert load_adapter(f"open_clip:{arch}", "cpu", seed=4).info.fingerprint != adapter.info.fingerprint


def test_attention_maps_are_the_blocks_own_weights(arch):
    adapter = load_adapter(f"open_clip:{arch}", "cpu")
    adapter.output_attentions = True
    trace = adapter.forward(adapter.prepare(make_synthetic(3, seed=1)))
    text, image = trace.attention["text"], trace.attention["image"]
    assert len(text.maps) == 3 and text.maps[0].shape == (3, 2, 16, 16) and text.causal
    assert len(image.maps) == 2 and image.maps[0].shape == (3, 2, 17, 17) and not image.causal
    assert torch.allclose(text.maps[1].sum(-1), torch.ones(3, 2, 16), atol=1e-5)
    assert (text.maps[0].triu(1) == 0).all()  # the causal mask of open_clip's text tower
    block = adapter.model.visual.transformer.resblocks[0]  # recompute block 0's weights from its projections
    with torch.inference_mode():
        x = block.ln_1(trace.hidden["image"][0])
        q, k, _ = torch.nn.functional.linear(x, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, -1)
        split = lambda t: t.reshape(3, 17, 2, 16).transpose(1, 2)  # noqa: E731
        want = torch.softmax(split(q) @ split(k).transpose(-1, -2) / 4.0, dim=-1)
    assert torch.allclose(image.maps[0], want, atol=1e-5)
    assert image.groups[:, 0].eq(0).all() and image.groups[:, 1:].eq(2).all()  # class token special, patches
    assert text.groups[0, 0] == 0 and (text.groups[trace.content["text"]] == 1).all()
    adapter.output_attentions = False
    assert not adapter.forward(adapter.prepare(make_synthetic(2, seed=1))).attention  # the fused path again


def test_a_local_checkpoint_loads_its_weights(arch, tmp_path):
    path = tmp_path / "tiny.pt"
    saved = _state_dict_file(path, seed=11)
    adapter = load_adapter(f"open_clip:{arch}@{path}", "cpu")
    assert adapter.info.fingerprint == weights_fingerprint(saved, arch)
    for key, value in saved.state_dict().items():
        assert torch.equal(adapter.model.state_dict()[key], value), key
    assert str(path) in adapter.info.extra["weights"]


def test_a_checkpoint_of_another_architecture_is_a_usage_error(arch, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(SpecError, match=r"could not be loaded \(RuntimeError: Error.* state_dict"):
        load_adapter(f"open_clip:{arch}@{path}", "cpu")


def test_hf_hub_and_a_pretrained_tag_load_from_the_local_cache(hub_cache, arch, monkeypatch):
    from open_clip import pretrained

    hub = load_adapter(f"open_clip:hf-hub:{REPO}", "cpu")
    assert hub.info.fingerprint == weights_fingerprint(hub_cache, f"hf-hub:{REPO}")
    assert hub.layer_counts() == {"image": 3, "text": 4}
    monkeypatch.setitem(pretrained._PRETRAINED, arch, {"mmdiag_test": pretrained._pcfg(hf_hub=f"{REPO}/")})
    tagged = load_adapter(f"open_clip:{arch}/mmdiag_test", "cpu")
    assert tagged.info.extra["weights"] == f"open_clip {arch} pretrained=mmdiag_test"
    assert torch.equal(tagged.model.visual.conv1.weight, hub_cache.visual.conv1.weight)
    with pytest.raises(SpecError, match=r"unknown pretrained tag; mmdiag-tiny-oc has: mmdiag_test"):
        load_adapter(f"open_clip:{arch}/other_tag", "cpu")


def test_an_uncached_hub_model_is_a_usage_error(hub_cache):
    with pytest.raises(SpecError, match=r"not in the local cache and could not be downloaded"):
        load_adapter("open_clip:hf-hub:mmdiag-test/not-cached", "cpu")


def test_an_unknown_architecture_lists_the_known_ones(arch):
    with pytest.raises(SpecError, match=r"unknown open_clip architecture; open_clip has: .*ViT-B-32"):
        load_adapter("open_clip:ViT-Nope", "cpu")


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
def test_phrase_boxes_land_where_open_clips_preprocess_puts_them(arch, mode):
    """A white box on a black 96x48 image, through open_clip's own inference transform: the mapped box holds it."""
    model, _, preprocess = open_clip.create_model_and_transforms(arch, image_mean=(0, 0, 0), image_std=(1, 1, 1),
                                                                 image_resize_mode=mode)
    from mmdiag.models.open_clip_towers import PreprocessGeometry

    geometry = preprocess_geometry(PreprocessGeometry.of(model.visual))
    assert geometry[0] == {"shortest": "crop", "longest": "pad", "squash": "resize"}[mode]
    image = Image.new("RGB", (96, 48))
    image.paste((255, 255, 255), (40, 8, 64, 40))
    out = preprocess(image)[0]
    x0, y0, x1, y1 = map_box((40, 8, 64, 40), (96, 48), geometry)
    lit = (out > 0.5).nonzero()
    assert lit.numel() > 0
    assert lit[:, 1].min() >= int(x0) - 1 and lit[:, 1].max() <= int(x1) + 1
    assert lit[:, 0].min() >= int(y0) - 1 and lit[:, 0].max() <= int(y1) + 1
    inside = out[int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1]
    assert (inside > 0.5).all()


def _run_suite(pytester, spec, *options):
    """results.json and the output of the whole suite on ``spec``, the tiny architecture registered by a conftest."""
    config = pytester.path / f"{ARCH}.json"
    config.write_text(json.dumps(CONFIG))
    pytester.makeconftest(f"import open_clip\nopen_clip.add_model_config({str(config)!r})\n")
    result = pytester.runpytest(f"--mm-model={spec}", "--mm-samples=8", "--mm-bootstrap=0", "--mm-batch-size=4",
                                "--mm-json=r.json", "--mm-no-cache", "-p", "no:cacheprovider", "--color=no", *options)
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and result.ret in (0, 1), output[-3000:]
    return json.loads((pytester.path / "r.json").read_text()), output


@pytest.mark.parametrize("form", ["random", "checkpoint", "hf-hub"])
def test_the_whole_suite_runs_on_every_spec_form(pytester, arch, hub_cache, form):
    if form == "checkpoint":
        _state_dict_file(pytester.path / "w.pt", seed=5)
    spec = {"random": f"open_clip:{arch}", "checkpoint": f"open_clip:{arch}@{pytester.path / 'w.pt'}",
            "hf-hub": f"open_clip:hf-hub:{REPO}"}[form]
    controls = ["--mm-controls=random-init,noise"] if form == "random" else []
    results, output = _run_suite(pytester, spec, *controls)
    by_check: dict = {}
    for r in results["results"]:
        by_check.setdefault(r["check"], []).append(r)
    assert results["model"]["family"] == "open_clip" and results["model"]["layers"] == {"image": 3, "text": 4}
    for check in ("cone.final", "gap.norm", "geometry.rankme", "attention.entropy"):
        assert any(r["status"] != "skip" and r["value"] is not None for r in by_check[check]), (check, by_check[check])
    measured = {r["params"]["modality"] for r in by_check["attention.entropy"] if r["status"] != "skip"}
    assert measured == {"image", "text"}
    if controls:  # both controls ran: the noise captions wrapped in open_clip's sot/eot, zero-padded
        assert results["data"]["special_ids"] == {"bos": 49406, "eos": 49407, "pad": 0}
        cone = next(r for r in by_check["cone.final"] if r["params"]["modality"] == "text")
        assert set(cone["details"]["controls"]) == {"random-init", "noise"}


TIMM_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}


@pytest.fixture(scope="module")
def timm_archs(tmp_path_factory):
    """Two tiny timm-trunk architectures: a plain timm ViT (class-token pool, linear head) and EVA-02 (rotary)."""
    pytest.importorskip("timm", reason="open_clip's timm image towers need timm (pip install timm)")
    folder = tmp_path_factory.mktemp("oc_timm")
    names = {"mmdiag-timm-vit": {"timm_model_name": "vit_tiny_patch16_224", "timm_proj": "linear"},
             "mmdiag-timm-eva": {"timm_model_name": "eva02_tiny_patch14_224", "timm_proj": None}}
    for name, vision in names.items():
        config = {"embed_dim": 16, "custom_text": True, "text_cfg": TIMM_TEXT,
                  "vision_cfg": {**vision, "timm_model_pretrained": False, "timm_pool": "token", "image_size": 224}}
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return tuple(names)


@pytest.mark.parametrize("which", [0, 1], ids=["vit", "eva02"])
def test_a_timm_vit_trunk_is_read_per_block(timm_archs, which):
    """EVA / PE / timm-ViT image towers: states per trunk block, the class token first and pooled."""
    arch = timm_archs[which]
    adapter = load_adapter(f"open_clip:{arch}", "cpu")
    assert adapter.layer_counts() == {"image": 13, "text": 3}
    batch = adapter.prepare(make_synthetic(2, seed=0))
    adapter.output_attentions = True
    trace = adapter.forward(batch)
    trunk = adapter.model.visual.trunk
    grid = 14 if which == 0 else 16
    with torch.inference_mode():
        torch.testing.assert_close(trunk.norm(trace.hidden["image"][-1]), trunk.forward_features(batch["pixel_values"]))
        torch.testing.assert_close(trace.embeds["image"], adapter.model.encode_image(batch["pixel_values"]))
    assert trace.hidden["image"][0].shape == (2, 1 + grid * grid, 192)
    assert trace.patch_grid == (grid, grid) and trace.patch_offset == 1
    assert trace.pool_index["image"].tolist() == [0, 0] and not trace.content["image"][:, 0].any()
    assert set(trace.attention) == {"text"}  # timm's fused attention returns no weights: no image stream


def test_the_suite_runs_on_an_eva02_tower(pytester, timm_archs):
    config = pytester.path / "cfg"
    config.mkdir()
    for name in timm_archs:
        (config / f"{name}.json").write_text(json.dumps(open_clip.get_model_config(name)))
    pytester.makeconftest(f"import open_clip\nopen_clip.add_model_config({str(config)!r})\n")
    result = pytester.runpytest(f"--mm-model=open_clip:{timm_archs[1]}", "--mm-samples=6", "--mm-bootstrap=0",
                                "--mm-json=r.json", "--mm-no-cache", "-p", "no:cacheprovider", "--color=no")
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and result.ret in (0, 1), output[-3000:]
    results = json.loads((pytester.path / "r.json").read_text())["results"]
    cone = {r["params"]["modality"]: r for r in results if r["check"] == "cone.final"}
    assert cone["image"]["value"] is not None and cone["text"]["value"] is not None
    entropy = {r["params"]["modality"]: r for r in results if r["check"] == "attention.entropy"}
    assert entropy["text"]["status"] != "skip" and entropy["image"]["status"] == "skip"
    assert "no attention maps for image" in entropy["image"]["message"]


@pytest.mark.parametrize("arch, tower", [("RN50", "ModifiedResNet"), ("coca_ViT-B-32", "CLS token")])
def test_a_tower_mmdiag_cannot_read_is_a_usage_error_naming_the_spec(arch, tower):
    with pytest.raises(SpecError, match=rf"--mm-model='open_clip:{arch}': .*{tower}"):
        load_adapter(f"open_clip:{arch}", "cpu")


@pytest.fixture(scope="module")
def siglip_style(tmp_path_factory):
    """A SigLIP-style text tower: a Hugging Face tokenizer (open_clip's HFTokenizer, ``canonicalize`` cleaning),
    bidirectional, pooled at the last position of captions padded to the context length."""
    from mmdiag.models import offline

    folder = tmp_path_factory.mktemp("oc_siglip")
    offline.siglip_tokenizer(512, 0, 1, 2, 16).save_pretrained(folder / "tok")
    config = {"embed_dim": 16, "custom_text": True, "vision_cfg": CONFIG["vision_cfg"],
              "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 2,
                           "hf_tokenizer_name": str(folder / "tok"), "tokenizer_kwargs": {"clean": "canonicalize"},
                           "no_causal_mask": True, "pool_type": "last", "proj_bias": True}}
    (folder / "mmdiag-siglip-style.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "mmdiag-siglip-style.json")
    return "mmdiag-siglip-style"


def test_a_hugging_face_tokenizer_gives_the_librarys_ids_and_word_ids(siglip_style):
    from mmdiag.data.types import Sample

    adapter = load_adapter(f"open_clip:{siglip_style}", "cpu")
    samples = [*make_synthetic(2, seed=0), Sample(uid="p", image=None, caption="A red cube , left of it.")]
    text = adapter.prepare(samples)["text"]
    assert torch.equal(text.input_ids, open_clip.get_tokenizer(siglip_style)([s.caption for s in samples]))
    words = "A red cube , left of it.".split()
    got = [words[w] for w in sorted({w for w in text.word_ids[2].tolist() if w >= 0})]
    assert got == ["A", "red", "cube", "left", "of", "it."]  # the comma is cleaned away: no tokens
    trace = adapter.forward(adapter.prepare(samples[:2]))
    assert trace.pool_index["text"].tolist() == [15, 15] and trace.mask["text"].all()  # 'last', bidirectional
    with torch.inference_mode():
        torch.testing.assert_close(trace.embeds["text"], adapter.model.encode_text(text.input_ids[:2]))
    assert adapter.special_ids() == (None, 1, 0)
