"""Data-parallel recording under ``torchrun`` (DESIGN.md §8 "Scale").

``torchrun --nproc-per-node=K -m pytest --mm-model=...`` starts K copies of
pytest. Each rank loads the same model and the same samples, records a
contiguous shard of them (rank ``r`` takes ``samples[r*n//K:(r+1)*n//K]``), and
hands its :class:`~mmdiag.record.Recorder` (the per-batch pooled vectors and
the attention/grounding sums, before they are finished) to rank 0, which merges
them in rank order. Contiguous shards in rank order keep the sample order of a
single-process run, so every check and every bootstrap on rank 0 sees the same
rows as one process would (equal within float tolerance: batches pad to other
lengths). Rank 0 runs the checks and writes the reports; the other ranks run no
check and write their terminal output to ``<report dir>/ranks/rank-R.log``.

Only the model's own forward pass is sharded (the dominant cost); controls, the
treebank pass and the image-hidden pass run on rank 0. The report's example
attention maps come from rank 0's shard (the first samples).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from mmdiag.errors import SpecError

#: torchrun's environment (torch.distributed.run sets all of them)
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job (``size == 1``: an ordinary single-process run)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: Optional[str] = None

    @property
    def sharded(self) -> bool:
        return self.size > 1

    @property
    def reporter(self) -> bool:
        """Rank 0 runs the checks and writes every report."""
        return self.rank == 0

    def shard(self, n: int) -> range:
        """The contiguous slice of ``n`` samples this rank records (rank order = sample order)."""
        return range(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def device(self, requested: str) -> str:
        """The device of this rank: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` on a GPU machine."""
        if not self.sharded or requested not in ("auto", "cuda"):
            return requested
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    def gather(self, value: Any) -> Optional[list]:
        """Every rank's ``value`` on rank 0 (in rank order); None on the other ranks."""
        import torch.distributed as dist

        out = [None] * self.size if self.reporter else None
        dist.gather_object(value, out, dst=0)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _int_env(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise SpecError(f"torchrun environment: {name}={raw!r} is not an integer") from None


def world_from_env(device: str = "auto", device_map: Optional[str] = None, xdist: bool = False) -> World:
    """The :class:`World` torchrun describes in the environment, with its process group started.

    ``WORLD_SIZE`` unset or 1 is a single process (nothing is started). A
    ``--mm-device-map=auto`` model spreads over the GPUs of one node, so it
    takes one process per node (``--nproc-per-node=1``, shards across nodes);
    pytest-xdist and torchrun are two ways of starting processes: one at a time.
    """
    if "WORLD_SIZE" not in os.environ or _int_env("WORLD_SIZE") <= 1:
        return World()
    missing = [name for name in _ENV if name not in os.environ]
    if missing:
        raise SpecError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set: start the run "
                        f"with torchrun --nproc-per-node=K -m pytest ... (it sets them)")
    rank, size, local_rank = _int_env("RANK"), _int_env("WORLD_SIZE"), _int_env("LOCAL_RANK")
    local_size = _int_env("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else size
    if xdist:
        raise SpecError("torchrun and pytest-xdist (-n) both start processes: use one of them (drop -n under "
                        "torchrun)")
    if device_map == "auto" and local_size > 1:
        raise SpecError(f"--mm-device-map=auto spreads the model over every GPU of a node, so it takes one process "
                        f"per node: torchrun --nproc-per-node=1 (got {local_size} processes on this node)")
    import torch
    import torch.distributed as dist

    on_gpu = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if on_gpu else "gloo"
    if not dist.is_initialized():
        if on_gpu:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return World(rank=rank, size=size, local_rank=local_rank, local_size=local_size, backend=backend)


def close(world: World) -> None:
    """Leave the process group (at the end of the pytest session)."""
    if not world.sharded:
        return
    import torch.distributed as dist

    if dist.is_initialized():  # no barrier: the other ranks left long ago, when their shards were gathered
        dist.destroy_process_group()


@dataclass
class ShardRecording:
    """What one rank hands to rank 0: its unfinished recorder and bookkeeping, or the error that stopped it."""

    rank: int
    start: int
    recorder: Any = None
    kept: Optional[list] = None
    skipped: Optional[list] = None
    truncated: int = 0
    batch_size: int = 0
    error: Optional[str] = None
    error_type: Optional[str] = None


def combine(world: World, mine: ShardRecording) -> Optional[ShardRecording]:
    """Rank 0: every rank's shard merged in rank order (kept indices made global); other ranks: None.

    A rank whose shard failed makes every rank fail with its message (each rank
    always reaches the gather, so none waits for a rank that gave up).
    """
    shards = world.gather(_to_cpu(mine))
    failed = world.broadcast(next(((s.rank, s.error_type, s.error) for s in shards if s.error), None)
                             if shards is not None else None)
    if failed is not None:
        from mmdiag.errors import DataError

        rank, kind, message = failed
        if kind in ("DataError", "SpecError"):
            raise (DataError if kind == "DataError" else SpecError)(f"rank {rank}: {message}")
        raise RuntimeError(f"rank {rank} failed its shard: {kind}: {message}")
    if shards is None:
        return None
    first = shards[0]
    merged = ShardRecording(rank=0, start=0, recorder=first.recorder, kept=[], skipped=[],
                            truncated=0, batch_size=min(s.batch_size for s in shards))
    for shard in shards:
        if shard is not first:
            merged.recorder.merge(shard.recorder)
        merged.kept.extend(shard.start + i for i in shard.kept)
        merged.skipped.extend(shard.skipped)
        merged.truncated += shard.truncated
    return merged


def _to_cpu(shard: ShardRecording) -> ShardRecording:
    """Tensors to the CPU before pickling (gather_object over NCCL would otherwise keep them on this rank's GPU)."""
    if shard.recorder is not None and hasattr(shard.recorder, "to"):
        shard.recorder.to("cpu")
    return shard


def quiet_rank_early(namespace: Any, args: list) -> Optional[str]:
    """:func:`quiet_rank` for a diagnostic run (``--mm-model``) on a rank other than 0, from the early options.

    It runs before pytest starts capturing output (capture keeps a copy of the
    terminal's descriptors, which a later redirect would not reach). The log
    goes to ``<--mm-report-dir or reports>/ranks/rank-R.log``.
    """
    try:
        rank, size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return None  # world_from_env names the bad variable later
    wants_model = getattr(namespace, "mm_model", None) or any(a.startswith("--mm-model") for a in args)
    if size <= 1 or rank == 0 or not wants_model:
        return None
    directory = getattr(namespace, "mm_report_dir", None) or "reports"
    return quiet_rank(World(rank=rank, size=size), directory)


def quiet_rank(world: World, directory: Any) -> Optional[str]:
    """Send a non-reporting rank's stdout/stderr to ``directory/ranks/rank-R.log``; returns that path."""
    if world.reporter:
        return None
    from pathlib import Path

    folder = Path(directory) / "ranks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rank-{world.rank}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return str(path)


def record_shard(world: World, adapter: Any, samples: list, batch_size: int, **kwargs: Any) -> Any:
    """:func:`mmdiag.record.record` of this rank's shard; on rank 0 the Activations of every shard.

    The other ranks get their own shard's Activations (they run no check).
    Every rank reaches the one gather also when its shard fails, so a bad
    sample on rank 1 is an error on every rank rather than a hang on rank 0.
    """
    from mmdiag.models.base import optional
    from mmdiag.record import record

    part = world.shard(len(samples))
    truncated_before = int(optional(adapter, "truncated_captions") or 0)
    state: dict[str, Any] = {}

    def gather_shards(recorder: Any, kept: list, skipped: list, size: int) -> tuple:
        state["gathered"] = True
        truncated = int(optional(adapter, "truncated_captions") or 0) - truncated_before
        merged = combine(world, ShardRecording(world.rank, part.start, recorder, list(kept), list(skipped),
                                               truncated=truncated, batch_size=size))
        if merged is None:
            return recorder, kept, skipped
        state["merged"] = merged
        return merged.recorder.to(_device_of(adapter)), merged.kept, merged.skipped

    try:
        acts = record(adapter, samples[part.start:part.stop], batch_size, combine=gather_shards, **kwargs)
    except Exception as exc:
        if not state.get("gathered"):  # tell the other ranks, then fail like them
            combine(world, ShardRecording(world.rank, part.start, error=str(exc), error_type=type(exc).__name__))
        raise
    merged = state.get("merged")
    if merged is not None:
        acts.truncated_captions = merged.truncated
        acts.batch_size = merged.batch_size
    return acts


def _device_of(adapter: Any) -> Any:
    from mmdiag.models.base import optional

    return optional(adapter, "device") or "cpu"
