"""Train the zoo's small CLIP models on the built-in synthetic scenes.

Usage::

    python -m mmdiag.zoo.train NAME [--out DIR] [--steps N] [--seed S]

``NAME`` is one of :data:`ZOO_MODELS`:

* ``shapes-clip``: contrastive (symmetric InfoNCE, Radford et al. 2021,
  arXiv:2103.00020) with a learned temperature (``logit_scale`` starts at
  log(1/0.07) and is clamped at log 100, as CLIP does);
* ``shapes-clip-t1``, ``shapes-clip-t0.1``, ``shapes-clip-t0.01``: the same
  recipe with a *fixed* temperature τ (``logit_scale`` frozen at log(1/τ)),
  the temperature experiment of Liang et al., "Mind the Gap", NeurIPS 2022,
  arXiv:2203.02053 (the modality gap grows as τ falls).

``NAME`` may also be ``shapes-llava`` (:data:`LLAVA_ZOO_MODELS`): a LLaVA-style
``LlavaForConditionalGeneration`` whose frozen vision tower is ``shapes-clip``'s
vision encoder and whose projector and Llama decoder learn to caption the scenes
with next-token cross-entropy (:func:`train_llava`; Liu et al. 2023,
arXiv:2304.08485). The shapes-clip folder must exist before it is trained.

The models are Hugging Face ``CLIPModel`` instances of a small
:func:`zoo_config`, with the offline word tokenizer of
:mod:`mmdiag.models.offline` over a small vocabulary (:func:`zoo_tokenizer`).
Training data are ``make_synthetic(n_train, seed=TRAIN_DATA_SEED + seed)``
(224-pixel scenes, pre-processed once by the model's own image processor, no
augmentation); captions are tokenised exactly as mmdiag's CLIP adapter
tokenises them. mmdiag's default evaluation data (``--mm-data=synthetic
--mm-seed=0``) come from data seed 0, which training never uses, so held-out
numbers are reported on ``make_synthetic(n_eval, seed=EVAL_DATA_SEED)``.

Training is seeded and deterministic on the CPU for a given thread count
(``torch.use_deterministic_algorithms``; the batch order comes from a seeded
generator).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Iterator

import torch
import torch.nn.functional as F

__all__ = [
    "ZOO_MODELS", "TRAIN_DATA_SEED", "EVAL_DATA_SEED", "TrainConfig", "TrainResult",
    "zoo_config", "zoo_tokenizer", "build_model", "encode", "embed", "contrastive_loss",
    "retrieval_recall", "train", "save", "main",
    "LLAVA_ZOO_MODELS", "LlavaTrainConfig", "LlavaTrainResult", "llava_config", "llava_tokenizer",
    "build_llava", "encode_captions", "caption_loss", "held_out_caption_loss", "train_llava",
]

#: name -> fixed temperature τ (None: learned temperature, CLIP's recipe)
ZOO_MODELS: dict[str, Optional[float]] = {
    "shapes-clip": None,
    "shapes-clip-t1": 1.0,
    "shapes-clip-t0.1": 0.1,
    "shapes-clip-t0.01": 0.01,
}
#: training data use make_synthetic(n, seed=TRAIN_DATA_SEED + training seed)
TRAIN_DATA_SEED = 1000
#: held-out evaluation data: mmdiag's default ``--mm-seed=0``
EVAL_DATA_SEED = 0
#: CLIP's initial temperature 0.07 and its clamp of the logit scale at 100
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)
#: rendered size of the synthetic scenes (make_synthetic's default, as mmdiag evaluates)
SCENE_SIZE = 224
IMAGE_SIZE = 64
#: longest caption the grammar emits is 33 words (+ start and end tokens)
MAX_TEXT_LENGTH = 40


@dataclass(frozen=True)
class TrainConfig:
    """Everything a zoo model's training depends on."""

    temperature: Optional[float] = None   # None: learned (init 0.07, clamp 1/100)
    steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 60
    n_train: int = 4000
    n_eval: int = 128
    seed: int = 0
    log_every: int = 100
    eval_every: int = 0        # also log held-out recall@1 every this many steps (0: only at the end)
    text_chunks: int = 4
    threads: int = 1


@dataclass
class TrainResult:
    """A trained model with its tokenizer, processor and training record."""

    model: Any
    tokenizer: Any
    processor: Any
    config: TrainConfig
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    recall_i2t: float = float("nan")
    recall_t2i: float = float("nan")
    n_eval: int = 0
    logit_scale: float = float("nan")


