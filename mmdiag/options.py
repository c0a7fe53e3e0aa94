"""The ``mmdiag`` option group (DESIGN.md §3) and its validated form, :class:`RunConfig`.

Every ``--mm-*`` option has an ini twin ``mm_*``; the command line wins.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mmdiag.errors import SpecError
from mmdiag.thresholds import Threshold, parse_override, parse_table

#: most examples --mm-explore accepts (the report grows by about 0.5 MB per example for a 12-layer model)
EXPLORE_MAX = 16
#: seeds must fit numpy's legacy and torch's generators: 0 <= seed < 2**32
SEED_LIMIT = 2 ** 32

#: (option, ini type, default, help); the ini name is the option's with ``mm_`` and underscores.
OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--mm-model", "string", None, "model to diagnose: HF hub id or local dir, random:PRESET, zoo:NAME"),
    ("--mm-data", "string", "synthetic", "data: synthetic (default), noise, captions .jsonl or dir, COCO captions .json, "
                                                "Flickr30k Entities root, CSV/TSV, parquet, a datasets save_to_disk "
                                                "dir, hf:NAME[:SPLIT] (local cache), webdataset .tar shards"),
    ("--mm-data-columns", "string", None, "image and caption columns of a table: image=COL,caption=COL (default: "
                                          "found by type and name)"),
    ("--mm-treebank", "string", None, "CoNLL-U treebank for the text structural probes"),
    ("--mm-treebank-sentences", "string", None, "use only the first N sentences of --mm-treebank (default: all; "
                                                "--mm-samples does not cap the treebank)"),
    ("--mm-samples", "string", "128", "number of samples (default 128)"),
    ("--mm-batch-size", "string", "32", "batch size of the forward pass (default 32), or auto: start at 256 on "
                                        "CUDA (32 on CPU) and halve on out-of-memory"),
    ("--mm-device-map", "string", None, "auto: spread a large hub/local model over the GPUs with accelerate "
                                        "(device_map='auto'); --mm-device then names the input device"),
    ("--mm-seed", "string", "0", "seed for data, random weights and probes (default 0)"),
    ("--mm-device", "string", "auto", "auto, cpu, cuda or cuda:N"),
    ("--mm-dtype", "string", "fp32", "fp32 or bf16"),
    ("--mm-json", "string", None, "write results.json here"),
    ("--mm-html", "string", None, "write the HTML report here"),
    ("--mm-report-dir", "string", None, "write DIR/results.json and DIR/report.html (default for a diagnostic run: "
                                        "reports/ under the rootdir)"),
    ("--mm-markdown", "string", None, "write the gate's verdict as Markdown here (default: append to "
                                      "$GITHUB_STEP_SUMMARY when that is set)"),
    ("--mm-save-baseline", "string", None, "save this run's results as a baseline JSON"),
    ("--mm-baseline", "string", None, "compare against a baseline JSON from an earlier run"),
    ("--mm-bootstrap", "string", "200", "bootstrap resamples behind each value's interval and standard error "
                                        "(default 200; 0 = off)"),
    ("--mm-gate", "string", "ci", "judge thresholds by the interval (ci, default: fail only when the whole 95% "
                                  "interval breaches, warn 'inconclusive' when it straddles) or by the value alone"),
    ("--mm-controls", "string", "", "controls to run beside the model: random-init, noise (comma-separated)"),
    ("--mm-probe-regimen", "string", "fast", "structural-probe training: fast (default) or paper "
                                              "(Hewitt & Manning: batch 20, Adam 1e-3, up to 40 epochs)"),
    ("--mm-probe-rank", "string", "0", "rank of the probe matrix B (default 0: min(hidden size, 128) for the fast "
                                       "regimen, the hidden size for paper)"),
    ("--mm-probe-punctuation", "string", "ptb", "punctuation left out of root accuracy, UUAS and the scene trees' "
                                                "text tree: ptb (default: Hewitt's seven PTB XPOS tags, as his and "
                                                "Milewski's code) or upos (UPOS PUNCT); see docs/probes.md"),
    ("--mm-scene-regions", "string", "boxes", "Flickr30k scene-tree regions: boxes (default, Milewski's: every box "
                                              "its own region on its entity's node) or union (one union box per "
                                              "entity); see docs/probes.md"),
    ("--mm-cache-dir", "string", ".mmdiag_cache", "activation cache directory (default .mmdiag_cache in the "
                                                   "rootdir); re-runs with other thresholds skip the model"),
    ("--mm-region-features", "string", None, "precomputed region features (.npz or .safetensors, one (1+P, D) "
                                              "array per sample uid) for LXMERT/VisualBERT"),
    ("--mm-attention-head", "string", None, "also keep this head's attention-over-image maps in the report "
                                             "(default: only the mean over heads)"),
    ("--mm-explore", "string", "2", "examples whose attention (every layer and head) and hidden states the report's "
                                    "explorer shows (default 2; 0 = no explorer; at most 16)"),
    ("--mm-text-reference", "string", None, "text-only encoder (hub id, dir or random:PRESET) for probe.text_retention"),
    ("--mm-table", "string", "compact", "terminal table: compact (default: a per-layer check as one row per check "
                                        "and modality, min..max over the layers) or full (one row per layer)"),
    ("--mm-shift-batch", "string", "50", "pairs per batch of gap.shift_optimum's contrastive loss, averaged over "
                                         "batches drawn by --mm-seed (default 50, as Liang et al.; 0 = all pairs in "
                                         "one batch)"),
]
REPEATABLE: list[tuple[str, str]] = [
    ("--mm-threshold", "override a threshold: CHECK[PARAMS]=OP:VALUE[:LEVEL], e.g. gap.norm=<=:1.0 (repeatable)"),
    ("--mm-compare-fail", "fail checks that regressed vs the baseline by more than this: CHECK:5%, CHECK:0.02 "
                          "or *:5% (repeatable)"),
]
CONTROLS = ("random-init", "noise")


def ini_name(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def add_options(parser: Any) -> None:
    """Register the ``mmdiag`` option group and the ini twins on a pytest parser."""
    group = parser.getgroup("mmdiag", "mmdiag: interpretability checks of vision-language models")
    for option, kind, default, help_text in OPTIONS:
        # argparse %-formats option help (a bare % crashed pytest --help); ini help is printed as it is
        group.addoption(option, action="store", default=None, dest=ini_name(option), help=help_text.replace("%", "%%"))
        parser.addini(ini_name(option), help_text, type=kind, default=default)
    for option, help_text in REPEATABLE:
        group.addoption(option, action="append", default=[], dest=ini_name(option), help=help_text.replace("%", "%%"))
        parser.addini(ini_name(option), help_text, type="linelist", default=[])
    group.addoption("--mm-baseline-any", action="store_true", default=False, dest="mm_baseline_any",
                    help="compare against a baseline from another model family, architecture or data set")
    parser.addini("mm_baseline_any", "allow a baseline from another model or data set", type="bool", default=False)
    group.addoption("--mm-no-cache", action="store_true", default=False, dest="mm_no_cache",
                    help="neither read nor write the activation cache")
    parser.addini("mm_no_cache", "disable the activation cache", type="bool", default=False)
    group.addoption("--mm-skip-bad-samples", action="store_true", default=False, dest="mm_skip_bad_samples",
                    help="skip (and count) samples whose image is missing or unreadable instead of failing")
    parser.addini("mm_skip_bad_samples", "skip unreadable samples", type="bool", default=False)
    group.addoption("--mm-allow-outside-data", action="store_true", default=False, dest="mm_allow_outside_data",
                    help="read images of a captions file that resolve outside its data directory (../x.png, an "
                         "absolute path, a symlink pointing out); refused by default")
    parser.addini("mm_allow_outside_data", "read images outside the data directory", type="bool", default=False)
    group.addoption("--mm-checks", action="store_true", default=False, dest="mm_checks",
                    help="collect the built-in checks (implied by --mm-model); use with an mm_model fixture override")
    parser.addini("mm_checks", "collect the built-in checks", type="bool", default=False)
    parser.addini("mm_thresholds", "threshold overrides, one CHECK[PARAMS]=OP:VALUE[:LEVEL] per line",
                  type="linelist", default=[])


@dataclass
class RunConfig:
    """Validated run settings; built from pytest's config by :func:`from_pytest`."""

    model: Optional[str] = None
    data: str = "synthetic"
    treebank: Optional[Path] = None
    #: --mm-treebank-sentences: the first N treebank sentences only (None: all of them)
    treebank_sentences: Optional[int] = None
    samples: int = 128
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    dtype: str = "fp32"
    json: Optional[Path] = None
    html: Optional[Path] = None
    #: the Markdown verdict, and whether it is appended (GitHub's step summary collects several steps)
    markdown: Optional[Path] = None
    markdown_append: bool = False
    baseline_any: bool = False
    bootstrap: int = 200
    gate: str = "ci"
    save_baseline: Optional[Path] = None
    baseline: Optional[Path] = None
    compare_fail: list[str] = field(default_factory=list)
    compare_rules: list = field(default_factory=list)
    controls: tuple[str, ...] = ()
    threshold_layers: list[dict[str, Threshold]] = field(default_factory=list)
    collect_checks: bool = False
    skip_bad_samples: bool = False
    allow_outside_data: bool = False
    #: --mm-data-columns (a mmdiag.data.columns.ColumnSpec; None: find the columns)
    data_columns: Any = None
    cache_dir: Optional[Path] = None
    region_features: Optional[Path] = None
    attention_head: Optional[int] = None
    explore: int = 2
    device_map: Optional[str] = None
    probe_regimen: str = "fast"
    probe_rank: Optional[int] = None
    probe_punctuation: str = "ptb"
    scene_regions: str = "boxes"
    text_reference: Optional[str] = None
    #: the terminal table's layout: compact (per-layer checks collapsed) or full
    table: str = "compact"
    shift_batch: int = 50


