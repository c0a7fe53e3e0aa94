"""The token groups of an attention stream (``AttentionStream.groups``), declared once for the adapters that write them
and the attention metrics that read them.

Padding is neither query nor key; special tokens are CLS/BOS/SEP/EOS...; text is the caption's sub-words; image
is the patches or regions.
"""
GROUP_PAD = -1
GROUP_SPECIAL = 0
GROUP_TEXT = 1
GROUP_IMAGE = 2
#: the non-padding groups by id, in index order (metrics index per-group arrays with these ids)
GROUP_NAMES: dict[int, str] = {GROUP_SPECIAL: "special", GROUP_TEXT: "text", GROUP_IMAGE: "image"}
N_GROUPS = len(GROUP_NAMES)
