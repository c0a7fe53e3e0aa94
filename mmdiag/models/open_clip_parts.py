"""The parts of an open_clip model mmdiag reads: each tower's block stack, pooling and tokens, and its preprocessing.

Image towers: open_clip's own ``VisionTransformer`` (blocks in ``transformer.resblocks``, one class token) or a
``TimmModel`` whose timm trunk is a ViT (``trunk.blocks``, ``num_prefix_tokens`` class/register tokens: EVA,
Perception Encoder, ViTamin's ViT, plain timm ViTs). Text towers: ``CLIP``'s own stack or ``CustomTextCLIP``'s
``TextTransformer``. Anything else (ResNets, ConvNeXt, Hugging Face text encoders, CoCa) is a usage error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from mmdiag.errors import SpecError


def tower_blocks(module: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The residual blocks of a tower's stack: open_clip's ``resblocks`` or a timm trunk's ``blocks`` (None: none)."""
    for name in ("resblocks", "blocks"):
        blocks = getattr(module, name, None)
        if isinstance(blocks, (torch.nn.ModuleList, torch.nn.Sequential)) and len(blocks) > 0:
            return blocks
    return None


@dataclass(frozen=True)
class TextTower:
    """How an open_clip text tower runs: its block stack, the pooling of ``text_global_pool``, the EOS id that
    pooling looks for, whether the causal mask is on and whether padding (``pad_id``) is masked out."""

    stack: torch.nn.Module
    pool: str
    eos_id: Optional[int]
    causal: bool
    pad_mask: bool
    pad_id: int = 0


def text_tower(model: torch.nn.Module) -> TextTower:
    """The text tower of an open_clip ``CLIP`` (its own ``transformer``) or ``CustomTextCLIP`` (``model.text``)."""
    text = getattr(model, "text", None)
    if text is not None:  # CustomTextCLIP: a TextTransformer, or a Hugging Face text encoder (no resblocks)
        if getattr(text, "cls_emb", None) is not None:
            raise SpecError("open_clip text towers with an appended CLS token (CoCa) are not supported")
        stack = getattr(text, "transformer", None)
        if stack is None or not hasattr(stack, "resblocks"):
            raise SpecError(f"this open_clip model's text tower is a {type(text).__name__}, not open_clip's "
                            "TextTransformer: mmdiag reads hidden states per residual block of open_clip's own "
                            "towers (load the Hugging Face text model on its own with --mm-model=ORG/NAME)")
        return TextTower(stack, str(getattr(text, "pool_type", "argmax")), getattr(text, "eos_id", None),
                         getattr(text, "attn_mask", None) is not None, bool(getattr(text, "use_pad_mask", False)),
                         int(getattr(text, "pad_id", 0)))
    return TextTower(model.transformer, str(getattr(model, "text_pool_type", "argmax")),
                     getattr(model, "text_eos_id", None), getattr(model, "attn_mask", None) is not None, False)


def vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    """``model.visual``, refused unless :func:`image_tower` can read it."""
    visual = model.visual
    image_tower(visual)
    return visual


@dataclass(frozen=True)
class ImageTower:
    """How an image tower lays out its tokens: the module whose blocks are hooked, the class/register tokens
    before the patches (``prefix``), whether the class token is the pooled one, the patch grid."""

    stack: torch.nn.Module = field(repr=False)
    prefix: int
    token_pool: bool
    grid: Optional[tuple[int, int]]


def image_tower(visual: torch.nn.Module) -> ImageTower:
    """The :class:`ImageTower` of open_clip's ``VisionTransformer`` or of a ``TimmModel`` with a ViT trunk."""
    stack = getattr(visual, "transformer", None)
    if stack is not None and tower_blocks(stack) is not None and hasattr(stack, "resblocks"):
        grid = getattr(visual, "grid_size", None)
        token = getattr(visual, "pool_type", "tok") == "tok" and getattr(visual, "attn_pool", None) is None
        return ImageTower(stack, 1, token, tuple(int(g) for g in grid) if grid is not None else None)
    trunk = getattr(visual, "trunk", None)
    patch = getattr(trunk, "patch_embed", None)
    if trunk is not None and tower_blocks(trunk) is not None and hasattr(trunk, "num_prefix_tokens") \
            and patch is not None and not getattr(trunk, "dynamic_img_size", False):
        grid = getattr(patch, "grid_size", None)
        head_pool = "pool" in dict(getattr(visual, "head", torch.nn.Sequential()).named_children())
        token = getattr(trunk, "global_pool", "") == "token" and not head_pool and trunk.num_prefix_tokens > 0
        return ImageTower(trunk, int(trunk.num_prefix_tokens), token,
                          tuple(int(g) for g in grid) if grid is not None else None)
    inner = f" ({type(trunk).__name__})" if trunk is not None else ""
    raise SpecError(f"this open_clip model's image tower is a {type(visual).__name__}{inner}, not a "
                    "transformer mmdiag can read: it reads hidden states per residual block of open_clip's "
                    "VisionTransformer or of a timm ViT trunk (EVA, PE, ViT), not ResNet or ConvNeXt towers")


@dataclass(frozen=True)
class PreprocessGeometry:
    """open_clip's inference transform as the attributes :func:`mmdiag.models.regions.preprocess_geometry` reads
    from a Hugging Face image processor, so that phrase boxes land on the right patches.

    ``resize_mode`` (open_clip's ``PreprocessCfg``): ``shortest`` resizes the short side and centre-crops,
    ``squash`` scales both axes, ``longest`` resizes the long side and pads to the centre.
    """

    height: int
    width: int
    resize_mode: str = "shortest"

    @classmethod
    def of(cls, visual: torch.nn.Module) -> "PreprocessGeometry":
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        size = cfg.get("size", getattr(visual, "image_size", 224))
        height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        return cls(int(height), int(width), str(cfg.get("resize_mode") or "shortest"))

    @property
    def size(self) -> dict[str, int]:
        return {"height": self.height, "width": self.width}

    @property
    def crop_size(self) -> dict[str, int]:
        return self.size

    @property
    def do_center_crop(self) -> bool:
        return self.resize_mode == "shortest"


def pool_positions(ids: torch.Tensor, pool: str, eos_id: Optional[int]) -> torch.Tensor:
    """The text position open_clip's ``text_global_pool`` takes: ``first``, ``last``, ``argmax`` (the largest
    id, the EOT of open_clip's tokenizer) or ``eos`` (the first ``eos_id``)."""
    rows = torch.arange(ids.shape[0], device=ids.device)
    if pool == "first":
        return torch.zeros_like(rows)
    if pool == "last":
        return torch.full_like(rows, ids.shape[1] - 1)
    if pool == "eos":
        return (ids == eos_id).int().argmax(dim=-1).long()
    return ids.argmax(dim=-1).long()
