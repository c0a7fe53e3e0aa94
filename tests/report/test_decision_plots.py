"""The plots that carry the decision: the gap map's axes, the shift grid's edge, per-check figures."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mmdiag.analyses.geometry import embedding_2d
from mmdiag.report.checkplots import check_figures
from mmdiag.report.figures.gap import at_grid_edge, embedding_plot, shift_plot


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), offset=st.floats(0.0, 3.0))
def test_gap_map_puts_the_gap_on_x(seed, offset):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(40, 16, generator=g, dtype=torch.float64)
    txt = torch.randn(30, 16, generator=g, dtype=torch.float64)
    img[:, 0] += offset
    m = embedding_2d(img, txt)
    a = torch.nn.functional.normalize(img, dim=1).numpy()
    b = torch.nn.functional.normalize(txt, dim=1).numpy()
    gap = float(np.linalg.norm(a.mean(0) - b.mean(0)))
    ci, ct = np.array(m["centroids"]["image"]), np.array(m["centroids"]["text"])
    assert ci[0] - ct[0] == pytest.approx(gap, rel=1e-9, abs=1e-12)  # the centroids are ‖Δ‖ apart along x
    assert ci[1] == pytest.approx(ct[1], abs=1e-9)  # and level on y: all of Δ is on x
    assert m["gap_norm"] == pytest.approx(gap)
    assert "gap direction" in m["axes"]["x"] and "residual" in m["axes"]["y"]


def test_gap_map_names_its_axes():
    g = torch.Generator().manual_seed(0)
    m = embedding_2d(torch.randn(20, 8, generator=g) + 1, torch.randn(20, 8, generator=g))
    svg = embedding_plot(m)
    assert "gap direction" in svg and "top principal component of the residual" in svg


@pytest.mark.parametrize("loss, edge", [([3, 2, 1, 0.5, 0.2], True), ([0.2, 0.5, 1, 2, 3], True),
                                        ([3, 1, 0.5, 1, 3], False)])
def test_shift_optimum_at_the_grid_edge_is_flagged(loss, edge):
    lam = np.linspace(-1, 1, 5)
    shift = {"lambda": lam.tolist(), "loss": loss, "optimum": float(lam[int(np.argmin(loss))])}
    assert at_grid_edge(shift, lam, np.array(loss, float), shift["optimum"]) is edge
    svg = shift_plot(shift)
    assert ("the optimum lies beyond it" in svg) is edge
    assert at_grid_edge({**shift, "at_grid_edge": not edge}, lam, np.array(loss, float), shift["optimum"]) is (not edge)


def _res(layer, value, modality="image", threshold=None, base=None):
    r = {"check": "cone.layer", "params": {"modality": modality, "layer": layer}, "value": value,
         "status": "pass", "ci": {"low": value - 0.05, "high": value + 0.05}, "threshold": threshold}
    if base is not None:
        r["baseline"] = {"value": base}
    return r


def test_per_layer_check_figure_has_threshold_band_baseline_and_integer_ticks():
    thr = {"op": "<", "value": 50, "level": "warn"}
    results = [_res(k, 10.0 + 10 * k, m, thr, base=12.0 + 10 * k) for m in ("image", "text") for k in range(4)]
    figs = check_figures(results, {}, "baseline zoo:old")
    (fig,) = figs["cone"]
    svg = str(fig["svg"])
    assert "threshold &lt; 50 (warn)" in svg and "image 95% interval" in svg
    assert "image: baseline zoo:old" in svg and "layer (0 = embedding output)" in svg
    ticks = [t for t in ("0.5", "1.5", "2.5") if f">{t}<" in svg]
    assert not ticks  # layers tick at integers only
    assert "squares = baseline zoo:old" in fig["caption"]


def test_single_ungated_values_get_no_figure():
    r = {"check": "gap.rmg", "params": {}, "value": 0.3, "status": "info"}
    assert check_figures([r], {}, "baseline") == {}
