"""ORG/NAME@REVISION pins a hub model to a commit, tag or branch: every file is loaded at that revision."""
import pytest

from mmdiag.errors import SpecError
from mmdiag.models import load


def test_a_pinned_hub_id_loads_every_part_at_its_revision(monkeypatch, tmp_path):
    from mmdiag.models.presets import PRESETS

    preset = PRESETS["tiny-clip"]
    model, tokenizer, processor = load.build_random(preset, 0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    seen = []

    def local(name, real):
        def from_pretrained(path, *args, **kwargs):
            seen.append((name, path, kwargs.get("revision")))
            kwargs.pop("revision", None)
            return real(str(tmp_path), *args, **kwargs)  # the "hub" is the directory saved above
        return from_pretrained

    for cls in (load.AutoConfig, load.AutoModel, load.AutoTokenizer, load.AutoImageProcessor):
        monkeypatch.setattr(cls, "from_pretrained", local(cls.__name__, cls.from_pretrained))
    family, _, _, _, description = load.load_parts("my-org/my-clip@0123abc")
    assert family == "clip" and description == "pretrained weights at revision 0123abc"
    ours = [(name, revision) for name, path, revision in seen if path == "my-org/my-clip"]  # not the inner calls
    assert {revision for _, revision in ours} == {"0123abc"}
    assert {name for name, _ in ours} >= {"AutoConfig", "AutoModel", "AutoTokenizer",
                                                         "AutoImageProcessor"}


@pytest.mark.parametrize("spec", ["my-org/my-clip@", "@main"])
def test_a_malformed_pin_is_a_usage_error(spec):
    with pytest.raises(SpecError, match="ORG/NAME@REVISION"):
        load.load_parts(spec)
