"""The streaming recorder: batch-size back-off, per-call counters, layer checks."""
import pytest
import torch

from mmdiag.data.synthetic import make_synthetic
from mmdiag.errors import SpecError
from mmdiag.models.load import load_adapter
from mmdiag.record import record


class OutOfMemoryAbove:
    """Wraps an adapter so that batches larger than ``limit`` raise an out-of-memory error."""

    def __init__(self, adapter, limit):
        self.adapter, self.limit, self.sizes = adapter, limit, []

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def prepare(self, samples):
        self.sizes.append(len(samples))
        if len(samples) > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.adapter.prepare(samples)

    def forward(self, batch):
        return self.adapter.forward(batch)


def test_auto_batch_size_halves_on_out_of_memory_and_keeps_every_sample():
    samples = make_synthetic(20, seed=3)
    adapter = OutOfMemoryAbove(load_adapter("random:tiny-clip", "cpu"), limit=8)
    acts = record(adapter, samples, batch_size=0)
    assert acts.n == 20 and acts.batch_size == 8
    assert adapter.sizes[:3] == [20, 16, 8]  # 32 capped by the data, then halved until it fits
    reference = record(load_adapter("random:tiny-clip", "cpu"), samples, batch_size=8)
    assert torch.allclose(acts.embeds["image"], reference.embeds["image"], atol=1e-5)


def test_fixed_batch_size_does_not_hide_out_of_memory():
    adapter = OutOfMemoryAbove(load_adapter("random:tiny-clip", "cpu"), limit=2)
    with pytest.raises(RuntimeError, match="out of memory"):
        record(adapter, make_synthetic(4), batch_size=4)


def test_device_map_is_refused_for_presets():
    with pytest.raises(SpecError, match="--mm-device-map applies to hub ids and local directories"):
        load_adapter("random:tiny-clip", "cpu", device_map="auto")


def test_the_pass_reports_its_wall_and_cpu_seconds():
    """forward_s and forward_cpu_s (run.timings; the bench's mm_forward_cpu_ratio) both count the pass."""
    acts = record(load_adapter("random:tiny-clip", "cpu"), make_synthetic(8), batch_size=4)
    assert acts.forward_s > 0 and acts.forward_cpu_s > 0
