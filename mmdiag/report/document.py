"""results.json of a run: the pinned keys of DESIGN.md §5 plus ``run`` (versions, timings) and ``checks``.

``checks`` carries each reported check's spec facts (title, direction, default
threshold, plots, meaning), so a report re-rendered from the file alone, also
for a user's own checks, knows what it is showing.
"""
from __future__ import annotations

import platform
import time
from typing import Any

from mmdiag.analyses.geometry import hidden_maps
from mmdiag.data.load import data_fingerprint
from mmdiag.models.base import optional
from mmdiag.schema import SCHEMA


def _model_block(session: Any) -> dict:
    adapter = session.adapter
    info = optional(adapter, "info")
    model = {"spec": session.config.model or getattr(info, "spec", None) or type(adapter).__name__,
             "family": getattr(adapter, "family", None),
             "n_params": getattr(info, "n_params", None),
             "fingerprint": getattr(info, "fingerprint", None)}
    if info is not None and info.extra:
        model.update(info.extra)
    if adapter is not None:  # a baseline refuses a run of another architecture by these
        model["layers"] = dict(adapter.layer_counts())
    return model


def _data_block(session: Any, acts: Any) -> dict:
    samples = session.samples
    data = {"spec": session.config.data, "n": len(samples) if samples is not None else 0,
            "fingerprint": data_fingerprint(samples) if samples else None}
    special = getattr(session.adapter, "noise_special_ids", None)
    if special is None and acts is not None:  # --mm-data=noise from the activation cache: no tokenising this run
        special = acts.special_ids
    if special is not None:  # the ids the noise control's (or --mm-data=noise's) token ids were wrapped with
        data["special_ids"] = {key: special.get(key) for key in ("bos", "eos", "pad")}
    if acts is not None:
        data["truncated_captions"] = acts.truncated_captions
        data["skipped_samples"] = len(acts.skipped_samples)
        if acts.skipped_samples:
            data["skipped"] = acts.skipped_samples[:50]
        explore = session.series.get("attention_image", {}).get("explore") if isinstance(
            session.series.get("attention_image"), dict) else None
        if explore and "explore_hidden" not in session.series and acts.pooled:
            try:
                hidden = hidden_maps(acts, every_layer=True)
                hidden["captions"] = [str(getattr(s, "caption", "") or "") for s in (samples or [])[:120]]
                session.series["explore_hidden"] = hidden
            except Exception as exc:  # the explorer's map is a nicety too
                session.series["explore_hidden"] = {"error": f"{type(exc).__name__}: {exc}"}
        if "hidden_2d" not in session.series and acts.pooled:
            try:
                session.series["hidden_2d"] = hidden_maps(acts)
            except Exception as exc:  # a map is a nicety: never lose the report for it
                session.series["hidden_2d"] = {"error": f"{type(exc).__name__}: {exc}"}
    return data


def _run_block(session: Any, acts: Any) -> dict:
    import torch
    import transformers

    import mmdiag

    cfg = session.config
    timings = dict(session.timings)
    timings["total_s"] = time.perf_counter() - session._t0
    timings["checks_s"] = {k: round(v, 4) for k, v in sorted(session.family_seconds.items())}
    batch = acts.batch_size if acts is not None and cfg.batch_size <= 0 else cfg.batch_size
    return {"mmdiag": mmdiag.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "seed": cfg.seed,
            "device": str(optional(session.adapter, "device") or cfg.device), "dtype": cfg.dtype,
            "batch_size": batch, "started": session.started, "timings": timings,
            "world_size": session.world.size}


def checks_block(session: Any) -> dict:
    """Spec facts of every check that has a result, by name."""
    names = dict.fromkeys(r.check for r in session.results)
    return {name: spec.to_json() for name in names if (spec := session.checks.get(name)) is not None}


def baseline_block(session: Any) -> dict | None:
    """The baseline this run was compared with: its file, model, data and date (the report names it)."""
    comparison = getattr(session, "comparison", None)
    source = getattr(comparison, "source", None)
    if source is None:
        return None
    return {"path": str(source.path), "model": source.model.get("spec"), "family": source.model.get("family"),
            "data": source.data.get("spec"), "started": source.run.get("started"),
            "mmdiag": source.run.get("mmdiag"), "compared": getattr(comparison, "matched", None)}


def build_document(session: Any) -> dict:
    """The results document of ``session`` (an :class:`mmdiag.session.MMSession`)."""
    acts = session._activations.get("model")
    data = _data_block(session, acts)
    doc = {"schema": SCHEMA, "model": _model_block(session), "data": data, "run": _run_block(session, acts),
           "results": [r.to_json() for r in session.results], "series": session.series,
           "checks": checks_block(session)}
    base = baseline_block(session)
    if base is not None:
        doc["baseline"] = base
    return doc
