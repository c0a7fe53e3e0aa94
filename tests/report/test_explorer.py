"""The explorer: its reductions (closed form), its JSON block (safe), and in headless Chromium that a click
on a word, then on a cell of the block-by-head map, changes what is shown."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mmdiag.recording.explore import display_tokens, quantise, reduce_attention
from mmdiag.report.explorer import explorer_context
from mmdiag.report.html import render_html, write_html
from mmdiag.tokens import GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def test_display_tokens_merge_words_pool_patches_and_keep_specials():
    # [CLS] a do##g [SEP] + a 4x4 patch grid, pad
    groups = torch.tensor([GROUP_SPECIAL, GROUP_TEXT, GROUP_TEXT, GROUP_TEXT, GROUP_SPECIAL] + [GROUP_IMAGE] * 16
                          + [GROUP_PAD])
    wids = torch.tensor([-1, 0, 1, 1, -1] + [-1] * 17)
    labels, kinds, assign, grid = display_tokens(groups, wids, ["a", "dog"], (4, 4))
    assert labels[:4] == ["[special 0]", "[special 4]", "a", "dog"] and kinds.count("patch") == 16
    assert assign[2] == assign[3] == 3 and assign[-1] == -1 and grid == [4, 4]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), side=st.integers(2, 20))
def test_reduced_rows_keep_their_mass_and_identity_assignment_is_exact(seed, side):
    g = torch.Generator().manual_seed(seed)
    n_img = side * side
    groups = torch.tensor([GROUP_SPECIAL] + [GROUP_TEXT] * 3 + [GROUP_IMAGE] * n_img)
    t = groups.numel()
    attn = _softmax(torch.randn(2, t, t, generator=g))
    labels, kinds, assign, grid = display_tokens(groups, None, [], (side, side))
    assert max(grid) <= 8 and kinds.count("patch") == grid[0] * grid[1]
    red = reduce_attention(attn, assign, len(labels))
    assert torch.allclose(red.sum(-1), torch.ones(2, len(labels)), atol=1e-5)  # every key kept: rows sum to 1
    if side <= 8:  # no pooling: the reduction is the attention itself
        assert torch.allclose(red, attn, atol=1e-6)
    q, peak = quantise(red[None])
    qa = np.frombuffer(base64.b64decode(q), np.uint8).reshape(red[None].shape)
    pa = np.frombuffer(base64.b64decode(peak), "<f4").reshape(red[None].shape[:-1])
    back = qa * pa[..., None] / 255.0
    assert np.abs(back - red[None].numpy()).max() <= pa.max() / 255.0 / 2 + 1e-6


def _doc(xss: str = "") -> dict:
    groups = torch.tensor([GROUP_SPECIAL, GROUP_TEXT, GROUP_TEXT] + [GROUP_IMAGE] * 4)
    labels, kinds, assign, grid = display_tokens(groups, torch.tensor([-1, 0, 1, -1, -1, -1, -1]),
                                                 ["a", "dog" + xss], (2, 2))
    layers = []
    for layer in range(2):
        a = torch.full((3, 7, 7), 0.02)
        a[:, 2, 6] = 0.9 if layer == 0 else 0.1  # "dog" -> the last patch, strongly in block 1
        a[:, 2, 3] = 0.1 if layer == 0 else 0.9  # and to the first patch in block 2
        layers.append(reduce_attention(a / a.sum(-1, keepdim=True), assign, len(labels)))
    q, peak = quantise(torch.stack(layers))
    stream = {"tokens": labels, "kinds": kinds, "grid": grid, "layers": 2, "heads": 3, "q": q, "peak": peak}
    explore = {"examples": [{"uid": "u0", "caption": "a dog" + xss, "thumbnail": None,
                             "streams": {"joint": stream}}]}
    hidden = {"layers": [0, 1], "points": {"0": {"image": [[0, 0], [1, 1]], "text": [[0, 1], [1, 0]]},
                                          "1": {"image": [[0, 0], [2, 2]], "text": [[0, 2], [2, 0]]}},
              "captions": ["a dog" + xss, "a cat"], "method": "PCA"}
    return {"schema": "mmdiag/1", "results": [], "series": {"attention_image": {"examples": [], "explore": explore},
                                                            "explore_hidden": hidden}}


def test_explorer_json_cannot_close_its_script_element():
    xss = "</script><script>alert(1)</script>"
    html = render_html(_doc(xss))
    assert xss not in html and "alert(1)" in html  # the words survive, escaped as \u003c...
    block = re.search(r'<script type="application/json" id="mm-explore-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in block


def test_malformed_explorer_data_is_dropped():
    doc = _doc()
    doc["series"]["attention_image"]["explore"]["examples"][0]["streams"]["joint"]["q"] = "AAAA"
    assert explorer_context(doc["series"]) is None
    assert 'id="explorer"' not in render_html(doc)


def _dom(chromium: str, page, tmp_path, fragment: str = "") -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri() + fragment]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _heat(dom: str, token: int) -> float:
    tag = re.search(rf'<[^>]*id="ex-tok-{token}"[^>]*>', dom).group(0)
    return float(re.search(r'data-heat="([0-9.]+)"', tag).group(1))


@pytest.mark.slow
def test_a_click_changes_what_the_explorer_shows(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("install Debian's chromium package to run the browser test")
    page = write_html(_doc(), tmp_path / "report.html")
    before = _dom(chromium, page, tmp_path)
    state = re.search(r'id="explorer"[^>]*data-state="([^"]*)"', before) or \
        re.search(r'data-state="([^"]*)"[^>]*id="explorer"', before)
    assert state.group(1) == "0|joint|0|-1|"  # nothing selected: no heat anywhere
    assert all(_heat(before, i) == 0 for i in range(3, 7))
    # click the word "dog" (display token 2): in block 1 it attends the last patch (token 6)
    after = _dom(chromium, page, tmp_path, "#mm-click=ex-tok-2")
    assert 'data-state="0|joint|0|-1|2"' in after
    assert _heat(after, 6) > 0.8 and _heat(after, 3) == 0  # 0.9 of 0.96 on patches: 3.75x the uniform share
    assert "“dog” (block 1, mean of the heads) attends" in after
    # then open block 2, head 1 from the block-by-head map: the first patch now holds the heat
    opened = _dom(chromium, page, tmp_path, "#mm-click=ex-tok-2,ex-cell-1-1")
    assert 'data-state="0|joint|1|1|2"' in opened
    assert _heat(opened, 3) > 0.8 and _heat(opened, 6) == 0
    assert "(block 2, head 1)" in opened


@pytest.mark.parametrize("value, message", [("99", "at most 16"), ("-1", "must be at least 0"), ("x", "not an integer")])
def test_bad_explore_option_is_a_usage_error(pytester, value, message):
    result = pytester.runpytest("--mm-model=random:tiny-clip", f"--mm-explore={value}", "-p", "no:cacheprovider")
    assert result.ret == 4
    assert message in result.stderr.str() + result.stdout.str()
