"""Activation-cache integrity: a hash per entry, checked on load; stale formats rebuilt; orphan temp files cleaned."""
import json
import os
import struct
import time

import torch

from mmdiag import cache
from mmdiag.record import Activations

RUN = ("--mm-model=random:tiny-clip", "--mm-samples=8", "--mm-batch-size=4", "-p", "no:cacheprovider",
       "-k", "gap_norm", "--color=no")


def _acts() -> Activations:
    g = torch.Generator().manual_seed(0)
    acts = Activations(n=4, layer_counts={"image": 2, "text": 2})
    for m in ("image", "text"):
        acts.pooled[m] = [torch.randn(4, 8, generator=g) for _ in range(2)]
        acts.mean_tokens[m] = [torch.randn(4, 8, generator=g) for _ in range(2)]
        acts.embeds[m] = torch.randn(4, 5, generator=g)
    acts.kept = [0, 1, 2, 3]
    return acts


def _flip_tensor_byte(path, offset_from_data=17):
    """Flip one byte inside the tensor data, leaving the safetensors header intact."""
    raw = bytearray(path.read_bytes())
    header = struct.unpack("<Q", raw[:8])[0]
    raw[8 + header + offset_from_data] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_an_entry_round_trips_and_stores_its_hash(tmp_path):
    path = tmp_path / "k.safetensors"
    cache.save(_acts(), path)
    meta = json.loads((tmp_path / "k.safetensors.json").read_text())
    assert meta["format"] == cache.FORMAT and meta["sha256"] == cache.file_sha256(path)
    back = cache.load(path)
    assert back is not None and torch.equal(back.pooled["image"][1], _acts().pooled["image"][1])
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_flipped_tensor_byte_is_a_hash_mismatch_not_a_hit(tmp_path):
    path = tmp_path / "k.safetensors"
    cache.save(_acts(), path)
    _flip_tensor_byte(path)
    assert cache.load(path) is None
    assert cache.REJECTED[str(path)] == "hash mismatch"
    assert not path.exists() and not (tmp_path / "k.safetensors.json").exists()


def test_a_missing_or_wrong_typed_hash_is_rejected(tmp_path):
    path = tmp_path / "k.safetensors"
    for bad in (None, 12, "0" * 64):
        cache.save(_acts(), path)
        meta_path = tmp_path / "k.safetensors.json"
        meta = json.loads(meta_path.read_text())
        if bad is None:
            del meta["sha256"]
        else:
            meta["sha256"] = bad
        meta_path.write_text(json.dumps(meta))
        assert cache.load(path) is None and cache.REJECTED[str(path)] == "hash mismatch"


def test_an_older_format_entry_is_rebuilt(tmp_path):
    path = tmp_path / "k.safetensors"
    cache.save(_acts(), path)
    meta_path = tmp_path / "k.safetensors.json"
    meta = json.loads(meta_path.read_text())
    meta["format"] = 4
    del meta["sha256"]
    meta_path.write_text(json.dumps(meta))
    assert cache.load(path) is None and cache.REJECTED[str(path)] == "stale format"


def test_unreadable_metadata_is_a_corrupt_entry(tmp_path):
    path = tmp_path / "k.safetensors"
    cache.save(_acts(), path)
    (tmp_path / "k.safetensors.json").write_text("[" * 100000)
    assert cache.load(path) is None and cache.REJECTED[str(path)].startswith("corrupt")


def test_opening_the_cache_removes_only_old_orphan_temp_files(tmp_path):
    old = tmp_path / ".abc.safetensors.x1y2.tmp"
    fresh = tmp_path / ".abc.safetensors.z3w4.tmp"
    other = tmp_path / "notes.tmp"
    for f in (old, fresh, other):
        f.write_bytes(b"partial")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    with cache.locked(tmp_path, "abc"):
        pass
    assert not old.exists() and fresh.exists() and other.exists()


def test_a_run_on_a_tampered_entry_rebuilds_it_with_identical_results(pytester):
    a = pytester.runpytest(*RUN, "--mm-json=a.json")
    assert a.ret == 0, a.stdout.str()
    entries = list((pytester.path / ".mmdiag_cache").glob("*.safetensors"))
    assert entries
    for entry in entries:
        _flip_tensor_byte(entry, offset_from_data=3)
    b = pytester.runpytest(*RUN, "--mm-json=b.json")
    assert b.ret == 0, b.stdout.str()
    doc_a = json.loads((pytester.path / "a.json").read_text())
    doc_b = json.loads((pytester.path / "b.json").read_text())
    assert [r["value"] for r in doc_a["results"]] == [r["value"] for r in doc_b["results"]]
    assert doc_b["run"]["timings"]["cache"] == "miss (written)"
    c = pytester.runpytest(*RUN, "--mm-json=c.json")
    assert json.loads((pytester.path / "c.json").read_text())["run"]["timings"]["cache"] == "hit"
