"""Shared set-up of the in-process plugin tests.

pytester's in-process runs drop the modules they imported when they end;
re-importing parts of torch afterwards fails (its operator libraries register
once per process). Importing everything the runs touch up front keeps those
modules in pytester's snapshot, so they are never dropped.
"""
import pytest


def _warm_imports() -> None:
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    from transformers import ViTConfig, ViTModel  # noqa: F401

    import mmdiag.report.html  # noqa: F401
    import mmdiag.report.terminal  # noqa: F401
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.models.load import load_adapter, save_preset  # noqa: F401
    from mmdiag.record import record

    samples = make_synthetic(2, seed=0)
    for preset in ("random:tiny-clip", "random:tiny-siglip", "random:tiny-bert"):
        record(load_adapter(preset, "cpu"), samples, 2, words=True)


_warm_imports()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
