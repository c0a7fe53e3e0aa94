"""The zoo's LLaVA-style captioner ``shapes-llava``: architecture, tokenizer, caption loss, :func:`train_llava`.

A ``LlavaForConditionalGeneration`` whose frozen vision tower is ``shapes-clip``'s
vision encoder and whose projector and Llama decoder learn to caption the
synthetic scenes with next-token cross-entropy (Liu et al. 2023,
arXiv:2304.08485). Its inputs are built by mmdiag's own LLaVA adapter; the
loop, data and determinism are :mod:`.common`'s. The shapes-clip folder must
exist before it is trained.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from mmdiag.zoo import ZOO_DIR
from mmdiag.zoo.training.common import (
    EVAL_DATA_SEED, IMAGE_SIZE, Log, RunConfig, Setup, TrainedModel, base_vocab_size, batches, evaluating,
    optimise, run_training,
)

#: name -> description of the LLaVA-style zoo models (trained by :func:`train_llava`)
LLAVA_ZOO_MODELS: dict[str, str] = {
    "shapes-llava": "LlavaForConditionalGeneration captioning the synthetic scenes (next-token cross-entropy)",
}
#: the decoder's context: BOS + 64 image tokens + caption (<= 33 words, 43 tokens in practice) + EOS
LLAVA_CONTEXT = 128


@dataclass(frozen=True)
class LlavaTrainConfig(RunConfig):
    """Everything the LLaVA captioner's training depends on."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 50
    n_train: int = 3000
    lm_hidden: int = 64
    lm_layers: int = 3
    vision_layers: int = 4
    vision_init: str = "shapes-clip"   # zoo CLIP whose vision encoder starts the tower ("": random)
    freeze_vision: bool = True          # LLaVA keeps its CLIP tower frozen


@dataclass
class LlavaTrainResult(TrainedModel):
    """A trained captioner with its tokenizer, processor, training record and held-out caption loss."""

    eval_loss: float = float("nan")
    eval_loss_random: float = float("nan")   # before training (pretrained tower, random decoder)
    n_eval: int = 0


def _llava_special_ids() -> dict[str, int]:
    """bos, eos, pad, image and unk ids just after the base vocabulary, and the vocabulary size."""
    n = base_vocab_size()
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
        clip = CLIPModel.from_pretrained(ZOO_DIR / cfg.vision_init, attn_implementation="eager")
        model.model.vision_tower.load_state_dict(clip.vision_model.state_dict(), strict=True)
    if cfg.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    return model, llava_tokenizer(), clip_image_processor(IMAGE_SIZE)


def _llava_adapter(model: Any, tokenizer: Any, processor: Any) -> Any:
    """mmdiag's LLaVA adapter around the model in training, to build its inputs exactly as a run does."""
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
    total, count = 0.0, 0
    with evaluating(model):
        for part in batches(data, batch_size):
            total += float(caption_loss(model, part["pixels"], part["ids"], part["mask"], part["labels"],
                                        reduction="sum"))
            count += int((part["labels"][:, 1:] != -100).sum())
    return total / max(1, count)


def train_llava(cfg: LlavaTrainConfig, log: Optional[Log] = print, train_samples: Optional[Sequence[Any]] = None,
                eval_samples: Optional[Sequence[Any]] = None) -> LlavaTrainResult:
    """Train the LLaVA-style captioner; deterministic in ``cfg`` (for a fixed thread count).

    Data defaults as in :func:`mmdiag.zoo.training.clip.train`: ``make_synthetic(cfg.n_train,
    TRAIN_DATA_SEED + cfg.seed)`` and held-out ``make_synthetic(cfg.n_eval, EVAL_DATA_SEED)``.
    The held-out loss is also reported for the random-init model of the same seed.
    """
    return run_training(cfg, min_batch=1, log=log, build=lambda: build_llava(cfg.seed, cfg), encode=encode_captions,
                        train_samples=train_samples, eval_samples=eval_samples,
                        fit=lambda setup, say: _fit_llava(cfg, setup, say))


def _fit_llava(cfg: LlavaTrainConfig, setup: Setup, say: Log) -> LlavaTrainResult:
    model, data = setup.model, setup.data
    result = LlavaTrainResult(model, setup.tokenizer, setup.processor, cfg, n_eval=data.n_eval)
    if data.held_out is not None:
        result.eval_loss_random = held_out_caption_loss(model, data.held_out)
        say(f"before training: held-out caption loss {result.eval_loss_random:.4f}")

    def batch_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return caption_loss(model, batch["pixels"], batch["ids"], batch["mask"], batch["labels"])

    result.losses = optimise(model, cfg, data.train, batch_loss, say, setup.started, clip_norm=1.0)
    result.seconds = time.perf_counter() - setup.started
    if data.held_out is not None:
        result.eval_loss = held_out_caption_loss(model, data.held_out)
        say(f"held-out caption loss (n={result.n_eval}, data seed {EVAL_DATA_SEED}): trained "
            f"{result.eval_loss:.4f} (perplexity {math.exp(result.eval_loss):.2f}), before training "
            f"{result.eval_loss_random:.4f} (perplexity {math.exp(result.eval_loss_random):.1f})")
    say(f"trained in {result.seconds:.1f} s")
    return result