def _get(config: Any, name: str) -> Any:
    value = config.getoption(name, default=None)
    if value in (None, [], ""):
        value = config.getini(name)
    return value


#: most --mm-bootstrap resamples: beyond this the interval does not move, the run only takes longer (a value such as
#: 99999999999999999999999 used to be accepted and ran the first bootstrap forever)
MAX_BOOTSTRAP = 100_000


def _int(config: Any, name: str, minimum: int) -> int:
    raw = _get(config, name)
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise SpecError(f"--{name.replace('_', '-')}={raw!r} is not an integer") from None
    if value < minimum:
        raise SpecError(f"--{name.replace('_', '-')}={value} must be at least {minimum}")
    return value


def _input_file(option: str, raw: str, path: Path, expected: str) -> None:
    """Refuse an input path that is missing or not a regular file (a FIFO would hang the run); stat only."""
    from mmdiag.data.files import regular_file_problem

    problem = regular_file_problem(path)
    if problem is not None:
        raise SpecError(f"{option}={raw!r}: {problem} ({expected})")


def _pyproject_thresholds(rootpath: Path) -> dict[str, Threshold]:
    path = rootpath / "pyproject.toml"
    if not path.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot read [tool.mmdiag.thresholds] ({exc})") from None
    table = doc.get("tool", {}).get("mmdiag", {}).get("thresholds", {})
    if not isinstance(table, dict):
        raise SpecError(f"{path}: [tool.mmdiag.thresholds] must be a table of \"check\" = \"OP:VALUE\"")
    return parse_table(table, f"{path} [tool.mmdiag.thresholds]")


