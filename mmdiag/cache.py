"""The on-disk activation cache: re-running with other thresholds or reports skips the model.

Entries are keyed by a fingerprint of everything that changes activations
(model weights, data, sample count, seed, batch size, dtype, device type, what
was recorded, mmdiag's version). Tensors are stored with safetensors and the
rest as JSON — never pickle. Writes go to a temp file renamed into place; an
entry that fails to load (corrupt, truncated, stale layout) is ignored,
deleted and rebuilt. Each entry's metadata holds the sha256 of its safetensors file, checked on
load: flipped bytes inside a tensor (header intact) are a corrupt entry, never a silent hit. Temp files
left by an interrupted write (``.<name>.*.tmp``) are removed when the cache is opened, once older than
:data:`STALE_TMP_S` (a younger one may be another process's write in progress). A file lock lets parallel workers (pytest-xdist) share one
forward pass: the first computes, the others wait and load.
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from filelock import FileLock
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from mmdiag.atomic import atomic_write, atomic_write_text
from mmdiag.record import Activations
from mmdiag.recording.stats import AttentionStats, GroundingStats

#: layout version of an entry; an entry of another version is rebuilt (4: attention/grounding statistics
#: stored per stream as the fields of AttentionStats/GroundingStats; 5: the sha256 of the tensors file)
FORMAT = 5
#: a temp file of the cache directory older than this (seconds) is an interrupted write's orphan
STALE_TMP_S = 3600.0
#: why the last rejected entry of each path was not used ("hash mismatch", "stale format", ...)
REJECTED: dict[str, str] = {}


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of the activation-relevant settings."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


@contextmanager
def locked(directory: Path, key: str, timeout: float = 3600) -> Iterator[None]:
    """Hold ``key``'s lock (so one process computes an entry while others wait)."""
    directory.mkdir(parents=True, exist_ok=True)
    clean_stale_temp_files(directory)
    with FileLock(str(directory / f"{key}.lock"), timeout=timeout):
        yield


def clean_stale_temp_files(directory: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files of ``directory`` last modified over ``max_age_s`` ago; returns them."""
    removed = []
    now = time.time()
    try:
        candidates = list(directory.glob(".*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone already (another process cleaned it) or not ours to remove
            continue
    return removed


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _flatten(acts: Activations) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"format": FORMAT, "n": acts.n, "layer_counts": acts.layer_counts,
                            "word_counts": acts.word_counts, "region_counts": acts.region_counts,
                            "logit_scale": acts.logit_scale, "forward_s": acts.forward_s,
                            "truncated_captions": acts.truncated_captions, "special_ids": acts.special_ids,
                            "skipped_samples": acts.skipped_samples, "kept": acts.kept,
                            "nonfinite": [[m, k, v] for (m, k), v in acts.nonfinite.items()],
                            "causal": acts.causal, "attention_streams": list(acts.attention),
                            "grounding_streams": list(acts.grounding),
                            "attention_image": acts.attention_image}
    for m, layers in acts.pooled.items():
        for k, t in enumerate(layers):
            tensors[f"pooled.{m}.{k}"] = t
            tensors[f"mean.{m}.{k}"] = acts.mean_tokens[m][k]
    meta["pooled_layers"] = {m: len(v) for m, v in acts.pooled.items()}
    for m, t in acts.embeds.items():
        tensors[f"embeds.{m}"] = t
    for name, layers in (("words", acts.word_states), ("regions", acts.region_states)):
        if layers is not None:
            meta[f"{name}_layers"] = len(layers)
            for k, t in enumerate(layers):
                tensors[f"{name}.{k}"] = t
    for prefix, per_stream in (("attention", acts.attention), ("grounding", acts.grounding)):
        for stream, stats in per_stream.items():
            for key, arr in stats.to_arrays().items():
                tensors[f"{prefix}.{stream}.{key}"] = torch.as_tensor(np.asarray(arr, dtype=np.float64))
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, meta


def _stats(cls: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """One stream's statistics (``cls``: AttentionStats or GroundingStats) from its ``prefix.field`` tensors."""
    return cls.from_arrays({f.name: tensors[prefix + f.name].numpy() for f in fields(cls)})


def save(acts: Activations, path: Path) -> None:
    """Write ``acts`` as ``path`` (safetensors) + ``path.json`` (metadata), atomically."""
    tensors, meta = _flatten(acts)

    def write(tmp: str) -> None:
        save_file(tensors, tmp)
        meta["sha256"] = file_sha256(Path(tmp))
        # metadata first (before the tensors are renamed into place): a reader that finds the tensors also
        # finds their metadata and hash
        atomic_write_text(str(path) + ".json", json.dumps(meta))

    atomic_write(path, write)


def load(path: Path, device: Optional[torch.device] = None) -> Optional[Activations]:
    """Read an entry; None (and the entry removed) when it is missing, corrupt, of another format or its
    bytes do not match the stored sha256 (the reason is kept in ``REJECTED[str(path)]``)."""
    meta_path = Path(str(path) + ".json")
    if not path.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError("stale format")
        data = path.read_bytes()
        if not isinstance(meta.get("sha256"), str) or hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ValueError("hash mismatch")
        t = load_bytes(data)
        del data
        if device is not None and str(device) != "cpu":
            t = {k: v.to(device) for k, v in t.items()}
        acts = Activations(n=meta["n"], layer_counts=meta["layer_counts"])
        for m, n_layers in meta["pooled_layers"].items():
            acts.pooled[m] = [t[f"pooled.{m}.{k}"] for k in range(n_layers)]
            acts.mean_tokens[m] = [t[f"mean.{m}.{k}"] for k in range(n_layers)]
        acts.embeds = {key.split(".", 1)[1]: v for key, v in t.items() if key.startswith("embeds.")}
        if "words_layers" in meta:
            acts.word_states = [t[f"words.{k}"] for k in range(meta["words_layers"])]
        if "regions_layers" in meta:
            acts.region_states = [t[f"regions.{k}"] for k in range(meta["regions_layers"])]
        acts.attention = {stream: _stats(AttentionStats, t, f"attention.{stream}.")
                          for stream in meta["attention_streams"]}
        acts.grounding = {stream: _stats(GroundingStats, t, f"grounding.{stream}.")
                          for stream in meta["grounding_streams"]}
        acts.word_counts, acts.region_counts = meta["word_counts"], meta["region_counts"]
        acts.logit_scale, acts.forward_s = meta["logit_scale"], meta["forward_s"]
        acts.truncated_captions = meta["truncated_captions"]
        acts.special_ids = meta.get("special_ids")
        acts.skipped_samples, acts.kept = meta["skipped_samples"], meta["kept"]
        acts.nonfinite = {(m, int(k)): int(v) for m, k, v in meta["nonfinite"]}
        acts.causal = meta["causal"]
        acts.attention_image = meta.get("attention_image")
        return acts
    except Exception as exc:  # anything unreadable is rebuilt, never trusted
        REJECTED[str(path)] = str(exc) if isinstance(exc, ValueError) and str(exc) in (
            "stale format", "hash mismatch") else f"corrupt ({type(exc).__name__})"
        path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return None