def _special_ids() -> tuple[int, int, int]:
    """(bos, eos, vocab_size): specials sit just after the base vocabulary."""
    from mmdiag.models.offline import _base_vocab

    n = len(_base_vocab())
    return n, n + 1, n + 3   # n + 2 is [UNK] (clip_tokenizer takes the highest free id)


def zoo_config() -> Any:
    """The zoo's small CLIP architecture (a ``transformers.CLIPConfig``)."""
    from transformers import CLIPConfig

    bos, eos, vocab = _special_ids()
    text = {"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4,
            "num_attention_heads": 4, "max_position_embeddings": MAX_TEXT_LENGTH, "hidden_act": "quick_gelu",
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}
    vision = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "image_size": IMAGE_SIZE, "patch_size": 8, "hidden_act": "quick_gelu"}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=64,
                      logit_scale_init_value=INIT_LOGIT_SCALE)


def zoo_tokenizer() -> Any:
    """CLIP-style word tokenizer over the synthetic grammar's words and characters."""
    from mmdiag.models.offline import clip_tokenizer

    bos, eos, vocab = _special_ids()
    return clip_tokenizer(vocab, bos, eos, MAX_TEXT_LENGTH)


def build_model(seed: int, temperature: Optional[float] = None) -> tuple[Any, Any, Any]:
    """(model, tokenizer, image processor) with seeded random weights.

    A fixed ``temperature`` sets ``logit_scale`` to log(1/τ) and freezes it.
    """
    from transformers import CLIPModel

    from mmdiag.models.offline import clip_image_processor

    torch.manual_seed(seed)
    model = CLIPModel._from_config(zoo_config(), attn_implementation="eager")
    if temperature is not None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1.0 / temperature))
        model.logit_scale.requires_grad_(False)
    return model, zoo_tokenizer(), clip_image_processor(IMAGE_SIZE)


def encode(samples: Sequence[Any], tokenizer: Any, processor: Any) -> dict[str, torch.Tensor]:
    """Pixels and token ids exactly as mmdiag's CLIP adapter prepares them."""
    from mmdiag.models.dual import pixel_values, tokenize_captions

    text = tokenize_captions(tokenizer, samples, MAX_TEXT_LENGTH)
    if text.truncated:
        raise ValueError(f"{text.truncated} captions exceed {MAX_TEXT_LENGTH} tokens")
    # chunks keep the processor's full-size float copies of the scenes small
    pixels = torch.cat([pixel_values(processor, samples[i:i + 256]) for i in range(0, len(samples), 256)])
    return {"pixels": pixels, "ids": text.input_ids, "mask": text.attention_mask}


