"""Shared set-up of mmdiag's own tests.

- The tests use tiny models: torch's intra-op threads only add synchronisation
  there (and oversubscribe the 2-core CI machine), so the suite runs single-threaded.
- pytester's in-process runs drop the modules first imported during a run, and
  re-importing parts of torch afterwards fails (its operator libraries register
  once per process). Importing and running every model family once, up front,
  keeps those modules in pytester's snapshot.
"""
import pytest
import torch

torch.set_num_threads(1)

WARM_PRESETS = ("random:tiny-clip", "random:tiny-siglip", "random:tiny-bert", "random:tiny-vilt",
                "random:tiny-llava", "random:tiny-lxmert", "random:tiny-visualbert")


def _warm_imports() -> None:
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    from transformers import ViTConfig, ViTModel  # noqa: F401

    import mmdiag.cache  # noqa: F401
    import mmdiag.report.html  # noqa: F401
    import mmdiag.report.terminal  # noqa: F401
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.models.load import load_adapter, save_preset  # noqa: F401
    from mmdiag.record import record

    samples = make_synthetic(2, seed=0)
    for preset in WARM_PRESETS:
        record(load_adapter(preset, "cpu"), samples, 2, words=True, attentions=True, regions=True)


_warm_imports()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
