"""What the zoo's trainers share: data, determinism, optimiser, schedule, the training loop, saving.

Both trainers (:mod:`.clip`, :mod:`.llava`) run the same recipe around their
own loss: seeded synthetic scenes encoded once, deterministic torch on a fixed
thread count, AdamW with weight decay on matrices only, linear warm-up then
cosine decay, a seeded batch order, ``save_pretrained`` with world-readable
files. Written once here so that the shipped weights depend on one loop.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import torch

#: training data use make_synthetic(n, seed=TRAIN_DATA_SEED + training seed)
TRAIN_DATA_SEED = 1000
#: held-out evaluation data: mmdiag's default ``--mm-seed=0``
EVAL_DATA_SEED = 0
#: rendered size of the synthetic scenes (make_synthetic's default, as mmdiag evaluates)
SCENE_SIZE = 224
#: the zoo models' input image size (both CLIP towers and LLaVA's tower)
IMAGE_SIZE = 64

Log = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class RunConfig:
    """The settings every zoo training has; each trainer's config adds its own and sets its defaults."""

    steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 60
    n_train: int = 4000
    n_eval: int = 128
    seed: int = 0
    log_every: int = 100
    threads: int = 1


@dataclass
class TrainedModel:
    """A trained model with its tokenizer, processor and training record."""

    model: Any
    tokenizer: Any
    processor: Any
    config: Any
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class EncodedData:
    """Training and held-out tensors of one run (``held_out`` None without evaluation)."""

    train: dict[str, torch.Tensor]
    held_out: Optional[dict[str, torch.Tensor]]
    n_eval: int


@dataclass
class Setup:
    """A model ready to train: seeded weights, its tokenizer and processor, encoded data, the start time."""

    started: float
    model: Any
    tokenizer: Any
    processor: Any
    data: EncodedData


def base_vocab_size() -> int:
    """Size of the offline tokenizers' base vocabulary; each trainer puts its special tokens after it."""
    from mmdiag.models.offline import _base_vocab

    return len(_base_vocab())


def check_config(cfg: RunConfig, min_batch: int) -> None:
    """Refuse a negative seed, no steps, or batches smaller than ``min_batch``."""
    if cfg.seed < 0:
        raise ValueError(f"seed must be >= 0 (training data seed {TRAIN_DATA_SEED} + seed), got {cfg.seed}")
    if cfg.steps < 1 or cfg.batch_size < min_batch:
        raise ValueError(f"steps must be >= 1 and batch_size >= {min_batch}")


@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count while training; the caller's settings are restored."""
    before, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if threads > 0:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic)


def run_training(cfg: RunConfig, *, min_batch: int, log: Optional[Log], build: Callable[[], tuple[Any, Any, Any]],
                 encode: Callable[[Sequence[Any], Any, Any, Any], dict[str, torch.Tensor]],
                 train_samples: Optional[Sequence[Any]], eval_samples: Optional[Sequence[Any]],
                 fit: Callable[[Setup, Log], T]) -> T:
    """Check ``cfg``, then under :func:`deterministic_torch` build the model, encode the data and ``fit``.

    ``build()`` gives (model, tokenizer, processor) with seeded weights;
    ``encode(samples, model, tokenizer, processor)`` the tensors of some scenes.
    Training scenes default to ``make_synthetic(cfg.n_train, TRAIN_DATA_SEED + cfg.seed)``,
    held-out ones to ``make_synthetic(cfg.n_eval, EVAL_DATA_SEED)`` (none if
    ``n_eval`` is 0). ``log`` receives the progress lines (None: silent).
    """
    check_config(cfg, min_batch)
    say = log or (lambda _msg: None)
    with deterministic_torch(cfg.threads):
        started = time.perf_counter()
        model, tokenizer, processor = build()
        data = _encode_data(cfg, lambda samples: encode(samples, model, tokenizer, processor), train_samples,
                            eval_samples)
        say(f"{data.train['ids'].shape[0]} training scenes encoded in {time.perf_counter() - started:.1f} s")
        return fit(Setup(started, model, tokenizer, processor, data), say)


def _encode_data(cfg: RunConfig, encode: Callable[[Sequence[Any]], dict[str, torch.Tensor]],
                 train_samples: Optional[Sequence[Any]], eval_samples: Optional[Sequence[Any]]) -> EncodedData:
    """Encode the training scenes and the held-out ones (the zoo's synthetic splits by default)."""
    from mmdiag.data.synthetic import make_synthetic

    if train_samples is None:
        train_samples = make_synthetic(cfg.n_train, seed=TRAIN_DATA_SEED + cfg.seed, image_size=SCENE_SIZE)
    data = encode(train_samples)
    n = data["ids"].shape[0]
    if n < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n} training samples")
    if eval_samples is None and cfg.n_eval > 0:
        eval_samples = make_synthetic(cfg.n_eval, seed=EVAL_DATA_SEED, image_size=SCENE_SIZE)
    if not eval_samples:
        return EncodedData(data, None, 0)
    return EncodedData(data, encode(eval_samples), len(eval_samples))


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """The model in eval mode for a block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def batches(data: dict[str, torch.Tensor], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive slices of every tensor of ``data`` (rows in order)."""
    for start in range(0, data["ids"].shape[0], batch_size):
        yield {key: value[start:start + batch_size] for key, value in data.items()}


def param_groups(model: Any, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not biases, norms, embeddings of size 1 or the scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, cfg: RunConfig) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def optimise(model: Any, cfg: RunConfig, data: dict[str, torch.Tensor],
             batch_loss: Callable[[dict[str, torch.Tensor]], torch.Tensor], say: Log, started: float, *,
             clip_norm: Optional[float] = None, after_update: Optional[Callable[[], None]] = None,
             status: Callable[[], str] = lambda: "",
             after_step: Optional[Callable[[int], None]] = None) -> list[float]:
    """``cfg.steps`` AdamW steps on ``batch_loss`` of seeded random batches; the per-step losses.

    The batch order is a permutation from ``torch.Generator().manual_seed(cfg.seed)``,
    drawn again whenever fewer than a batch of rows are left. ``clip_norm`` clips
    the gradient norm; ``after_update()`` runs right after each optimiser step (a
    clamp); ``status()`` adds to the progress line every ``cfg.log_every`` steps;
    ``after_step(step)`` ends each step (an evaluation). The model is left in eval mode.
    """
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = data["ids"].shape[0]
    order = torch.randperm(n, generator=gen)
    cursor = 0
    losses: list[float] = []
    model.train()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        loss = batch_loss({key: value[idx] for key, value in data.items()})
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()
        if after_update is not None:
            after_update()
        losses.append(float(loss.detach()))
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            say(f"step {step:5d}  loss {losses[-1]:.4f}  {status()}{time.perf_counter() - started:.0f} s")
        if after_step is not None:
            after_step(step)
    model.eval()
    return losses


def save(result: TrainedModel, out: str | Path) -> Path:
    """Write model (safetensors), tokenizer and image processor with ``save_pretrained``."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(path)
    result.tokenizer.save_pretrained(path)
    result.processor.save_pretrained(path)
    for f in path.iterdir():   # save_pretrained may write owner-only files; the zoo ships them world-readable
        if f.is_file():
            f.chmod(0o644)
    return path
