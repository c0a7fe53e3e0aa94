"""Punctuation in root accuracy and UUAS: Hewitt's seven PTB tags or UPOS PUNCT, decided per tree."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdiag.data.types import DepTree
from mmdiag.metrics.probe_recovery import root_accuracy, uuas
from mmdiag.metrics.probe_trees import PTB_PUNCT, keep_mask, punctuation_tags
from mmdiag.probing.data import ProbeData

# EWT-style: "well - known" with HYPH (UPOS PUNCT), a final "." (PTB ".", UPOS PUNCT)
EWT = DepTree(words=("a", "well", "-", "known", "film", "."), heads=(5, 4, 4, 5, 0, 5),
              upos=("DET", "ADV", "PUNCT", "VERB", "NOUN", "PUNCT"), xpos=("DT", "RB", "HYPH", "VBN", "NN", "."))
UNTAGGED = DepTree(words=("x", "y", "."), heads=(0, 1, 1), upos=(), xpos=())
UPOS_ONLY = DepTree(words=("x", "y", "."), heads=(0, 1, 1), upos=("X", "X", "PUNCT"), xpos=("_", "_", "_"))


def test_hewitts_seven_tags():
    assert PTB_PUNCT == {"''", ",", ".", ":", "``", "-LRB-", "-RRB-"}


def test_ptb_keeps_hyph_and_upos_drops_it():
    tags, src = punctuation_tags(EWT.upos, EWT.xpos, 6, "ptb")
    assert src == "ptb" and keep_mask(6, tags, 0, "t").tolist() == [True, True, True, True, True, False]
    tags, src = punctuation_tags(EWT.upos, EWT.xpos, 6, "upos")
    assert src == "upos" and keep_mask(6, tags, 0, "t").tolist() == [True, True, False, True, True, False]
    with pytest.raises(ValueError, match="accepted: ptb, upos"):
        punctuation_tags(EWT.upos, EWT.xpos, 6, "PUNCT")


def test_each_tree_falls_back_on_its_own():
    assert punctuation_tags(UPOS_ONLY.upos, UPOS_ONLY.xpos, 3, "ptb") == (("X", "X", "PUNCT"), "upos")
    assert punctuation_tags(EWT.upos, (), 6, "upos")[1] == "upos"
    assert punctuation_tags((), EWT.xpos, 6, "upos")[1] == "ptb"
    assert punctuation_tags((), (), 3, "ptb") == (None, "none")


def test_one_untagged_tree_does_not_switch_exclusion_off_for_the_corpus():
    trees = [EWT, UNTAGGED, UPOS_ONLY]
    data = ProbeData.from_trees(torch.zeros(1, 12, 2), trees)
    assert data.upos[1] is None and data.upos[0] == EWT.xpos
    assert data.punctuation_counts() == {"ptb": 1, "upos": 1, "none": 1}
    assert data.subset([2, 0]).punct_sources == ("upos", "ptb")
    # root accuracy: a prediction whose shallowest word is the final "." is not read as the root in the tagged
    # trees (the "." is skipped), while the untagged tree keeps every word
    pred = [np.array([3, 3, 3, 3, 1, 0.0]), np.array([1, 2, 0.0]), np.array([1, 2, 0.0])]
    assert root_accuracy(pred, data.heads, data.upos) == pytest.approx(2 / 3)
    # before: one untagged tree made upos None for all three, and every "." counted
    assert root_accuracy(pred, data.heads, None) == 0.0
    # UUAS of chain-shaped predictions: the tagged trees' punctuation leaves the gold edges (4 + 2 + 1 edges,
    # 2 + 1 + 1 found) instead of all of them counting (5 + 2 + 2 edges, 3 + 1 + 1 found)
    chain = [np.abs(np.subtract.outer(np.arange(n), np.arange(n))).astype(float) for n in (6, 3, 3)]
    assert uuas(chain, data.heads, data.upos) == pytest.approx(4 / 7)
    assert uuas(chain, data.heads, None) == pytest.approx(5 / 9)
    upos = ProbeData.from_trees(torch.zeros(1, 12, 2), trees, punctuation="upos")
    assert upos.punctuation_counts() == {"ptb": 0, "upos": 2, "none": 1}
    assert keep_mask(6, upos.upos[0], 0, "t").sum() == 4


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_TREES = st.sampled_from([EWT, UNTAGGED, UPOS_ONLY])


@settings(max_examples=30, deadline=None)
@given(st.lists(_TREES, min_size=1, max_size=6), st.sampled_from(["ptb", "upos"]))
def test_a_trees_punctuation_does_not_depend_on_the_rest_of_the_corpus(trees, convention):
    W = sum(len(t.heads) for t in trees)
    data = ProbeData.from_trees(torch.zeros(1, W, 2), trees, punctuation=convention)
    for k, t in enumerate(trees):
        alone = ProbeData.from_trees(torch.zeros(1, len(t.heads), 2), [t], punctuation=convention)
        assert data.upos[k] == alone.upos[0] and data.punct_sources[k] == alone.punct_sources[0]
