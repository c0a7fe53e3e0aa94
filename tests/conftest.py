"""Shared set-up of mmdiag's own tests (done in ``pytest_configure``, for test runs only).

- The tests use tiny models: torch's intra-op threads only add synchronisation
  there (and oversubscribe the 2-core CI machine), so the suite runs single-threaded.
- pytester's in-process runs drop the modules first imported during a run, and
  re-importing parts of torch afterwards fails (its operator libraries register
  once per process). Importing and running every model family once, up front,
  keeps those modules in pytester's snapshot.
"""
import pytest
import torch



def warm_presets() -> tuple[str, ...]:
    """The matrix preset of every registered family (a family added to the registry is warmed up too) whose
    requirements import here (Mistral 3 needs torchvision, SmolVLM num2words)."""
    from mmdiag.models.families import families

    return tuple(f"random:{f.matrix_preset}" for f in families().values()
                 if f.matrix_preset and not f.missing_requirements())


def _warm_imports() -> None:
    import importlib
    import pkgutil

    import hypothesis.strategies  # noqa: F401  (its pytest plugin imports it at the end of every run)
    import numpy as np
    from PIL import Image

    import mmdiag

    Image.init()  # every image plugin (PNG, JPEG, TIFF...) is imported now, not inside a run
    # every mmdiag module: the plugin's package is assertion-rewritten, so a module first imported inside a
    # run would be dropped and rewritten again by the next run
    for info in pkgutil.walk_packages(mmdiag.__path__, "mmdiag."):
        if info.name.startswith("mmdiag.checks"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception:  # an optional module may not import here
            pass
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.data.types import Sample
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record

    samples = make_synthetic(2, seed=0)
    for preset in warm_presets():
        record(load_adapter(preset, "cpu"), samples, 2, words=True, attentions=True, regions=True)
    image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    record(load_adapter("random:tiny-clip", "cpu"),
           [Sample(uid="a", image=image, caption=""), Sample(uid="b", image=image, caption="a b")], 2)


def pytest_configure(config: pytest.Config) -> None:
    """Set up for the project's own tests only: a diagnostic run (`pytest --mm-model=...` in this repository,
    whose testpaths still make pytest load this file) keeps torch's threads and needs no test dependencies."""
    if config.getoption("mm_model", default=None) or config.getoption("mm_checks", default=False):
        return
    torch.set_num_threads(1)
    _warm_imports()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
