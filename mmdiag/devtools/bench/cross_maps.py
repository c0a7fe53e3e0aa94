"""``python -m mmdiag.devtools.bench.cross_maps``: a cross stream's reduction, square layout against rectangles.

Times :meth:`~mmdiag.recording.attention.ShareAccumulator.update` on the square
``[queries | keys]`` layout (building it included, as the cross-attention
adapters did before) against
:meth:`~mmdiag.recording.attention.ShareAccumulator.update_cross` on the
``(B, H, Q, N)`` maps, at the shapes of published cross-attention models, and
checks that both give the same sums. Prints CPU seconds (docs/performance.md).
"""
from __future__ import annotations

import sys
import time

import torch

from mmdiag.models.attention_views import square_of
from mmdiag.recording.attention import ShareAccumulator

#: (name, batch, heads, queries, keys)
SHAPES = (("BLIP-2 Q-Former cross layer (ViT-g/14 at 224 px: 257 keys; 32 queries, 12 heads)", 32, 12, 32, 257),
          ("Llama 3.2 Vision cross layer (one 560 px tile: 1,601 keys; 32 text tokens, 32 heads)", 2, 32, 32, 1601))


def compare(batch: int, heads: int, queries: int, keys: int, seed: int = 0) -> dict:
    """CPU seconds and MB of both reductions of one random layer, and whether their sums agree."""
    torch.manual_seed(seed)
    a = torch.softmax(torch.randn(batch, heads, queries, keys), -1)
    gq = torch.ones(batch, queries, dtype=torch.long)
    gk = torch.full((batch, keys), 2, dtype=torch.long)
    gk[:, 0] = 0  # a CLS key
    start = time.process_time()
    rect = ShareAccumulator(1, heads)
    rect.update_cross(0, a, gq, gk)
    rect_s = time.process_time() - start
    start = time.process_time()
    square = ShareAccumulator(1, heads)
    square.update(0, square_of(a), torch.cat([gq, gk], 1))
    square_s = time.process_time() - start
    same = all(torch.allclose(getattr(rect, k), getattr(square, k), rtol=1e-6, atol=1e-9)
               for k in ("mass", "count", "n_queries", "mass_nosink", "entropy", "n_sinks"))
    return {"square_s": square_s, "rect_s": rect_s, "same": same,
            "square_mb": batch * heads * (queries + keys) ** 2 * 4 / 2 ** 20,
            "rect_mb": batch * heads * queries * keys * 4 / 2 ** 20}


def main() -> int:
    for name, *shape in SHAPES:
        r = compare(*shape)
        print(f"{name}, batch {shape[0]}: square {r['square_s']:.2f} s CPU ({r['square_mb']:.0f} MB of maps), "
              f"rectangles {r['rect_s']:.3f} s ({r['rect_mb']:.0f} MB); same sums: {r['same']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