def embed(model: Any, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
          text_chunks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected (image, text) embeddings: CLS and first-EOS pooling, as CLIPModel does.

    ``text_chunks > 1`` runs the captions in length-sorted chunks, each padded
    only to its own longest caption. This is exact (the text tower is causal
    and masked, rows are independent) and saves the compute spent on padding.
    """
    vision = model.vision_model(pixel_values=pixels)
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    pooled = []
    for part in order.chunk(max(1, text_chunks)):
        width = int(lengths[part].max())
        pooled.append(model.text_model(input_ids=ids[part, :width], attention_mask=mask[part, :width]).pooler_output)
    text = torch.cat(pooled)[torch.argsort(order)]
    return model.visual_projection(vision.pooler_output), model.text_projection(text)


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: ½[CE(s·X̂Ŷᵀ, I) + CE(s·ŶX̂ᵀ, I)], s = exp(logit_scale) = 1/τ.

    Radford et al. 2021 (arXiv:2103.00020), matched pairs on the diagonal.
    """
    logits = logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@torch.no_grad()
def retrieval_recall(model: Any, data: dict[str, torch.Tensor], batch_size: int = 256) -> tuple[float, float]:
    """Held-out recall@1 (image→text, text→image) via :func:`mmdiag.metrics.shift.recall_at_1`."""
    from mmdiag.metrics.shift import recall_at_1

    was_training = model.training
    model.eval()
    imgs, txts = [], []
    for start in range(0, data["ids"].shape[0], batch_size):
        sl = slice(start, start + batch_size)
        i, t = embed(model, data["pixels"][sl], data["ids"][sl], data["mask"][sl], text_chunks=4)
        imgs.append(i)
        txts.append(t)
    model.train(was_training)
    return recall_at_1(torch.cat(imgs), torch.cat(txts))


def _param_groups(model: Any, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not biases, norms, embeddings of size 1 or the scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@contextlib.contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
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


def train(cfg: TrainConfig, log: Optional[Callable[[str], None]] = print,
          train_samples: Optional[Sequence[Any]] = None,
          eval_samples: Optional[Sequence[Any]] = None) -> TrainResult:
    """Train one zoo model; deterministic in ``cfg`` (for a fixed thread count).

    ``train_samples``/``eval_samples`` default to ``make_synthetic(cfg.n_train,
    TRAIN_DATA_SEED + cfg.seed)`` and ``make_synthetic(cfg.n_eval,
    EVAL_DATA_SEED)``; pass ``n_eval=0`` to skip the held-out evaluation.
    ``log`` receives the progress lines (None: silent). The caller's torch
    thread count and deterministic-algorithms flag are restored afterwards.
    """
    if cfg.seed < 0:
        raise ValueError(f"seed must be >= 0 (training data seed {TRAIN_DATA_SEED} + seed), got {cfg.seed}")
    if cfg.steps < 1 or cfg.batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    with _deterministic_torch(cfg.threads):
        return _train(cfg, log or (lambda _msg: None), train_samples, eval_samples)


def _train(cfg: TrainConfig, say: Callable[[str], None], train_samples: Optional[Sequence[Any]],
           eval_samples: Optional[Sequence[Any]]) -> TrainResult:
    from mmdiag.data.synthetic import make_synthetic

    started = time.perf_counter()
    model, tok, proc = build_model(cfg.seed, cfg.temperature)
    if train_samples is None:
        train_samples = make_synthetic(cfg.n_train, seed=TRAIN_DATA_SEED + cfg.seed, image_size=SCENE_SIZE)
    data = encode(train_samples, tok, proc)
    n = data["ids"].shape[0]
    if n < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n} training samples")
    if eval_samples is None and cfg.n_eval > 0:
        eval_samples = make_synthetic(cfg.n_eval, seed=EVAL_DATA_SEED, image_size=SCENE_SIZE)
    held_out = encode(eval_samples, tok, proc) if eval_samples else None
    say(f"{n} training scenes encoded in {time.perf_counter() - started:.1f} s")
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    losses: list[float] = []
    model.train()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        img, txt = embed(model, data["pixels"][idx], data["ids"][idx], data["mask"][idx], cfg.text_chunks)
        loss = contrastive_loss(img, txt, model.logit_scale)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
        losses.append(float(loss.detach()))
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            say(f"step {step:5d}  loss {losses[-1]:.4f}  1/τ {float(model.logit_scale.detach().exp()):.2f}  "
                f"{time.perf_counter() - started:.0f} s")
        if held_out is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            i2t, t2i = retrieval_recall(model, held_out)
            say(f"step {step + 1:5d}  held-out recall@1 image→text {i2t:.3f}  text→image {t2i:.3f}")
    model.eval()
    result = TrainResult(model, tok, proc, cfg, losses, time.perf_counter() - started,
                         logit_scale=float(model.logit_scale.detach().exp()))
    if held_out is not None:
        result.recall_i2t, result.recall_t2i = retrieval_recall(model, held_out)
        result.n_eval = len(eval_samples)
        say(f"held-out recall@1 (n={result.n_eval}, data seed {EVAL_DATA_SEED}, chance {1 / result.n_eval:.4f}): "
            f"image→text {result.recall_i2t:.3f}  text→image {result.recall_t2i:.3f}")
    say(f"trained in {result.seconds:.1f} s")
    return result


def save(result: TrainResult, out: str | Path) -> Path:
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



# ---------------------------------------------------------------------------
# shapes-llava: a LLaVA-style captioner (CLIP vision tower + Llama decoder)
# ---------------------------------------------------------------------------

#: name -> description of the LLaVA-style zoo models (trained by :func:`train_llava`)
LLAVA_ZOO_MODELS: dict[str, str] = {
    "shapes-llava": "LlavaForConditionalGeneration captioning the synthetic scenes (next-token cross-entropy)",
}
#: the decoder's context: BOS + 64 image tokens + caption (<= 33 words, 43 tokens in practice) + EOS
LLAVA_CONTEXT = 128


@dataclass(frozen=True)
class LlavaTrainConfig:
    """Everything the LLaVA captioner's training depends on."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 50
    n_train: int = 3000
    n_eval: int = 128
    seed: int = 0
    log_every: int = 100
    threads: int = 1
    lm_hidden: int = 64
    lm_layers: int = 3
    vision_layers: int = 4
    vision_init: str = "shapes-clip"   # zoo CLIP whose vision encoder starts the tower ("": random)
    freeze_vision: bool = True          # LLaVA keeps its CLIP tower frozen


@dataclass
class LlavaTrainResult:
    """A trained captioner with its tokenizer, processor and training record."""

    model: Any
    tokenizer: Any
    processor: Any
    config: LlavaTrainConfig
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    eval_loss: float = float("nan")
    eval_loss_random: float = float("nan")   # before training (pretrained tower, random decoder)
    n_eval: int = 0


def _llava_special_ids() -> dict[str, int]:
    """bos, eos, pad, image and unk ids just after the base vocabulary, and the vocabulary size."""
    from mmdiag.models.offline import _base_vocab

    n = len(_base_vocab())
    return {"bos": n, "eos": n + 1, "pad": n + 2, "image": n + 3, "unk": n + 4, "vocab": n + 5}


def llava_config(lm_hidden: int = 64, lm_layers: int = 3, vision_layers: int = 4) -> Any:
    """The zoo's small LLaVA-1.5-style architecture (a ``transformers.LlavaConfig``).

    CLIP vision tower of the zoo CLIPs' shape (hidden 64, 4 layers, 64 px, patch 8:
    64 patch features, CLS dropped), features from its penultimate layer as in
    LLaVA-1.5 (``vision_feature_layer=-2``), 2-layer GELU projector, Llama decoder
    over the grammar's word vocabulary with ``<image>`` inside it.
    """
    from transformers import LlavaConfig

    sp = _llava_special_ids()
    vision = {"model_type": "clip_vision_model", "hidden_act": "quick_gelu", "hidden_size": 64,
              "intermediate_size": 256, "num_hidden_layers": vision_layers, "num_attention_heads": 4,
              "image_size": IMAGE_SIZE, "patch_size": 8}
    text = {"model_type": "llama", "vocab_size": sp["vocab"], "hidden_size": lm_hidden,
            "intermediate_size": 4 * lm_hidden, "num_hidden_layers": lm_layers, "num_attention_heads": 4,
            "num_key_value_heads": 4, "max_position_embeddings": LLAVA_CONTEXT, "hidden_act": "silu",
            "rms_norm_eps": 1e-5, "bos_token_id": sp["bos"], "eos_token_id": sp["eos"],
            "pad_token_id": sp["pad"], "tie_word_embeddings": False}
    side = IMAGE_SIZE // 8
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=sp["image"],
                       image_seq_length=side * side, vision_feature_select_strategy="default",
                       vision_feature_layer=-2, projector_hidden_act="gelu")


def llava_tokenizer() -> Any:
    """Llama-style word tokenizer (``<s> words``) with ``<image>`` in the vocabulary."""
    from mmdiag.models.offline import llama_tokenizer

    sp = _llava_special_ids()
    return llama_tokenizer(sp["vocab"], sp["bos"], sp["eos"], sp["pad"], sp["image"], LLAVA_CONTEXT)


def build_llava(seed: int, cfg: Optional[LlavaTrainConfig] = None) -> tuple[Any, Any, Any]:
    """(LlavaForConditionalGeneration, tokenizer, image processor) with seeded random weights.

    With ``cfg.vision_init`` set, the vision tower is then overwritten by that zoo
    CLIP's vision encoder (LLaVA starts from a contrastively trained CLIP tower)
    and, with ``cfg.freeze_vision``, frozen.
    """
    from transformers import CLIPModel, LlavaForConditionalGeneration

    from mmdiag.models.offline import clip_image_processor

    cfg = cfg or LlavaTrainConfig()
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration._from_config(
        llava_config(cfg.lm_hidden, cfg.lm_layers, cfg.vision_layers), attn_implementation="eager")
    if cfg.vision_init:
        clip = CLIPModel.from_pretrained(Path(__file__).parent / cfg.vision_init, attn_implementation="eager")
        model.model.vision_tower.load_state_dict(clip.vision_model.state_dict(), strict=True)
    if cfg.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    return model, llava_tokenizer(), clip_image_processor(IMAGE_SIZE)


def _llava_adapter(model: Any, tokenizer: Any, processor: Any) -> Any:
    from mmdiag.models.base import ModelInfo
    from mmdiag.models.llava import LlavaAdapter

    info = ModelInfo(spec="zoo-training", family="llava", n_params=0, fingerprint="")
    return LlavaAdapter(model, tokenizer, processor, info, torch.device("cpu"), torch.float32)


def encode_captions(samples: Sequence[Any], model: Any, tokenizer: Any, processor: Any) -> dict[str, torch.Tensor]:
    """Decoder inputs exactly as mmdiag's LLaVA adapter builds them, plus EOS and labels.

    ``ids``: ``<s> <image>*N caption </s> <pad>...``; ``mask``: 1 on real tokens;
    ``labels``: the token ids at the caption and EOS positions, -100 elsewhere
    (BOS, image tokens, padding), so the loss scores only the caption given the image.
    """
    adapter = _llava_adapter(model, tokenizer, processor)
    eos = int(model.config.text_config.eos_token_id)
    _, pad_id, _ = adapter.special_ids()
    ids_parts, mask_parts, label_parts, pixel_parts = [], [], [], []
    for start in range(0, len(samples), 256):
        batch = adapter.prepare(samples[start:start + 256])
        ids, real = batch["input_ids"], batch["real"]
        ids = F.pad(ids, (0, 1), value=pad_id)   # room for EOS after the longest caption
        real = torch.cat([real, torch.zeros((real.shape[0], 1), dtype=torch.bool)], dim=1)
        lengths = real.sum(dim=1)
        rows = torch.arange(ids.shape[0])
        ids[rows, lengths] = eos
        real[rows, lengths] = True
        labels = torch.where(real, ids, torch.full_like(ids, -100))
        labels[:, :int(batch["text_start"])] = -100
        ids_parts.append(ids)
        mask_parts.append(real.long())
        label_parts.append(labels)
        pixel_parts.append(batch["pixel_values"])
    width = max(t.shape[1] for t in ids_parts)

    def widen(parts: list[torch.Tensor], fill: int) -> torch.Tensor:
        return torch.cat([F.pad(t, (0, width - t.shape[1]), value=fill) for t in parts])

    return {"ids": widen(ids_parts, pad_id), "mask": widen(mask_parts, 0), "labels": widen(label_parts, -100),
            "pixels": torch.cat(pixel_parts)}


def caption_loss(model: Any, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                 labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy −(1/T) Σ_t log p(x_t | x_<t, image) over the labelled positions.

    The causal LM objective of LLaVA's captioning/instruction stages (Liu et al.
    2023, arXiv:2304.08485): logits at position t−1 predict the token at t.
    ``reduction="sum"`` returns the summed negative log-likelihood instead.
    """
    width = int(mask.sum(dim=1).max())
    out = model(input_ids=ids[:, :width], pixel_values=pixels, attention_mask=mask[:, :width])
    logits = out.logits[:, :-1].float()
    target = labels[:, 1:width]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                           reduction=reduction)


