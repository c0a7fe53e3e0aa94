"""``python -m mmdiag.devtools.bench.probe_memory``: peak RSS of the text probes as a treebank grows, model aside.

For each N of ``--sentences`` a fresh process builds N synthetic sentences
(:mod:`.treebank`), random word states of a model shape (``--width``,
``--layers``; default MiniLM-L6's 384 x 7), written batch by batch as the
recorder does, and runs :func:`mmdiag.analyses.probes.probe_scores` (depth and
distance probes of every layer, ``--epochs`` epochs of the fast regimen,
scored on the test split). ``--layout disk`` keeps the states in
:class:`~mmdiag.recording.store.LayerFiles` (what a run does);
``--layout memory`` concatenates them in memory as the recorder did before,
for comparison. Prints one line per N: peak RSS (``ru_maxrss``) and seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from typing import Sequence

import numpy as np
import torch

from mmdiag.devtools.bench.treebank import synthetic_conllu


def measure(n: int, width: int, layers: int, epochs: int, layout: str, seed: int = 0) -> dict:
    """One measurement in this process (run it in a fresh one: ``ru_maxrss`` is a lifetime peak)."""
    from mmdiag.analyses.probes import ProbeSet, probe_scores
    from mmdiag.data.conllu import parse_conllu
    from mmdiag.probing import regimens
    from mmdiag.probing.data import ProbeData
    from mmdiag.probing.states import StateView
    from mmdiag.recording.store import LayerFiles

    regimens.REGIMENS["fast"] = dataclasses.replace(regimens.FAST_REGIMEN, max_epochs=epochs)
    trees = parse_conllu(synthetic_conllu(n, seed))
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    files, parts = LayerFiles(layers), [[] for _ in range(layers)]
    for first in range(0, n, 256):
        words = sum(len(t.heads) for t in trees[first:first + 256])
        batch = [torch.randn(words, width, generator=gen) for _ in range(layers)]
        if layout == "disk":
            files.append(batch)
        else:
            for k, b in enumerate(batch):
                parts[k].append(b)
    if layout == "disk":
        states = StateView(files.close(), np.arange(files.n_rows))
    else:
        full = [torch.cat(p) for p in parts]
        del parts
        idx = torch.arange(full[0].shape[0])
        states = torch.stack([layer.index_select(0, idx) for layer in full])  # as text_probe_set did
    pset = ProbeSet(ProbeData.from_trees(states, trees), [t.words for t in trees])
    scores = probe_scores(pset, seed)
    return {"sentences": n, "words": int(sum(len(t.heads) for t in trees)), "layout": layout, "width": width,
            "layers": layers, "epochs": epochs, "seconds": time.perf_counter() - start,
            "fit_s": scores.fit_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main(argv: Sequence[str] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmdiag.devtools.bench.probe_memory", description=__doc__)
    p.add_argument("--sentences", default="4000,40000", help="comma list of treebank sizes (default %(default)s)")
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--epochs", type=int, default=1, help="fast-regimen epochs (default 1: memory, not quality)")
    p.add_argument("--layout", choices=("disk", "memory"), default="disk")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child, args.width, args.layers, args.epochs, args.layout)))
        return 0
    for n in (int(s) for s in args.sentences.split(",")):
        cmd = [sys.executable, "-m", "mmdiag.devtools.bench.probe_memory", "--child", str(n), "--width",
               str(args.width), "--layers", str(args.layers), "--epochs", str(args.epochs), "--layout", args.layout]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"N={n}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{r['layout']:6s} N={r['sentences']:>6} words={r['words']:>7} {r['layers']}x{r['width']}: "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f} s (fit {r['fit_s']:.1f} s, "
              f"{r['epochs']} epoch)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
