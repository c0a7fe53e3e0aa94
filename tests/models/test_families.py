"""The family registry: built-in declarations, runtime registration and the ``mmdiag.families`` entry points."""
import sys
import textwrap

import pytest
import torch

from mmdiag.errors import SpecError
from mmdiag.models import families as registry
from mmdiag.models.base import IMAGE, ModelAdapter, Trace
from mmdiag.models.families import ENTRY_POINT_GROUP, Family, register_family, unregister_family
from mmdiag.models.load import accepted_specs, all_presets, load_adapter

BUILTIN_TYPES = {"clip", "siglip", "vilt", "llava", "lxmert", "visual_bert", "bert", "qwen2_vl", "gemma3"}


def test_every_builtin_model_type_is_covered_once():
    by_type = registry.by_model_type()
    assert BUILTIN_TYPES <= set(by_type)
    claimed = [t for f in registry.families().values() for t in f.model_types]
    assert len(claimed) == len(set(claimed)), "two families claim one model_type"
    for family in registry.families().values():
        if family.matrix_preset is None:  # a family without a preset save_pretrained can write
            continue
        assert family.matrix_preset in all_presets(), family.name
        assert f"random:{family.matrix_preset}" in accepted_specs()


def test_a_family_declaration_is_checked():
    with pytest.raises(SpecError, match="needs='weights' is not one of tokenizer, image_processor, processor"):
        Family("x", ("x",), lambda *a: None, needs="weights")
    with pytest.raises(SpecError, match="covers no model_type"):
        Family("x", (), lambda *a: None)


def test_an_uncovered_architecture_lists_the_supported_families():
    with pytest.raises(SpecError) as info:
        registry.family_for("vit", "some/vit")
    message = str(info.value)
    assert "'vit' model" in message and "clip (clip)" in message and "qwen2-vl (qwen2_vl)" in message
    assert ENTRY_POINT_GROUP in message and "register_family" in message


class ImageOnlyAdapter(ModelAdapter):
    """A family added from outside mmdiag: a ViT as an image-only model (the test's own adapter)."""

    family = "vit-test"
    modalities = (IMAGE,)

    def __init__(self, model, tokenizer, processor, info, device, dtype):
        super().__init__(model, tokenizer, info, device, dtype, processor)

    def layer_counts(self):
        return {IMAGE: self.model.config.num_hidden_layers + 1}

    def prepare(self, samples):
        return self.image_processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]

    def forward(self, batch):
        out = self.model(pixel_values=batch.to(self.device), output_hidden_states=True)
        mask = torch.ones(out.hidden_states[0].shape[:2], dtype=torch.bool)
        return Trace(hidden={IMAGE: out.hidden_states}, mask={IMAGE: mask}, pool_index={IMAGE: None},
                     content={IMAGE: mask})


@pytest.fixture()
def vit_dir(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from mmdiag.models.offline import bert_tokenizer

    config = ViTConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=8,
                       image_size=16, patch_size=8)
    ViTModel(config).save_pretrained(tmp_path)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    bert_tokenizer(200, 16).save_pretrained(tmp_path)
    return tmp_path


def test_register_family_at_runtime(vit_dir):
    family = Family("vit-test", ("vit",), ImageOnlyAdapter, tokens="image patches")
    register_family(family)
    try:
        with pytest.raises(SpecError, match="already registered"):
            register_family(family)
        adapter = load_adapter(str(vit_dir), "cpu")
        assert isinstance(adapter, ImageOnlyAdapter) and adapter.info.family == "vit-test"
        assert type(adapter.image_processor).__name__.startswith("ViTImageProcessor")
        assert registry.families()["vit-test"].origin == "register_family"
    finally:
        unregister_family("vit-test")
    with pytest.raises(SpecError, match="no built-in adapter supports"):
        load_adapter(str(vit_dir), "cpu")


def _install_distribution(root, module_body: str, entry: str) -> None:
    """A package and its dist-info (with an ``mmdiag.families`` entry point) in ``root``, as pip would write it."""
    (root / "fakefamily.py").write_text(textwrap.dedent(module_body))
    info = root / "fakefamily-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakefamily\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry}\n")


@pytest.fixture()
def on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._cache.clear()
    yield tmp_path
    sys.modules.pop("fakefamily", None)
    registry._cache.clear()


def test_a_package_adds_a_family_through_the_entry_point_group(on_path, vit_dir):
    _install_distribution(on_path, """
        from mmdiag.models.families import Family
        from tests.models.test_families import ImageOnlyAdapter

        def families():
            return [Family("vit-plugin", ("vit",), ImageOnlyAdapter, tokens="image patches")]
    """, "vit = fakefamily:families")
    table = registry.families()
    assert table["vit-plugin"].origin == "entry point vit"
    assert "clip" in table  # the built-ins stay
    adapter = load_adapter(str(vit_dir), "cpu")  # (the class is this module's, imported under another name there)
    assert type(adapter).__name__ == "ImageOnlyAdapter" and adapter.info.family == "vit-plugin"


def test_a_broken_entry_point_is_a_usage_error_naming_it(on_path):
    _install_distribution(on_path, "FAMILY = 42\n", "broken = fakefamily:FAMILY")
    with pytest.raises(SpecError, match="entry point 'broken' .*must give a mmdiag.models.families.Family"):
        registry.families()
    registry._cache.clear()
    (on_path / "fakefamily-1.0.dist-info" / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nbroken = fakefamily_missing:FAMILY\n")
    with pytest.raises(SpecError, match="entry point 'broken' .*cannot be loaded .*ModuleNotFoundError"):
        registry.families()
