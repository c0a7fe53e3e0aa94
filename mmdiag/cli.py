"""The ``mmdiag`` console script: a thin wrapper around pytest.

``mmdiag MODEL [pytest args]`` runs the built-in checks on MODEL (same as
``pytest --mm-model=MODEL``); ``mmdiag report results.json [-o report.html]``
re-renders the HTML report from a results JSON.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

USAGE = """usage: mmdiag MODEL [pytest options]      run the built-in checks on MODEL (= pytest --mm-model=MODEL)
       mmdiag report RESULTS.json [-o OUT.html]  re-render the HTML report
       mmdiag report A.json B.json ... -o trend.html  each check across the runs (two runs: side by side)
       mmdiag --version

MODEL: random:PRESET, zoo:NAME, a save_pretrained directory or a Hugging Face hub id.
Example: mmdiag zoo:shapes-clip --mm-report-dir=reports
"""


def report_main(argv: Sequence[str]) -> int:
    from mmdiag.errors import MMDiagError
    from mmdiag.report.html import write_html
    from mmdiag.report.jsonio import read_json
    from mmdiag.report.trend import write_trend

    parser = argparse.ArgumentParser(prog="mmdiag report", description="render report.html from results.json; "
                                     "with several results files, a trend page of each check across the runs")
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="HTML file to write (default: report.html beside the JSON, or trend.html beside the "
                             "first of several)")
    args = parser.parse_args(list(argv))
    several = len(args.results) > 1
    target = args.output or args.results[0].with_name("trend.html" if several else "report.html")
    try:
        docs = [read_json(path) for path in args.results]
        out = write_trend(docs, args.results, target) if several else write_html(docs[0], target)
    except MMDiagError as exc:
        print(f"mmdiag report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the report cannot be written there (no such folder, a directory, read-only)
        print(f"mmdiag report: cannot write {target} ({exc.strerror or exc})", file=sys.stderr)
        return 2
    print(f"mmdiag: wrote {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``mmdiag MODEL [pytest options]`` is ``pytest --mm-model=MODEL [pytest options]`` in the current directory:
    the project's ini file, its ``[tool.mmdiag.thresholds]``, ``--lf`` and every pytest option apply."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from mmdiag import __version__

        print(f"mmdiag {__version__}")
        return 0
    if args[0] == "report":
        return report_main(args[1:])
    import pytest

    model, rest = args[0], args[1:]
    # no path of our own: pytest finds the rootdir and ini file from the current directory, and the plugin
    # collects the built-in checks because no test path was given (a path in ``rest`` selects those files)
    return int(pytest.main([f"--mm-model={model}", *rest]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
