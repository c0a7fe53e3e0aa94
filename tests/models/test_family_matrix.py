"""The family matrix: every registered family's tiny preset, saved with ``save_pretrained`` (model, tokenizer and
processor built offline) and loaded through the hub-id path (``--mm-model=DIR``), runs the whole suite.

One in-process pytester run per family, parametrised from the registry, so a family registered later joins the
matrix. The run must give values for the checks the architecture supports and skip reasons for the rest, with no
error and no traceback (checks may fail their thresholds: the weights are random).
"""

import pytest

from mmdiag.models.families import families
from tests.models.saved_runs import run_saved

MATRIX = sorted((f.name, f.matrix_preset) for f in families().values() if f.matrix_preset)


def test_the_matrix_covers_twenty_model_types_or_more():
    """Model types the matrix runs directly (its presets) plus those their families cover through the same adapter."""
    covered = {t for f in families().values() if f.matrix_preset for t in f.model_types}
    assert len(covered) >= 20, sorted(covered)


@pytest.mark.parametrize("family,preset", MATRIX, ids=[name for name, _ in MATRIX])
def test_family_runs_the_suite_from_a_saved_directory(pytester, family, preset):
    missing = families()[family].missing_requirements()  # mistral3: torchvision, smolvlm: num2words
    if missing:
        pytest.skip(f"the {family} family needs {', '.join(missing)}")
    doc, _ = run_saved(pytester, preset)
    assert doc["model"]["family"] == family
    statuses = [r["status"] for r in doc["results"]]
    assert "error" not in statuses, [r for r in doc["results"] if r["status"] == "error"][:3]
    valued = [r for r in doc["results"] if r["status"] != "skip"]
    assert valued and all(r["value"] is not None for r in valued)
    skipped = [r for r in doc["results"] if r["status"] == "skip"]
    assert all(r["message"] for r in skipped)
    # every family gives the cone effect of each modality it embeds
    assert any(r["check"].startswith("cone") for r in valued)


def test_a_family_whose_requirements_do_not_import_is_a_usage_error(monkeypatch):
    """Without torchvision (Mistral 3) or num2words (SmolVLM) the preset and a saved directory say what to install."""
    import importlib
    from types import SimpleNamespace

    from mmdiag.errors import SpecError
    from mmdiag.models import family as family_module
    from mmdiag.models.load import load_adapter

    def refuse(name, package=None):
        if name.partition(".")[0] in ("torchvision", "num2words"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return importlib.import_module(name, package)

    monkeypatch.setattr(family_module, "importlib", SimpleNamespace(import_module=refuse))
    with pytest.raises(SpecError, match=r"the mistral3 family needs torchvision \(for PixtralProcessor; not "
                                        r"installed\): pip install torchvision"):
        load_adapter("random:tiny-mistral3", "cpu")
    with pytest.raises(SpecError, match=r"the smolvlm family needs num2words \(for SmolVLMProcessor; not "
                                        r"installed\): pip install num2words"):
        load_adapter("random:tiny-smolvlm", "cpu")
