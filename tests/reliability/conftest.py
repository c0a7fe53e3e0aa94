"""Fixtures of the reliability tests (the shared warm-up and thread setting are in tests/conftest.py)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  (the toy adapters written into pytester conftests by source use it)





@pytest.fixture(scope="session")
def tiny_clip():
    """One random tiny CLIP adapter shared by the unit-level tests (never mutate its weights)."""
    from mmdiag.models.load import load_adapter

    return load_adapter("random:tiny-clip", "cpu")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


#: settings of runs whose model is a toy adapter from :func:`toy_conftest`
TOY_FAST = ("--mm-checks", "--mm-samples=12", "--mm-batch-size=6", "-p", "no:cacheprovider", "--color=no")
#: small, quick end-to-end settings
FAST = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=4", "-p", "no:cacheprovider",
        "--color=no")


@pytest.fixture
def mmrun(pytester):
    """Run pytest in-process with mmdiag's fast settings; returns (result, results.json doc or None, output)."""

    def run(*args, fast=FAST, json_name="results.json"):
        target = pytester.path / json_name
        if target.exists():
            target.unlink()
        result = pytester.runpytest(*fast, f"--mm-json={json_name}", *args)
        doc = json.loads(target.read_text(encoding="utf-8")) if target.exists() else None
        output = result.stdout.str() + "\n" + result.stderr.str()
        return result, doc, output

    return run


def write_images(folder: Path, n: int, size: int = 24, seed: int = 0) -> list[str]:
    """``n`` random RGB PNG files in ``folder``; returns their names."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON line per row (a dict is dumped, a str written as is)."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def image_folder(tmp_path):
    """A folder with eight readable images and a matching captions.jsonl."""
    names = write_images(tmp_path, 8)
    write_jsonl(tmp_path / "captions.jsonl",
                [{"image": n, "caption": f"a red cube and a blue ball number {i}"} for i, n in enumerate(names)])
    return tmp_path


#: what a Python traceback of an input error looks like in pytest's output
TRACEBACK_MARKERS = ("Traceback (most recent call last)", "mmdiag.errors.DataError", "raise DataError",
                     "INTERNALERROR", "^^^^^")
#: the chained-exception banner pytest prints when pytest.fail is raised inside an ``except`` block
CHAINED = "During handling of the above exception"


def assert_no_traceback(output: str, chained: bool = False) -> None:
    """The output of a run carries no Python traceback (``chained``: nor the chained-exception banner)."""
    for marker in TRACEBACK_MARKERS + ((CHAINED,) if chained else ()):
        assert marker not in output, f"{marker!r} in the output:\n{output[-3000:]}"


@pytest.fixture
def rel():
    """The helpers above, for the test modules (conftest modules are not importable by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(write_images=write_images, write_jsonl=write_jsonl,
                           assert_no_traceback=assert_no_traceback, toy_conftest=toy_conftest, FAST=FAST,
                           TOY_FAST=TOY_FAST)


#: conftest.py of a pytester run that diagnoses a hand-written two-tower adapter (``mm_model`` override).
#: ``{layers}`` hidden states per tower are returned, ``{claimed}`` are claimed by ``layer_counts``; the image
#: states of layer ``{bad_layer}`` are replaced by ``{bad_value}`` (a NaN/inf model) unless it is None.
TOY_CONFTEST = '''
import numpy as np
import pytest
import torch  # noqa: F401  (the toy adapters written into pytester conftests by source use it)

from mmdiag.models.base import Trace


class ToyAdapter:
    family = "toy"
    modalities = ("image", "text")
    output_attentions = False

    def __init__(self, layers={layers}, claimed={claimed}, bad_layer={bad_layer}, bad_value={bad_value}):
        g = torch.Generator().manual_seed(0)
        self.pixel_map = torch.randn(3, 8, generator=g)
        self.word_table = torch.randn(97, 8, generator=g)
        self.layers, self.claimed, self.bad_layer, self.bad_value = layers, claimed, bad_layer, bad_value

    def layer_counts(self):
        return {{"image": self.claimed, "text": self.claimed}}

    def prepare(self, samples):
        pixels = torch.stack([torch.tensor(np.asarray(s.image.resize((4, 4))), dtype=torch.float32)
                              .reshape(16, 3) / 255 for s in samples])
        words = [s.words or tuple(s.caption.split()) or ("",) for s in samples]
        width = max(len(w) for w in words)
        ids = torch.zeros(len(samples), width, dtype=torch.long)
        word_ids = torch.full((len(samples), width), -1)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                ids[i, j] = sum(map(ord, w)) % 97
                word_ids[i, j] = j
        return pixels, ids, word_ids

    def forward(self, batch):
        pixels, ids, word_ids = batch
        img, txt = [pixels @ self.pixel_map], [self.word_table[ids]]
        for _ in range(self.layers - 1):
            img.append(torch.tanh(img[-1].cumsum(1) * 0.5 + img[0]))
            txt.append(torch.tanh(txt[-1].cumsum(1) * 0.5 + txt[0]))
        if self.bad_layer is not None:
            img[self.bad_layer] = torch.full_like(img[self.bad_layer], self.bad_value)
        mask = word_ids >= 0
        patches = torch.ones(pixels.shape[:2], dtype=torch.bool)
        last = mask.sum(1) - 1
        return Trace(hidden={{"image": tuple(img), "text": tuple(txt)}},
                     mask={{"image": patches, "text": mask}}, pool_index={{"image": None, "text": last}},
                     content={{"image": patches, "text": mask}},
                     embeds={{"image": img[-1].mean(1), "text": txt[-1][torch.arange(len(ids)), last]}},
                     word_ids=word_ids, logit_scale=10.0)


@pytest.fixture(scope="session")
def mm_model():
    return ToyAdapter()
'''


def toy_conftest(layers: int = 4, claimed: int = 4, bad_layer=None, bad_value: str = "float('nan')") -> str:
    """The source of :data:`TOY_CONFTEST` for these settings."""
    return TOY_CONFTEST.format(layers=layers, claimed=claimed, bad_layer=bad_layer, bad_value=bad_value)


@pytest.fixture
def usage_line():
    """Assert a pytester run ended in a usage error with one ``ERROR: mmdiag:`` line and no traceback; the line."""
    def check(result) -> str:
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
        err = result.stderr.str()
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ERROR: mmdiag: "), err
        assert "Traceback" not in err + result.stdout.str()
        return lines[0]
    return check