@torch.no_grad()
def held_out_caption_loss(model: Any, data: dict[str, torch.Tensor], batch_size: int = 64) -> float:
    """Mean per-token caption cross-entropy (nats) on held-out data; exp of it is the perplexity."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, data["ids"].shape[0], batch_size):
        sl = slice(start, start + batch_size)
        total += float(caption_loss(model, data["pixels"][sl], data["ids"][sl], data["mask"][sl],
                                    data["labels"][sl], reduction="sum"))
        count += int((data["labels"][sl, 1:] != -100).sum())
    model.train(was_training)
    return total / max(1, count)


def train_llava(cfg: LlavaTrainConfig, log: Optional[Callable[[str], None]] = print,
                train_samples: Optional[Sequence[Any]] = None,
                eval_samples: Optional[Sequence[Any]] = None) -> LlavaTrainResult:
    """Train the LLaVA-style captioner; deterministic in ``cfg`` (for a fixed thread count).

    Data defaults as in :func:`train`: ``make_synthetic(cfg.n_train,
    TRAIN_DATA_SEED + cfg.seed)`` and held-out ``make_synthetic(cfg.n_eval, EVAL_DATA_SEED)``.
    The held-out loss is also reported for the random-init model of the same seed.
    """
    if cfg.seed < 0:
        raise ValueError(f"seed must be >= 0 (training data seed {TRAIN_DATA_SEED} + seed), got {cfg.seed}")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    with _deterministic_torch(cfg.threads):
        return _train_llava(cfg, log or (lambda _msg: None), train_samples, eval_samples)


def _train_llava(cfg: LlavaTrainConfig, say: Callable[[str], None], train_samples: Optional[Sequence[Any]],
                 eval_samples: Optional[Sequence[Any]]) -> LlavaTrainResult:
    from mmdiag.data.synthetic import make_synthetic

    started = time.perf_counter()
    model, tok, proc = build_llava(cfg.seed, cfg)
    if train_samples is None:
        train_samples = make_synthetic(cfg.n_train, seed=TRAIN_DATA_SEED + cfg.seed, image_size=SCENE_SIZE)
    data = encode_captions(train_samples, model, tok, proc)
    n = data["ids"].shape[0]
    if n < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {n} training samples")
    if eval_samples is None and cfg.n_eval > 0:
        eval_samples = make_synthetic(cfg.n_eval, seed=EVAL_DATA_SEED, image_size=SCENE_SIZE)
    held_out = encode_captions(eval_samples, model, tok, proc) if eval_samples else None
    result = LlavaTrainResult(model, tok, proc, cfg)
    if held_out is not None:
        result.eval_loss_random = held_out_caption_loss(model, held_out)
        result.n_eval = len(eval_samples)
        say(f"before training: held-out caption loss {result.eval_loss_random:.4f}")
    say(f"{n} training scenes encoded in {time.perf_counter() - started:.1f} s")
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    model.train()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        loss = caption_loss(model, data["pixels"][idx], data["ids"][idx], data["mask"][idx], data["labels"][idx])
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        result.losses.append(float(loss.detach()))
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            say(f"step {step:5d}  loss {result.losses[-1]:.4f}  {time.perf_counter() - started:.0f} s")
    model.eval()
    result.seconds = time.perf_counter() - started
    if held_out is not None:
        result.eval_loss = held_out_caption_loss(model, held_out)
        say(f"held-out caption loss (n={result.n_eval}, data seed {EVAL_DATA_SEED}): trained "
            f"{result.eval_loss:.4f} (perplexity {math.exp(result.eval_loss):.2f}), before training "
            f"{result.eval_loss_random:.4f} (perplexity {math.exp(result.eval_loss_random):.1f})")
    say(f"trained in {result.seconds:.1f} s")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LLAVA_ZOO_MODELS:
        return _main_llava(argv)
    parser = argparse.ArgumentParser(prog="python -m mmdiag.zoo.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(ZOO_MODELS) + sorted(LLAVA_ZOO_MODELS), help="zoo model to train")
    parser.add_argument("--out", default=None, help="output folder (default: the zoo folder of the package)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--n-train", type=int, default=TrainConfig.n_train)
    parser.add_argument("--n-eval", type=int, default=TrainConfig.n_eval)
    parser.add_argument("--log-every", type=int, default=TrainConfig.log_every)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads,
                        help="torch CPU threads (results are bit-reproducible for a fixed count)")
    args = parser.parse_args(argv)
    cfg = replace(TrainConfig(), temperature=ZOO_MODELS[args.name], steps=args.steps, seed=args.seed,
                  batch_size=args.batch_size, n_train=args.n_train, n_eval=args.n_eval,
                  log_every=args.log_every, threads=args.threads)
    result = train(cfg)
    out = Path(args.out) if args.out else Path(__file__).parent / args.name
    save(result, out)
    print(f"saved {args.name} to {out}")
    return 0


def _main_llava(argv: Sequence[str]) -> int:
    """``python -m mmdiag.zoo.train shapes-llava [...]``: the captioning decoder."""
    d = LlavaTrainConfig()
    parser = argparse.ArgumentParser(prog="python -m mmdiag.zoo.train",
                                     description="train the zoo's LLaVA-style captioner")
    parser.add_argument("name", choices=sorted(LLAVA_ZOO_MODELS))
    parser.add_argument("--out", default=None, help="output folder (default: the zoo folder of the package)")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--n-train", type=int, default=d.n_train)
    parser.add_argument("--n-eval", type=int, default=d.n_eval)
    parser.add_argument("--log-every", type=int, default=d.log_every)
    parser.add_argument("--threads", type=int, default=d.threads)
    args = parser.parse_args(argv)
    cfg = replace(d, steps=args.steps, seed=args.seed, batch_size=args.batch_size, n_train=args.n_train,
                  n_eval=args.n_eval, log_every=args.log_every, threads=args.threads)
    result = train_llava(cfg)
    out = Path(args.out) if args.out else Path(__file__).parent / args.name
    save(result, out)
    print(f"saved {args.name} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