def _validate_data_spec(spec: str, columns: Optional[str] = None) -> None:
    """Refuse a ``--mm-data`` spec that names nothing readable (stat only: no file is opened), and
    ``--mm-data-columns`` for data that has no columns."""
    from mmdiag.data.formats import COLUMN_KINDS, data_kind

    kind = data_kind(spec).kind
    if columns and str(columns).strip() and kind not in COLUMN_KINDS:
        raise SpecError(f"--mm-data-columns={columns!r}: --mm-data={spec!r} has no columns to choose (it applies to "
                        "CSV/TSV tables, parquet files, save_to_disk directories and hf:NAME datasets)")


def from_pytest(config: Any) -> RunConfig:
    """Read and validate every ``--mm-*`` option (ini as fallback); raise SpecError on bad values."""
    cfg = RunConfig()
    for arg in getattr(getattr(config, "invocation_params", None), "args", ()) or ():
        # argparse reads a value such as "--" as "no value" and the option would silently fall back to its default
        if not (isinstance(arg, str) and arg.startswith("--mm-") and "=" in arg):
            continue
        option, value = arg.split("=", 1)
        if value.startswith("-") and config.getoption(ini_name(option), default=None) in (None, [], ""):
            raise SpecError(f"{option}={value!r}: a value that starts with '-' reads as an option; "
                            f"give {option} a value (see pytest --help, section mmdiag)")
    if config.getoption("mm_model", default=None) == "":
        raise SpecError("--mm-model is empty (was it given from an unset variable, e.g. --mm-model=$MODEL?); "
                        "accepted: random:PRESET, zoo:NAME, a save_pretrained directory or a hub id ORG/NAME")
    cfg.model = _get(config, "mm_model") or None
    cfg.data = _get(config, "mm_data") or "synthetic"
    _validate_data_spec(cfg.data, _get(config, "mm_data_columns"))
    from mmdiag.data.columns import parse_columns

    cfg.data_columns = parse_columns(_get(config, "mm_data_columns"))
    treebank = _get(config, "mm_treebank")
    if treebank:
        cfg.treebank = Path(treebank).expanduser()
        _input_file("--mm-treebank", treebank, cfg.treebank, "expected a CoNLL-U .conllu file")
    if _get(config, "mm_treebank_sentences") not in (None, ""):
        cfg.treebank_sentences = _int(config, "mm_treebank_sentences", 1)
        if cfg.treebank is None:
            raise SpecError("--mm-treebank-sentences caps the --mm-treebank sentences; give --mm-treebank=FILE.conllu "
                            "too (or drop --mm-treebank-sentences)")
    cfg.samples = _int(config, "mm_samples", 2)
    from mmdiag.data.load import generated_samples_problem

    if generated_samples_problem(cfg.data, cfg.samples):
        raise SpecError(generated_samples_problem(cfg.data, cfg.samples))
    if str(_get(config, "mm_batch_size")).strip() == "auto":
        cfg.batch_size = 0  # record() starts large and halves on out-of-memory
    else:
        cfg.batch_size = _int(config, "mm_batch_size", 1)
    cfg.seed = _int(config, "mm_seed", 0)
    if cfg.seed >= SEED_LIMIT:
        raise SpecError(f"--mm-seed={cfg.seed} must be below 2**32 = {SEED_LIMIT} (the range of numpy's and torch's "
                        "random generators)")
    cfg.device = str(_get(config, "mm_device") or "auto")
    cfg.dtype = str(_get(config, "mm_dtype") or "fp32")
    cfg.device_map = _get(config, "mm_device_map") or None
    if cfg.device_map not in (None, "auto"):
        raise SpecError(f"--mm-device-map={cfg.device_map!r}: accepted: auto")
    report_dir = _get(config, "mm_report_dir")
    json_path, html_path = _get(config, "mm_json"), _get(config, "mm_html")
    if report_dir:
        cfg.json = Path(report_dir) / "results.json"
        cfg.html = Path(report_dir) / "report.html"
    if json_path:
        cfg.json = Path(json_path)
    if html_path:
        cfg.html = Path(html_path)
    markdown = _get(config, "mm_markdown")
    if markdown:
        cfg.markdown = Path(markdown)
    elif os.environ.get("GITHUB_STEP_SUMMARY"):
        cfg.markdown, cfg.markdown_append = Path(os.environ["GITHUB_STEP_SUMMARY"]), True
    for name in ("save_baseline", "baseline"):
        value = _get(config, f"mm_{name}")
        setattr(cfg, name, Path(value) if value else None)
    if cfg.baseline is not None:
        _input_file("--mm-baseline", str(cfg.baseline), cfg.baseline,
                    "give a results JSON written by --mm-save-baseline or --mm-json")
    cfg.bootstrap = _int(config, "mm_bootstrap", 0)
    if cfg.bootstrap > MAX_BOOTSTRAP:
        raise SpecError(f"--mm-bootstrap={cfg.bootstrap} resamples: at most {MAX_BOOTSTRAP:,} (a 95% interval's "
                        "end points move by under 1% of its width from one seed to another at 10,000; more only runs "
                        "for hours)")
    cfg.gate = str(_get(config, "mm_gate") or "ci")
    if cfg.gate not in ("ci", "value"):
        raise SpecError(f"--mm-gate={cfg.gate!r}: accepted: ci (judge the interval), value (judge the value alone)")
    cfg.baseline_any = bool(config.getoption("mm_baseline_any")) or bool(config.getini("mm_baseline_any"))
    cfg.compare_fail = list(_get(config, "mm_compare_fail") or [])
    from mmdiag.report.baseline import parse_rule

    cfg.compare_rules = [parse_rule(rule) for rule in cfg.compare_fail]
    if cfg.compare_rules and cfg.baseline is None:
        raise SpecError("--mm-compare-fail needs --mm-baseline=PATH (the previous release's results JSON)")
    controls = [c.strip() for c in str(_get(config, "mm_controls") or "").split(",") if c.strip()]
    for control in controls:
        if control not in CONTROLS:
            raise SpecError(f"--mm-controls: unknown control {control!r}; accepted: {', '.join(CONTROLS)}")
    cfg.controls = tuple(controls)
    cfg.skip_bad_samples = bool(config.getoption("mm_skip_bad_samples")) or bool(config.getini("mm_skip_bad_samples"))
    cfg.allow_outside_data = (bool(config.getoption("mm_allow_outside_data"))
                              or bool(config.getini("mm_allow_outside_data")))
    if not (config.getoption("mm_no_cache") or config.getini("mm_no_cache")):
        raw_cache = str(_get(config, "mm_cache_dir") or ".mmdiag_cache")
        cache = Path(raw_cache).expanduser()
        cfg.cache_dir = cache if cache.is_absolute() else Path(config.rootpath) / cache
        if cfg.cache_dir.exists() and not cfg.cache_dir.is_dir():
            raise SpecError(f"--mm-cache-dir={raw_cache!r}: {cfg.cache_dir} is a file, not a directory (give another "
                            "--mm-cache-dir or --mm-no-cache)")
    if _get(config, "mm_attention_head") not in (None, ""):
        cfg.attention_head = _int(config, "mm_attention_head", 0)
    cfg.explore = _int(config, "mm_explore", 0) if _get(config, "mm_explore") not in (None, "") else 2
    if cfg.explore > EXPLORE_MAX:
        raise SpecError(f"--mm-explore={cfg.explore}: at most {EXPLORE_MAX} examples (each adds every layer's and "
                        "head's attention to the report)")
    region_features = _get(config, "mm_region_features")
    if region_features:
        cfg.region_features = Path(region_features).expanduser()
        _input_file("--mm-region-features", region_features, cfg.region_features,
                    "expected .npz or .safetensors with one (1+P, D) array per sample uid; see docs/region-models.md")
    cfg.probe_regimen = str(_get(config, "mm_probe_regimen") or "fast")
    if cfg.probe_regimen not in ("fast", "paper"):
        raise SpecError(f"--mm-probe-regimen={cfg.probe_regimen!r}: accepted: fast, paper")
    cfg.probe_rank = _int(config, "mm_probe_rank", 0) or None
    cfg.probe_punctuation = str(_get(config, "mm_probe_punctuation") or "ptb")
    if cfg.probe_punctuation not in ("ptb", "upos"):
        raise SpecError(f"--mm-probe-punctuation={cfg.probe_punctuation!r}: accepted: ptb, upos")
    cfg.scene_regions = str(_get(config, "mm_scene_regions") or "boxes")
    if cfg.scene_regions not in ("boxes", "union"):
        raise SpecError(f"--mm-scene-regions={cfg.scene_regions!r}: accepted: boxes, union")
    cfg.text_reference = _get(config, "mm_text_reference") or None
    cfg.table = str(_get(config, "mm_table") or "compact").strip()
    if cfg.table not in ("compact", "full"):
        raise SpecError(f"--mm-table={cfg.table!r}: accepted: compact (per-layer checks as one row per check and "
                        "modality), full (one row per layer)")
    cfg.shift_batch = _int(config, "mm_shift_batch", 0)
    if cfg.shift_batch == 1:
        raise SpecError("--mm-shift-batch=1: a batch of one pair has no negatives (its contrastive loss is 0); "
                        "accepted: 0 (all pairs in one batch) or at least 2 (default 50, as Liang et al.)")
    cfg.threshold_layers = [
        _pyproject_thresholds(Path(config.rootpath)),
        dict(parse_override(line, "mm_thresholds (ini)")
             for line in [*config.getini("mm_thresholds"), *config.getini("mm_threshold")]),
        dict(parse_override(line) for line in (config.getoption("mm_threshold") or [])),
    ]
    cli_model = config.getoption("mm_model", default=None)
    cfg.collect_checks = bool(cli_model) or bool(config.getoption("mm_checks")) or bool(config.getini("mm_checks"))
    if cfg.collect_checks and not (report_dir or json_path or html_path):
        # a diagnostic run always leaves its reports: the project's top-level reports/ folder
        cfg.json = Path(config.rootpath) / "reports" / "results.json"
        cfg.html = Path(config.rootpath) / "reports" / "report.html"
        _check_report_dir("the default report directory (give --mm-report-dir)", cfg.json.parent)
    elif report_dir:
        _check_report_dir(f"--mm-report-dir={report_dir!r}", Path(report_dir))
    _check_outputs(cfg, report_dir, json_path, html_path)
    return cfg


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (what creating ``path`` needs to be writable)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _creatable_problem(path: Path) -> Optional[str]:
    """Why a file or directory cannot be created at ``path`` (None when it can)."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        return f"cannot be created: {base} is not a directory"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"cannot be created: {base} is not writable"
    return None


def _check_report_dir(what: str, path: Path) -> None:
    """A report directory is a writable directory, or can be created."""
    if os.path.lexists(path):
        if not path.is_dir():
            raise SpecError(f"{what}: {path} is a file, not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise SpecError(f"{what}: the directory {path} is not writable")
        return
    problem = _creatable_problem(path)
    if problem:
        raise SpecError(f"{what}: {path} {problem}")


def _check_output_file(what: str, path: Path) -> None:
    """An output file is a regular file in a writable directory, or can be created (never a FIFO or device)."""
    if os.path.exists(path):
        from mmdiag.data.files import regular_file_problem

        problem = regular_file_problem(path)
        if problem is not None:
            raise SpecError(f"{what}: {path} {problem}")
        if not os.access(path.parent if str(path.parent) else Path("."), os.W_OK | os.X_OK):
            raise SpecError(f"{what}: {path} cannot be replaced: its directory is not writable")
        return
    problem = _creatable_problem(path)
    if problem:
        raise SpecError(f"{what}: {path} {problem}")


#: what each output (and the baseline input) holds: two options may name one file only for the same content
_ROLES = {"json": "results JSON", "save_baseline": "results JSON", "baseline": "results JSON",
          "html": "HTML report", "markdown": "Markdown verdict"}


def _check_outputs(cfg: RunConfig, report_dir: Any, json_path: Any, html_path: Any) -> None:
    """Each output can be written, and no two options name one file for different contents."""
    names = {"json": f"--mm-json={json_path!r}" if json_path else f"--mm-report-dir={report_dir!r} (results.json)",
             "html": f"--mm-html={html_path!r}" if html_path else f"--mm-report-dir={report_dir!r} (report.html)",
             "save_baseline": f"--mm-save-baseline={str(cfg.save_baseline)!r}",
             "baseline": f"--mm-baseline={str(cfg.baseline)!r}", "markdown": f"--mm-markdown={str(cfg.markdown)!r}"}
    if not (json_path or html_path or report_dir):
        names["json"] = names["html"] = "the default report directory"
    seen: dict[str, str] = {}
    for key in ("json", "html", "save_baseline", "markdown", "baseline"):
        path = getattr(cfg, key)
        if path is None or (key == "markdown" and cfg.markdown_append):
            continue
        if key != "baseline":
            _check_output_file(names[key], Path(path))
        real = os.path.realpath(path)
        other = seen.get(real)
        if other is not None and _ROLES[other] != _ROLES[key]:
            raise SpecError(f"{names[other]} and {names[key]} name the same file {path}: the {_ROLES[other]} and the "
                            f"{_ROLES[key]} would overwrite each other; give them different paths")
        seen.setdefault(real, key)
