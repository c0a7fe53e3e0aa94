"""``python -m mmdiag.devtools.bench.widen PRESET DIR --width K``: a ``random:`` preset K times wider, saved.

The ``tiny-*`` presets of most families are tests' models: their forward pass
takes a millisecond per sample, so fixed costs per batch (image processing,
tokenising, the Python of every reduction) decide the bench's ratio of the
recorded forward to the bare forward, not the model. This writes the same
architecture with every width (hidden and intermediate sizes, projections, head
sizes; the number of heads stays) multiplied by ``K``,
seeded random weights, and the preset's own tokenizer and processor, with
``save_pretrained``: ``python -m mmdiag.bench --model DIR`` then loads it as a
checkpoint (docs/performance.md, "Recorded forward per family"). The sequence
layout (image size, tiles, query tokens, vocabulary) is the preset's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

#: config fields that are widths, in every sub-config; the head counts stay, so each head is ``width`` times wider
#: too (the tiny presets' 8- or 16-wide heads become 64 or 128 wide, as in published models)
WIDTH_KEYS = ("hidden_size", "intermediate_size", "ffn_dim", "word_embed_proj_dim", "encoder_hidden_size",
              "vision_output_dim", "projection_dim", "embed_dim", "out_hidden_size", "head_dim")
#: lists that split a head's width (Qwen2-VL's multimodal rotary sections), scaled alike
WIDTH_LISTS = ("mrope_section",)


def widen_dict(config: dict, width: int) -> dict:
    """``config`` (a ``to_dict()``) with every :data:`WIDTH_KEYS` integer and :data:`WIDTH_LISTS` entry times
    ``width``, sub-configs included."""
    out: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = widen_dict(value, width)
        elif key in WIDTH_KEYS and isinstance(value, int) and not isinstance(value, bool):
            out[key] = value * width
        elif key in WIDTH_LISTS and isinstance(value, list):
            out[key] = [int(v) * width for v in value]
        else:
            out[key] = value
    return out


def widened(preset: str, width: int, seed: int = 0) -> tuple[Any, Any, Any]:
    """(model, tokenizer, processor) of ``random:PRESET`` with every width times ``width`` (seeded random weights)."""
    import torch

    from mmdiag.models.load import load_parts
    from mmdiag.models.weights import fresh_model

    _, model, tok, proc, _ = load_parts(f"random:{preset}", seed)
    config = type(model.config).from_dict(widen_dict(model.config.to_dict(), width))
    torch.manual_seed(seed)
    return fresh_model(type(model), config), tok, proc


def save_widened(preset: str, directory: Path, width: int, seed: int = 0) -> dict[str, Any]:
    """Write :func:`widened` to ``directory`` (``save_pretrained``); returns what was written."""
    from mmdiag.models.base import count_params

    model, tok, proc = widened(preset, width, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    if proc is not None:
        proc.save_pretrained(directory)
    return {"preset": preset, "width": width, "directory": str(directory), "n_params": count_params(model)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmdiag.devtools.bench.widen", description=__doc__.split("\n")[0])
    p.add_argument("preset", help="a random: preset name, e.g. tiny-mllama")
    p.add_argument("directory", type=Path)
    p.add_argument("--width", type=int, default=8, help="width multiplier (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.width < 1:
        p.error(f"--width must be >= 1, got {args.width}")
    done = save_widened(args.preset, args.directory, args.width, args.seed)
    print(f"wrote {done['directory']}: {done['preset']} x{done['width']} wide, {done['n_params']:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
