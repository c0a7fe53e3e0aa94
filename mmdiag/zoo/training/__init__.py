"""Training of the zoo's models on the built-in synthetic scenes (``python -m mmdiag.zoo.train NAME``).

* :mod:`.common`: what every trainer shares (data splits, determinism,
  AdamW and its schedule, the training loop, saving);
* :mod:`.clip`: the small CLIPs (``shapes-clip`` and the fixed-temperature
  ``shapes-clip-t*``), symmetric InfoNCE;
* :mod:`.llava`: the LLaVA-style captioner ``shapes-llava``, next-token
  cross-entropy over a frozen ``shapes-clip`` tower;
* :mod:`.cli`: the command line.

Training data are ``make_synthetic(n_train, seed=TRAIN_DATA_SEED + seed)``
(224-pixel scenes, pre-processed once by the model's own image processor, no
augmentation); mmdiag's default evaluation data (``--mm-data=synthetic
--mm-seed=0``) come from data seed 0, which training never uses, so held-out
numbers are reported on ``make_synthetic(n_eval, seed=EVAL_DATA_SEED)``.
Training is seeded and deterministic on the CPU for a given thread count
(``torch.use_deterministic_algorithms``; the batch order comes from a seeded
generator). A developer tool: neither the plugin nor ``zoo:NAME`` loading imports it.
"""
from __future__ import annotations

from mmdiag.zoo.training.cli import main
from mmdiag.zoo.training.clip import (
    INIT_LOGIT_SCALE, MAX_LOGIT_SCALE, MAX_TEXT_LENGTH, ZOO_MODELS, TrainConfig, TrainResult, build_model,
    contrastive_loss, embed, encode, retrieval_recall, train, zoo_config, zoo_tokenizer,
)
from mmdiag.zoo.training.common import EVAL_DATA_SEED, IMAGE_SIZE, SCENE_SIZE, TRAIN_DATA_SEED, save
from mmdiag.zoo.training.llava import (
    LLAVA_CONTEXT, LLAVA_ZOO_MODELS, LlavaTrainConfig, LlavaTrainResult, build_llava, caption_loss,
    encode_captions, held_out_caption_loss, llava_config, llava_tokenizer, train_llava,
)

__all__ = [
    "ZOO_MODELS", "TRAIN_DATA_SEED", "EVAL_DATA_SEED", "INIT_LOGIT_SCALE", "MAX_LOGIT_SCALE", "MAX_TEXT_LENGTH",
    "IMAGE_SIZE", "SCENE_SIZE", "TrainConfig", "TrainResult", "zoo_config", "zoo_tokenizer", "build_model",
    "encode", "embed", "contrastive_loss", "retrieval_recall", "train", "save", "main",
    "LLAVA_ZOO_MODELS", "LLAVA_CONTEXT", "LlavaTrainConfig", "LlavaTrainResult", "llava_config", "llava_tokenizer",
    "build_llava", "encode_captions", "caption_loss", "held_out_caption_loss", "train_llava",
]
