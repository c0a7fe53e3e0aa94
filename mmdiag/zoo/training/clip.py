"""The zoo's small CLIP models: architecture, tokenizer, contrastive loss, held-out recall, :func:`train`.

``shapes-clip`` learns its temperature (``logit_scale`` starts at log(1/0.07)
and is clamped at log 100, as CLIP does; Radford et al. 2021,
arXiv:2103.00020); ``shapes-clip-t1``, ``-t0.1``, ``-t0.01`` freeze it at
log(1/τ), the temperature experiment of Liang et al., "Mind the Gap",
NeurIPS 2022, arXiv:2203.02053 (the modality gap grows as τ falls). Captions
and pixels are encoded exactly as mmdiag's CLIP adapter encodes them; the
loop, data and determinism are :mod:`.common`'s.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from mmdiag.zoo.training.common import (
    EVAL_DATA_SEED, IMAGE_SIZE, Log, RunConfig, Setup, TrainedModel, base_vocab_size, batches, evaluating,
    optimise, run_training,
)

#: name -> fixed temperature τ (None: learned temperature, CLIP's recipe)
ZOO_MODELS: dict[str, Optional[float]] = {
    "shapes-clip": None,
    "shapes-clip-t1": 1.0,
    "shapes-clip-t0.1": 0.1,
    "shapes-clip-t0.01": 0.01,
}
#: CLIP's initial temperature 0.07 and its clamp of the logit scale at 100
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)
#: longest caption the grammar emits is 33 words (+ start and end tokens)
MAX_TEXT_LENGTH = 40


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Everything a zoo CLIP's training depends on (the schedule's defaults are :class:`RunConfig`'s)."""

    temperature: Optional[float] = None   # None: learned (init 0.07, clamp 1/100)
    eval_every: int = 0        # also log held-out recall@1 every this many steps (0: only at the end)
    text_chunks: int = 4


@dataclass
class TrainResult(TrainedModel):
    """A trained CLIP with its tokenizer, processor, training record and held-out recall@1."""

    recall_i2t: float = float("nan")
    recall_t2i: float = float("nan")
    n_eval: int = 0
    logit_scale: float = float("nan")


def _special_ids() -> tuple[int, int, int]:
    """(bos, eos, vocab_size): specials sit just after the base vocabulary."""
    n = base_vocab_size()
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

    imgs, txts = [], []
    with evaluating(model):
        for part in batches(data, batch_size):
            i, t = embed(model, part["pixels"], part["ids"], part["mask"], text_chunks=4)
            imgs.append(i)
            txts.append(t)
    return recall_at_1(torch.cat(imgs), torch.cat(txts))


def train(cfg: TrainConfig, log: Optional[Log] = print, train_samples: Optional[Sequence[Any]] = None,
          eval_samples: Optional[Sequence[Any]] = None) -> TrainResult:
    """Train one zoo CLIP; deterministic in ``cfg`` (for a fixed thread count).

    ``train_samples``/``eval_samples`` default to ``make_synthetic(cfg.n_train,
    TRAIN_DATA_SEED + cfg.seed)`` and ``make_synthetic(cfg.n_eval,
    EVAL_DATA_SEED)``; pass ``n_eval=0`` to skip the held-out evaluation.
    ``log`` receives the progress lines (None: silent). The caller's torch
    thread count and deterministic-algorithms flag are restored afterwards.
    """
    return run_training(cfg, min_batch=2, log=log, build=lambda: build_model(cfg.seed, cfg.temperature),
                        encode=lambda samples, _model, tok, proc: encode(samples, tok, proc),
                        train_samples=train_samples, eval_samples=eval_samples,
                        fit=lambda setup, say: _fit(cfg, setup, say))


def _fit(cfg: TrainConfig, setup: Setup, say: Log) -> TrainResult:
    model, data = setup.model, setup.data

    def batch_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        img, txt = embed(model, batch["pixels"], batch["ids"], batch["mask"], cfg.text_chunks)
        return contrastive_loss(img, txt, model.logit_scale)

    def clamp_scale() -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    def evaluate(step: int) -> None:
        if data.held_out is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            i2t, t2i = retrieval_recall(model, data.held_out)
            say(f"step {step + 1:5d}  held-out recall@1 image→text {i2t:.3f}  text→image {t2i:.3f}")

    losses = optimise(model, cfg, data.train, batch_loss, say, setup.started, after_update=clamp_scale,
                      status=lambda: f"1/τ {float(model.logit_scale.detach().exp()):.2f}  ", after_step=evaluate)
    result = TrainResult(model, setup.tokenizer, setup.processor, cfg, losses, time.perf_counter() - setup.started,
                         logit_scale=float(model.logit_scale.detach().exp()))
    if data.held_out is not None:
        result.recall_i2t, result.recall_t2i = retrieval_recall(model, data.held_out)
        result.n_eval = data.n_eval
        say(f"held-out recall@1 (n={result.n_eval}, data seed {EVAL_DATA_SEED}, chance {1 / result.n_eval:.4f}): "
            f"image→text {result.recall_i2t:.3f}  text→image {result.recall_t2i:.3f}")
    say(f"trained in {result.seconds:.1f} s")
    return result
