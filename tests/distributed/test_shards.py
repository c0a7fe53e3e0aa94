"""Sharding under torchrun, in one process: shards cover the samples in order, merged recorders equal one pass."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from mmdiag.data.synthetic import make_synthetic
from mmdiag.distributed import World, quiet_rank_early, world_from_env
from mmdiag.errors import SpecError
from mmdiag.models.load import load_adapter
from mmdiag.record import record


@given(n=st.integers(0, 500), size=st.integers(1, 16))
def test_shards_are_contiguous_and_cover_every_sample_once_in_rank_order(n, size):
    indices = [i for rank in range(size) for i in World(rank=rank, size=size).shard(n)]
    assert indices == list(range(n))
    lengths = [len(World(rank=r, size=size).shard(n)) for r in range(size)]
    assert max(lengths) - min(lengths) <= 1  # balanced


def _recorders(adapter, parts, **flags):
    kept = []

    def keep(recorder, kept_idx, skipped, size):
        kept.append(recorder.to("cpu"))  # what a rank sends to rank 0: states off its files, in memory
        return recorder, kept_idx, skipped

    for part in parts:
        record(adapter, part, 4, combine=keep, **flags)
    return kept


@pytest.mark.parametrize("preset", ["random:tiny-clip", "random:tiny-vilt"])
def test_merged_shards_equal_one_pass(preset):
    adapter = load_adapter(preset, "cpu")
    samples = make_synthetic(12, seed=3)
    flags = dict(words=True, attentions=True, regions=True)
    whole = record(adapter, samples, 4, **flags)
    first, *rest = _recorders(adapter, [samples[:4], samples[4:8], samples[8:]], **flags)
    for other in rest:
        first.merge(other)
    merged = first.finish()
    assert merged.n == whole.n == 12
    for m in whole.pooled:
        for a, b in zip(whole.pooled[m], merged.pooled[m]):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(whole.embeds[m], merged.embeds[m])
    for a, b in zip(whole.word_states, merged.word_states):
        torch.testing.assert_close(a, b)
    assert merged.word_counts == whole.word_counts and merged.region_counts == whole.region_counts
    for a, b in zip(whole.region_states or [], merged.region_states or []):
        torch.testing.assert_close(a, b)
    for stream, stats in whole.attention.items():
        np.testing.assert_allclose(stats.share, merged.attention[stream].share, rtol=1e-10, equal_nan=True)
        np.testing.assert_allclose(stats.entropy, merged.attention[stream].entropy, rtol=1e-10, equal_nan=True)
    assert merged.nonfinite == whole.nonfinite


def test_a_single_process_is_world_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_from_env() == World()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not world_from_env().sharded


def _torchrun_env(monkeypatch, local_size="2"):
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": local_size,
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}.items():
        monkeypatch.setenv(name, value)


def test_refusals_before_any_process_group(monkeypatch):
    _torchrun_env(monkeypatch)
    with pytest.raises(SpecError, match="pytest-xdist"):
        world_from_env(xdist=True)
    with pytest.raises(SpecError, match="--nproc-per-node=1"):
        world_from_env(device_map="auto")
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(SpecError, match="MASTER_PORT is not set"):
        world_from_env()
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(SpecError, match="RANK='one'"):
        world_from_env()


def test_only_other_ranks_of_a_diagnostic_run_log_to_a_file(monkeypatch, tmp_path):
    class Namespace:
        mm_model = "random:tiny-clip"
        mm_report_dir = str(tmp_path)

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert quiet_rank_early(Namespace, []) is None  # rank 0 keeps the terminal
    Namespace.mm_model = None
    monkeypatch.setenv("RANK", "1")
    assert quiet_rank_early(Namespace, ["tests/"]) is None  # not a diagnostic run
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert quiet_rank_early(Namespace, ["--mm-model=random:tiny-clip"]) is None  # a single process
    assert not (tmp_path / "ranks").exists()  # (rank 1 of a torchrun job: tests/distributed/test_torchrun.py)
