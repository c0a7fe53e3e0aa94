"""The command line of ``python -m mmdiag.bench``: its options, their checks, and what it prints.

:func:`main` turns the options into a :class:`BenchConfig`, runs the timing
phases (:mod:`.run`, or :mod:`.processes` for ``--repeat``) or the memory
scaling, prints the table (:mod:`.report`) and writes ``--json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from mmdiag.checkspec import FAMILY_ORDER
from mmdiag.devtools.bench.config import SCALING_FACTOR, SCALING_SETS, BenchConfig
from mmdiag.devtools.bench.processes import memory_scaling, repeated
from mmdiag.devtools.bench.report import print_table, render_rows, scaling_rows
from mmdiag.devtools.bench.run import run
from mmdiag.devtools.bench.scaling import (SCALING_N, TREEBANK_N, parse_sizes, scaling_table, suite_scaling,
                                           treebank_memory, treebank_table)

#: the model of --scaling and --treebank-memory unless --model names one
SCALING_MODEL = "random:tiny-clip"


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_families(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """``cone,gap`` -> ("cone", "gap"); None or ``all`` -> None (every family)."""
    if text is None or text.strip() in ("", "all"):
        return None
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in FAMILY_ORDER]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown families {', '.join(unknown)} "
                                         f"(accepted: {', '.join(FAMILY_ORDER)})")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m mmdiag.bench`` (docs/performance.md)."""
    p = argparse.ArgumentParser(prog="python -m mmdiag.bench",
                                description="Time mmdiag's full suite against the model's bare forward pass.")
    p.add_argument("--model", default=None,
                   help=f"--mm-model spec (default {BenchConfig.model}; {SCALING_MODEL} with --scaling and "
                        "--treebank-memory)")
    p.add_argument("-n", "--samples", type=int, default=BenchConfig.samples, help="samples (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=BenchConfig.batch_size, help="default %(default)s")
    p.add_argument("--device", default=BenchConfig.device, help="auto, cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--dtype", default=BenchConfig.dtype, help="fp32 or bf16 (default %(default)s)")
    p.add_argument("--data", default=BenchConfig.data, help="--mm-data spec (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--families", type=parse_families, default=None,
                   help=f"comma list of {','.join(FAMILY_ORDER)} (default: all)")
    p.add_argument("--select", choices=("k", "files"), default="k",
                   help="pick families by a -k expression (default) or by passing their check files")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    p.add_argument("--memory-scaling", action="store_true",
                   help=f"peak RSS of geometry+attention and of probe (or of --families) at N and "
                        f"{SCALING_FACTOR}N, each in its own process, instead of the timing run")
    p.add_argument("--scaling", action="store_true",
                   help="suite time and peak RSS at each N of --scaling-n (fresh process each), with the fitted "
                        "exponent of time ~ N^a, overall and per family")
    p.add_argument("--scaling-n", type=_sizes, default=SCALING_N, metavar="N,N,...",
                   help="sizes for --scaling (default 256,1k,4k,16k; k = 1,024 after a power of two)")
    p.add_argument("--treebank-memory", action="store_true",
                   help="peak RSS of the probe family with --mm-treebank of N synthetic sentences, for each N of "
                        "--treebank-n (fresh process each): flat when word states stay on disk")
    p.add_argument("--treebank-n", type=_sizes, default=TREEBANK_N, metavar="N,N,...",
                   help="treebank sizes for --treebank-memory (default 4000,40000)")
    p.add_argument("--floor-attentions", action="store_true",
                   help="also time the floor with output_attentions=True")
    p.add_argument("--floor-sdpa", action="store_true",
                   help="also time the floor with attn_implementation='sdpa' (mmdiag records with eager kernels, "
                        "which return the attention weights; sdpa is the deployment floor) and report the ratio "
                        "against it")
    p.add_argument("--floor-twice", action="store_true",
                   help="time the floor again after the suite (shows how noisy the machine is)")
    p.add_argument("--suite-only", action="store_true", help="skip the floor (used by --memory-scaling)")
    p.add_argument("--show-pytest", action="store_true", help="let the suite's pytest output through")
    p.add_argument("--suite-arg", action="append", default=[], metavar="ARG",
                   help="extra pytest argument for the suite, e.g. --suite-arg=--mm-probe-rank=128 (repeatable)")
    p.add_argument("--no-cache", action="store_true",
                   help="run the suite with --mm-no-cache (default: cold activation cache, written)")
    p.add_argument("--profile", type=Path, default=None, metavar="FILE",
                   help="cProfile the suite phase into FILE and print its top functions (inflates timings)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run both phases N times, each in a fresh process, and report the run with the median ratio "
                        "(with every run's figures): for noisy machines")
    p.add_argument("--all-plugins", action="store_true",
                   help="load every installed pytest plugin in the suite, as a plain pytest run in this environment "
                        "does (default: mmdiag's plugin only)")
    p.add_argument("--quiet", action="store_true", help="print nothing (with --json)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the bench with these arguments; 0 done, 1 the suite did not run to the end, 2 bad options."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    if args.samples < 1 or args.batch_size < 1 or args.repeat < 1:
        print("mmdiag.bench: --samples, --batch-size and --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.repeat > 1 and (args.profile is not None or args.memory_scaling):
        print("mmdiag.bench: --repeat runs the timing phases only (not with --profile or --memory-scaling)",
              file=sys.stderr)
        return 2
    sizes_mode = args.scaling or args.treebank_memory
    if sizes_mode and (args.memory_scaling or args.repeat > 1 or args.profile is not None):
        print("mmdiag.bench: --scaling and --treebank-memory run on their own (not with --memory-scaling, --repeat "
              "or --profile)", file=sys.stderr)
        return 2
    model = args.model or (SCALING_MODEL if sizes_mode else BenchConfig.model)
    cfg = BenchConfig(model=model, samples=args.samples, batch_size=args.batch_size, device=args.device,
                      dtype=args.dtype, data=args.data, seed=args.seed, families=args.families,
                      select=args.select, floor_attentions=args.floor_attentions, floor_twice=args.floor_twice,
                      floor_sdpa=args.floor_sdpa,
                      show_pytest=args.show_pytest,
                      profile=args.profile, no_cache=args.no_cache, suite_args=tuple(args.suite_arg),
                      all_plugins=args.all_plugins)
    from mmdiag.errors import MMDiagError

    try:
        if sizes_mode:
            doc = {"model": cfg.model, "device": cfg.device, "batch_size": cfg.batch_size}
            if args.scaling:
                doc["scaling"] = suite_scaling(cfg, args.scaling_n)
                if not args.quiet:
                    print_table(f"mmdiag bench --scaling · {cfg.model} · fresh process per N", scaling_table(
                        doc["scaling"]))
            if args.treebank_memory:
                doc["treebank_memory"] = treebank_memory(cfg, args.treebank_n)
                if not args.quiet:
                    print_table(f"mmdiag bench --treebank-memory · {cfg.model} · probe family, synthetic treebank",
                                treebank_table(doc["treebank_memory"]))
        elif args.memory_scaling:
            scaling = memory_scaling(cfg, (cfg.families,) if cfg.families else SCALING_SETS)
            doc: dict[str, Any] = {"model": cfg.model, "n": cfg.samples, "factor": SCALING_FACTOR,
                                   "device": cfg.device, "batch_size": cfg.batch_size, "memory_scaling": scaling}
            if not args.quiet:
                print_table(f"mmdiag bench --memory-scaling · {cfg.model} · peak RSS per process",
                            scaling_rows(scaling))
        else:
            doc = repeated(cfg, args.repeat) if args.repeat > 1 and not args.suite_only else run(
                cfg, suite_only=args.suite_only)
            if not args.quiet:
                print_table(f"mmdiag bench · {cfg.model} · n={doc['n']}", render_rows(doc))
                if doc["suite_exit_code"] not in (0, 1):
                    print(f"mmdiag.bench: the suite did not run to the end (pytest exit code {doc['suite_exit_code']}"
                          f"{'; its output: ' + str(doc.get('suite_summary')) if doc.get('suite_summary') else ''})",
                          file=sys.stderr)
                if doc.get("suite_summary"):
                    print(f"suite: {doc['suite_summary']}")
                if cfg.profile is not None:
                    import pstats

                    print(f"cProfile of phase (b) in {cfg.profile} (timings above include its overhead):")
                    pstats.Stats(str(cfg.profile)).sort_stats("cumulative").print_stats(30)
    except MMDiagError as exc:
        print(f"mmdiag.bench: {exc}", file=sys.stderr)
        return 2
    failed = not (args.memory_scaling or sizes_mode) and doc.get("suite_exit_code") not in (0, 1)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
        if not args.quiet:
            print(f"mmdiag.bench: wrote {args.json}")
    return 1 if failed else 0
