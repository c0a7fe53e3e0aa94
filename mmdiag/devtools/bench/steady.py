"""``python -m mmdiag.devtools.bench.steady --model SPEC``: the recorded forward against the bare one, warm.

``python -m mmdiag.bench`` times the suite's recorded forward on a freshly
loaded model (its first batch cold) and the floor after a warm-up batch, in two
phases minutes apart; at small N on a loaded machine that difference and the
run's one-off costs (example maps, thumbnails) move the ratio more than the
reductions do. This times, in one process on one adapter, the floor (``forward``
on prepared batches, hidden states only) and then :func:`mmdiag.record.record`
with what a full run records (words, regions, attentions, example maps), each
after a warm-up, ``--repeat`` times alternately, in CPU seconds (``--threads``:
torch threads, default 1, so that CPU seconds do not count spinning threads of
an oversubscribed machine). Prints each pair and the median ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Optional, Sequence


def measure(spec: str, n: int, batch_size: int, repeat: int, seed: int = 0) -> dict:
    """Floor and recorded-forward (wall, CPU) seconds, ``repeat`` pairs, and their median ratios."""
    from mmdiag import heap
    from mmdiag.analyses.attention_maps import ExampleMaps
    from mmdiag.devtools.bench.run import cpu_seconds, load_inputs, prepare_batches, time_forward
    from mmdiag.models.load import load_adapter
    from mmdiag.record import record

    heap.tune_allocator()
    adapter = load_adapter(spec, "cpu", "fp32", seed)
    samples = load_inputs(adapter, "synthetic", n, seed)
    batches = prepare_batches(adapter, samples, batch_size)
    record(adapter, samples[:batch_size], batch_size, words=True, regions=True, attentions=True)  # warm-up
    pairs = []
    for _ in range(repeat):
        adapter.output_attentions = False
        floor_s, floor_cpu = time_forward(adapter, batches)
        examples = ExampleMaps.for_adapter(adapter, head=None, explore=2)
        cpu0, start = cpu_seconds(), time.perf_counter()
        record(adapter, samples, batch_size, words=True, regions=True, attentions=True, examples=examples)
        pairs.append({"floor_s": floor_s, "floor_cpu_s": floor_cpu, "recorded_s": time.perf_counter() - start,
                      "recorded_cpu_s": cpu_seconds() - cpu0})
    ratio = statistics.median(p["recorded_s"] / p["floor_s"] for p in pairs)
    cpu_ratio = statistics.median(p["recorded_cpu_s"] / p["floor_cpu_s"] for p in pairs)
    return {"model": spec, "n": len(samples), "batch_size": batch_size, "pairs": pairs, "ratio": ratio,
            "cpu_ratio": cpu_ratio}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmdiag.devtools.bench.steady", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("-n", "--samples", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if min(args.samples, args.batch_size, args.repeat, args.threads) < 1:
        p.error("-n, --batch-size, --repeat and --threads must be >= 1")
    import torch

    torch.set_num_threads(args.threads)
    r = measure(args.model, args.samples, args.batch_size, args.repeat, args.seed)
    for k, pair in enumerate(r["pairs"], 1):
        print(f"run {k}: floor {pair['floor_s']:.2f} s ({pair['floor_cpu_s']:.2f} CPU s), recorded "
              f"{pair['recorded_s']:.2f} s ({pair['recorded_cpu_s']:.2f} CPU s)")
    print(f"{r['model']} n={r['n']} batch {r['batch_size']}: recorded / floor {r['ratio']:.2f}x wall, "
          f"{r['cpu_ratio']:.2f}x CPU (medians of {len(r['pairs'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
