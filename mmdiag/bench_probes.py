"""``python -m mmdiag.bench_probes``: the ``fast`` probe regimen against the ``paper`` regimen, same data.

In one process, on one model and one set of synthetic captions:

1. record word states once (``record(..., words=True)``; for a model with an
   image tower also the scene-tree region states, ``regions=True``) and keep
   the recording's forward-pass seconds;
2. per modality, build the probe set and fit depth and distance probes for
   every layer with regimen ``"paper"`` (Hewitt & Manning 2019) and with
   ``"fast"`` (mmdiag's default) on the same train/dev/test split and seed;
3. print per regimen the best-layer NSpr, root accuracy, DSpr, UUAS (test
   split), the layers they come from and the fit seconds, then the
   differences ``fast - paper``, the time ratio ``fast / paper`` and
   ``fast fit / forward``.

The default model is ``random:bert-base-uncased`` written to a temporary
directory with :func:`~mmdiag.models.load.save_preset` and loaded back from
there (the code path of a hub id). A command that prints figures: the issue's
targets are printed beside them, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

#: issue targets (printed, never asserted)
SCORE_TOLERANCE = 0.02  # |fast - paper| on every best-layer score
TIME_RATIO_TARGET = 0.2  # fast fit seconds / paper fit seconds
DEFAULT_PRESET = "random:bert-base-uncased"
METRICS = (("nspr", "NSpr"), ("root_acc", "root acc"), ("dspr", "DSpr"), ("uuas", "UUAS"))
REGIMENS = ("paper", "fast")


def _finite(values: Sequence[float]) -> list[Optional[float]]:
    return [None if v is None or not np.isfinite(v) else float(v) for v in values]


def regimen_figures(pset: Any, seed: int, regimen: str, rank: Optional[int]) -> dict[str, Any]:
    """Depth and distance probes of every layer with one regimen: per-layer scores, best layers, fit seconds."""
    from mmdiag.analyses.probes import best, probe_scores

    depth = probe_scores(pset, seed, regimen=regimen, rank=rank, kinds=("depth",))
    distance = probe_scores(pset, seed, regimen=regimen, rank=rank, kinds=("distance",))
    out: dict[str, Any] = {"depth_fit_s": depth.fit_s, "distance_fit_s": distance.fit_s,
                           "fit_s": depth.fit_s + distance.fit_s, "per_layer": {}, "best": {},
                           "best_layer": {}}
    for key, _ in METRICS:
        values = getattr(depth, key)
        if values is None:
            values = getattr(distance, key)
        if values is None:
            continue
        layer, value = best(values)
        out["per_layer"][key] = _finite(values)
        out["best"][key] = value if np.isfinite(value) else None
        out["best_layer"][key] = layer
    out["split"] = {"n_train": depth.n_train, "n_dev": depth.n_dev, "n_test": depth.n_test}
    return out


def _default_rank(regimen: str, dim: int) -> int:
    """The rank a regimen fits when none is asked for (``Regimen.max_rank``; 0 = full rank)."""
    from mmdiag.probing.regimens import get_regimen

    return get_regimen(regimen).rank_for(dim)


def compare(pset: Any, seed: int, rank: Optional[int], forward_s: float) -> dict[str, Any]:
    """Both regimens on one probe set, their differences (fast - paper) and time ratios."""
    data = pset.data
    fig: dict[str, Any] = {"n_sentences": data.n_sentences, "n_words": int(sum(data.lengths)),
                           "layers": int(data.states.shape[0]), "dim": int(data.states.shape[2]),
                           "rank": rank,  # as asked; None: each regimen's default, in "ranks"
                           "ranks": {name: rank if rank is not None else _default_rank(name, int(data.states.shape[2]))
                                     for name in REGIMENS}}
    for regimen in REGIMENS:
        fig[regimen] = regimen_figures(pset, seed, regimen, rank)
    fig["split"] = fig["fast"].pop("split")
    fig["paper"].pop("split")
    fig["diff"] = {key: (fig["fast"]["best"][key] - fig["paper"]["best"][key]
                         if fig["fast"]["best"].get(key) is not None and fig["paper"]["best"].get(key) is not None
                         else None)
                   for key, _ in METRICS if key in fig["fast"]["best"]}
    paper_s, fast_s = fig["paper"]["fit_s"], fig["fast"]["fit_s"]
    fig["time_ratio"] = fast_s / paper_s if paper_s > 0 else None
    fig["fast_fit_over_forward"] = fast_s / forward_s if forward_s > 0 else None
    fig["paper_fit_over_forward"] = paper_s / forward_s if forward_s > 0 else None
    diffs = [abs(d) for d in fig["diff"].values() if d is not None]
    fig["within_tolerance"] = bool(diffs) and max(diffs) <= SCORE_TOLERANCE
    fig["time_target_met"] = fig["time_ratio"] is not None and fig["time_ratio"] <= TIME_RATIO_TARGET
    return fig


def _load(spec: Optional[str], device: str, seed: int, tmp: str) -> tuple[Any, str, float]:
    from mmdiag.models.load import load_adapter, save_preset

    start = time.perf_counter()
    if spec is None:
        path = save_preset(DEFAULT_PRESET, Path(tmp) / "model", seed=seed)
        adapter = load_adapter(str(path), device=device, seed=seed)
        label = f"{DEFAULT_PRESET} (saved with save_preset, loaded from its directory)"
    else:
        adapter = load_adapter(spec, device=device, seed=seed)
        label = spec
    return adapter, label, time.perf_counter() - start


def run(model: Optional[str] = None, n: int = 256, seed: int = 0, batch_size: int = 32, device: str = "cpu",
        rank: Optional[int] = None, image: bool = True, progress: Any = None) -> dict[str, Any]:
    """Record once, then compare the regimens on every modality with probe data; returns the figures."""
    from mmdiag.analyses.probes import image_probe_set, text_probe_set
    from mmdiag.data.synthetic import make_synthetic
    from mmdiag.models.base import optional
    from mmdiag.record import record

    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="mmdiag-bench-probes-") as tmp:
        adapter, label, load_s = _load(model, device, seed, tmp)
    modalities = adapter.layer_counts()
    with_image = image and "image" in modalities
    samples = make_synthetic(n, seed)
    if not with_image:
        samples = [replace(s, image=None) for s in samples]  # text probes only: no image to open or encode
    say(f"loaded {label} in {load_s:.1f} s; recording {n} samples ({'text + image' if with_image else 'text'})")
    acts = record(adapter, samples, batch_size, words=True, regions=with_image)
    fig: dict[str, Any] = {
        "model": model or DEFAULT_PRESET, "model_label": label, "n": n, "seed": seed, "batch_size": batch_size,
        "device": str(optional(adapter, "device") or device), "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
        "load_s": load_s, "forward_s": acts.forward_s,
        "targets": {"score_tolerance": SCORE_TOLERANCE, "time_ratio": TIME_RATIO_TARGET},
        "modalities": {},
    }
    builders = {"text": text_probe_set, "image": image_probe_set}
    for modality in ("text", "image") if with_image else ("text",):
        pset = builders[modality](acts, samples)
        if pset is None or pset.data.n_sentences < 3:
            say(f"{modality}: no probe data, skipped")
            continue
        say(f"{modality}: fitting paper and fast probes on {pset.data.n_sentences} "
            f"{'captions' if modality == 'text' else 'scene trees'}, {pset.data.states.shape[0]} layers")
        fig["modalities"][modality] = compare(pset, seed, rank, acts.forward_s)
    fast_total = sum(m["fast"]["fit_s"] for m in fig["modalities"].values())
    fig["fast_fit_total_s"] = fast_total
    fig["fast_fit_total_over_forward"] = fast_total / acts.forward_s if acts.forward_s > 0 else None
    return fig


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_figures(fig: dict[str, Any]) -> str:
    """A plain-text table of the figures, one block per modality."""
    lines = [f"model {fig['model_label']}; n={fig['n']} synthetic captions, seed {fig['seed']}; "
             f"device {fig['device']}, {fig['threads']} torch threads",
             f"forward_s {fig['forward_s']:.2f} (the recording: forward pass + word/region reductions); "
             f"load_s {fig['load_s']:.2f}"]
    for modality, m in fig["modalities"].items():
        lines.append("")
        lines.append(f"[{modality}] {m['n_sentences']} {'sentences' if modality == 'text' else 'scene trees'}, "
                     f"{m['n_words']} nodes, {m['layers']} layers, D={m['dim']}, rank "
                     f"{' / '.join(f'{k} {v}' for k, v in m['ranks'].items())}; "
                     f"split train/dev/test {m['split']['n_train']}/{m['split']['n_dev']}/{m['split']['n_test']}")
        keys = [(k, name) for k, name in METRICS if k in m["fast"]["best"]]
        head = f"  {'regimen':<8}" + "".join(f"{name:>10} {'@L':>3}" for _, name in keys) + \
            f"{'depth_s':>10}{'dist_s':>9}{'fit_s':>9}"
        lines.append(head)
        for regimen in REGIMENS:
            r = m[regimen]
            row = f"  {regimen:<8}" + "".join(f"{_fmt(r['best'][k]):>10} {r['best_layer'][k]:>3}" for k, _ in keys)
            row += f"{r['depth_fit_s']:>10.2f}{r['distance_fit_s']:>9.2f}{r['fit_s']:>9.2f}"
            lines.append(row)
        diff_cells = ("-" if m["diff"][k] is None else format(m["diff"][k], "+.3f") for k, _ in keys)
        lines.append(f"  {'fast-pap':<8}" + "".join(f"{cell:>10} {'':>3}" for cell in diff_cells))
        lines.append(f"  time ratio fast/paper {_fmt(m['time_ratio'])} (target <= {TIME_RATIO_TARGET}); "
                     f"max |fast - paper| {_fmt(max((abs(d) for d in m['diff'].values() if d is not None), default=None))}"
                     f" (target <= {SCORE_TOLERANCE}); fit/forward fast {_fmt(m['fast_fit_over_forward'], 2)}, "
                     f"paper {_fmt(m['paper_fit_over_forward'], 2)}")
    if len(fig["modalities"]) > 1:
        lines.append("")
        lines.append(f"all modalities: fast fit {fig['fast_fit_total_s']:.2f} s = "
                     f"{_fmt(fig['fast_fit_total_over_forward'], 2)} x forward_s")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mmdiag.bench_probes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None,
                   help=f"model spec (default: {DEFAULT_PRESET} saved to a temporary directory and loaded from it)")
    p.add_argument("-n", "--samples", type=int, default=256, help="synthetic captions (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--rank", type=int, default=None,
                   help="probe rank (default: each regimen's own, D for paper and min(D, 128) for fast)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-image", action="store_true", help="text probes only, even for a model with images")
    p.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from mmdiag.errors import MMDiagError

    args = parse_args(argv)
    if args.samples < 5:
        print("bench_probes: -n must be at least 5 (train, dev and test parts)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    say = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        fig = run(args.model, args.samples, args.seed, args.batch_size, args.device, args.rank,
                  image=not args.no_image, progress=say)
    except MMDiagError as exc:
        print(f"bench_probes: {exc}", file=sys.stderr)
        return 2
    if not fig["modalities"]:
        print("bench_probes: no probe data (no caption with a gold tree survived tokenisation)", file=sys.stderr)
        return 1
    print(format_figures(fig))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(fig, indent=2, sort_keys=True))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
