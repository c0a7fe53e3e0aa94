"""``python -m mmdiag.zoo.train NAME [--out DIR] [--steps N] [--seed S] ...``: train one zoo model and save it.

``NAME`` is a CLIP of :data:`~mmdiag.zoo.training.clip.ZOO_MODELS` or the
captioner of :data:`~mmdiag.zoo.training.llava.LLAVA_ZOO_MODELS`; the options
are the settings both trainers share, their defaults those of that model's
config. Without ``--out`` the model is written to its zoo folder.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from mmdiag.zoo import ZOO_DIR
from mmdiag.zoo.training.clip import ZOO_MODELS, TrainConfig, train
from mmdiag.zoo.training.common import RunConfig, save
from mmdiag.zoo.training.llava import LLAVA_ZOO_MODELS, LlavaTrainConfig, train_llava

CLIP_DESCRIPTION = "Train the zoo's small CLIP models on the built-in synthetic scenes."
LLAVA_DESCRIPTION = "train the zoo's LLaVA-style captioner"


def build_parser(names: Sequence[str], defaults: RunConfig, description: str) -> argparse.ArgumentParser:
    """The options of one kind of zoo model, with that kind's defaults."""
    parser = argparse.ArgumentParser(prog="python -m mmdiag.zoo.train", description=description)
    parser.add_argument("name", choices=list(names), help="zoo model to train")
    parser.add_argument("--out", default=None, help="output folder (default: the zoo folder of the package)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-eval", type=int, default=defaults.n_eval)
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="torch CPU threads (results are bit-reproducible for a fixed count)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train and save the zoo model named first in ``argv``; 0 on success (argparse exits on bad options)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    llava = bool(argv) and argv[0] in LLAVA_ZOO_MODELS
    if llava:
        parser = build_parser(sorted(LLAVA_ZOO_MODELS), LlavaTrainConfig(), LLAVA_DESCRIPTION)
    else:
        parser = build_parser(sorted(ZOO_MODELS) + sorted(LLAVA_ZOO_MODELS), TrainConfig(), CLIP_DESCRIPTION)
    args = parser.parse_args(argv)
    settings = {"steps": args.steps, "seed": args.seed, "batch_size": args.batch_size, "n_train": args.n_train,
                "n_eval": args.n_eval, "log_every": args.log_every, "threads": args.threads}
    if llava:
        result = train_llava(replace(LlavaTrainConfig(), **settings))
    else:
        result = train(replace(TrainConfig(), temperature=ZOO_MODELS[args.name], **settings))
    out = Path(args.out) if args.out else ZOO_DIR / args.name
    save(result, out)
    print(f"saved {args.name} to {out}")
    return 0
