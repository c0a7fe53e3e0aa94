"""Open the rendered report in headless Chromium: it loads offline, every plot is
in the DOM, nothing is logged to the console, and the screenshot is not blank."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdiag.report.html import write_html

SAMPLE = Path(__file__).with_name("sample_results.json")
PLOT_IDS = ("cone-layer", "embedding-2d", "gap-shift", "probe-layers", "probe-tree",
            "attention-share", "hidden-2d")
PASS_GREEN = (0x1A, 0x7F, 0x37)  # the CSS colour of the "pass" badges


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("install Debian's chromium package to run the browser test")
    doc = json.loads(SAMPLE.read_text(encoding="utf-8"))
    page = write_html(doc, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,2000", "--dump-dom",
           "--enable-logging=stderr", "--v=0", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout

    # the browser parsed the whole page: summary, table and every plot's svg
    assert '<section id="summary"' in dom and dom.rstrip().endswith("</html>")
    assert len(re.findall(r'<tr class="result ', dom)) == len(doc["results"])
    for plot_id in PLOT_IDS:
        start = dom.index(f'<figure id="plot-{plot_id}"')
        assert "<svg" in dom[start:dom.index("</figure>", start)], plot_id
    # no console messages (no scripts, nothing failed to load)
    assert ":CONSOLE" not in proc.stderr, proc.stderr[-2000:]

    # the screenshot shows a drawn page, with the CSS applied
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1200)
    assert img.std() > 5.0
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    assert (img == PASS_GREEN).all(axis=-1).sum() > 100
