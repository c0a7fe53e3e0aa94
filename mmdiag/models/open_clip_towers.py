"""Reading open_clip's towers: per-residual-block states (forward hooks) and the adapter (captions: open_clip_tokens).

open_clip's ``VisionTransformer`` and ``TextTransformer`` (and ``CLIP``'s own text stack) run their blocks
from ``transformer.resblocks``, an ``nn.ModuleList`` called as ``block(x, attn_mask=...)``, on ``(N, L, D)``
tensors, or ``(L, N, D)`` when ``transformer.batch_first`` is False. Entry 0 is the input of the first block
(after ``ln_pre`` for images, as Hugging Face CLIP's ``hidden_states[0]``), entry k the output of block k.
Attention maps come from the blocks' ``nn.MultiheadAttention`` (asked for its weights only when
``output_attentions`` is set); the phrase boxes are placed by open_clip's ``preprocess_cfg`` (its resize mode).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from mmdiag.data.types import Sample
from mmdiag.errors import SpecError
from mmdiag.models.base import (GROUP_IMAGE, GROUP_PAD, GROUP_SPECIAL, GROUP_TEXT, IMAGE, TEXT, AttentionStream,
                                ModelAdapter, ModelInfo, Trace)
from mmdiag.models.dual import TextInputs, distinct_images, expand_image_entries, note_text
from mmdiag.models.open_clip_parts import (PreprocessGeometry, image_tower, pool_positions, text_tower, tower_blocks,
                                           vision_tower)
from mmdiag.models.open_clip_tokens import OpenClipHFTokens, OpenClipTokens

__all__ = ["BlockStates", "OpenClipAdapter", "OpenClipHFTokens", "OpenClipTokens", "PreprocessGeometry",
           "attention_readable", "pool_positions"]


class BlockStates:
    """Context manager: hooks on ``transformer.resblocks`` (or a timm trunk's ``blocks``) that keep every block's
    output, batch first.

    ``states`` after the forward: ``[input of block 0, output of block 1, ..., output of block K]``.
    With ``attentions=True`` each block's ``nn.MultiheadAttention`` is asked for its per-head weights
    (``need_weights=True, average_attn_weights=False``, the unfused path, as Hugging Face models do with
    ``output_attentions``) and ``maps`` holds one ``(N, H, L, L)`` map per block.
    """

    def __init__(self, transformer: torch.nn.Module, attentions: bool = False) -> None:
        blocks = tower_blocks(transformer)
        if blocks is None:
            raise SpecError(f"an open_clip tower without resblocks ({type(transformer).__name__}): mmdiag reads "
                            "hidden states per residual block of open_clip's VisionTransformer/TextTransformer "
                            "(or of a timm ViT trunk's blocks)")
        self.blocks = blocks
        self.batch_first = bool(getattr(transformer, "batch_first", True))
        self.attentions = attentions and attention_readable(transformer)
        self.states: list[torch.Tensor] = []
        self.maps: list[torch.Tensor] = []
        self._handles: list[Any] = []

    def _keep(self, x: torch.Tensor) -> None:
        self.states.append(x if self.batch_first else x.transpose(0, 1))

    def __enter__(self) -> "BlockStates":
        self.states, self.maps = [], []

        def before_first(module, args, kwargs):
            self._keep(args[0] if args else next(iter(kwargs.values())))

        def after(module, args, output):
            self._keep(output[0] if isinstance(output, tuple) else output)

        def ask_weights(module, args, kwargs):
            return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

        def keep_weights(module, args, output):
            self.maps.append(output[1])

        self._handles.append(self.blocks[0].register_forward_pre_hook(before_first, with_kwargs=True))
        self._handles.extend(block.register_forward_hook(after) for block in self.blocks)
        if self.attentions:
            for block in self.blocks:
                self._handles.append(block.attn.register_forward_pre_hook(ask_weights, with_kwargs=True))
                self._handles.append(block.attn.register_forward_hook(keep_weights))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def attention_readable(transformer: torch.nn.Module) -> bool:
    """Whether every block attends with ``nn.MultiheadAttention`` (open_clip's ``ResidualAttentionBlock``),
    whose weights can be asked for; ``CustomResidualAttentionBlock``'s own ``Attention`` cannot return them."""
    return all(isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention) for b in tower_blocks(transformer))


def tower_groups(mask: torch.Tensor, special: torch.Tensor, group: int) -> torch.Tensor:
    """``(B, T)`` token groups of one tower's attention stream: ``group`` for content, special, pad."""
    groups = torch.full(mask.shape, group, dtype=torch.long, device=mask.device)
    groups[special] = GROUP_SPECIAL
    groups[~mask] = GROUP_PAD
    return groups


class OpenClipAdapter(ModelAdapter):
    """An open_clip two-tower model: states per residual block of both towers, embeddings from
    ``encode_image``/``encode_text``, per-head attention maps of each tower when ``output_attentions`` is set
    and its blocks use ``nn.MultiheadAttention``. The image tower runs once per distinct image of a batch."""

    family = "open_clip"
    modalities = (IMAGE, TEXT)
    output_attentions = False

    def __init__(self, model: torch.nn.Module, tokens: OpenClipTokens | OpenClipHFTokens, preprocess: Any,
                 info: ModelInfo, device: torch.device, dtype: torch.dtype,
                 rebuild: Optional[Callable[[], torch.nn.Module]] = None) -> None:
        self.rebuild = rebuild  # the architecture with fresh random weights (the random-init control)
        self.visual = vision_tower(model)
        self.image = image_tower(self.visual)
        super().__init__(model, tokens, info, device, dtype, PreprocessGeometry.of(self.visual))
        self.preprocess = preprocess
        self.text = text_tower(model)

    def layer_counts(self) -> dict[str, int]:
        return {IMAGE: len(tower_blocks(self.image.stack)) + 1, TEXT: len(tower_blocks(self.text.stack)) + 1}

    def random_init(self, seed: int) -> Optional["OpenClipAdapter"]:
        """The same architecture with weights seeded by ``seed`` (the ``random-init`` control): open_clip's
        ``create_model(name, load_weights=False)``; None without a ``rebuild``."""
        if self.rebuild is None:
            return None
        torch.manual_seed(seed)
        return OpenClipAdapter(self.rebuild(), self.tokenizer, self.preprocess, self.info, self.device, self.dtype,
                               self.rebuild)

    def special_ids(self) -> tuple[Optional[int], Optional[int], int]:
        tok = self.tokenizer
        return tok.bos_token_id, tok.eos_token_id, tok.pad_token_id

    def prepare(self, samples: Sequence[Sample]) -> dict[str, Any]:
        text = self.tokenizer.encode(samples)
        note_text(self, text)
        batch: dict[str, Any] = {"text": text}
        if all(s.image is not None for s in samples):
            rows, index = distinct_images(samples)
            batch["pixel_values"] = torch.stack([self.preprocess(samples[r].image.convert("RGB")) for r in rows])
            if len(rows) < len(samples):
                batch["image_index"] = torch.tensor(index, dtype=torch.long)
        return batch

    def _text(self, text: TextInputs, trace: Trace) -> None:
        ids = text.input_ids.to(self.device)
        with BlockStates(self.text.stack, self.output_attentions) as states:
            trace.embeds[TEXT] = self.model.encode_text(ids)
        trace.hidden[TEXT] = states.states
        eos_id = self.text.eos_id if self.text.pool == "eos" else self.tokenizer.eos_token_id
        pool = pool_positions(ids, self.text.pool, eos_id)
        trace.pool_index[TEXT] = pool
        positions = torch.arange(ids.shape[1], device=ids.device)
        # causal: the padding after the pooled EOT never reaches it; a padding mask hides the pads; otherwise a
        # bidirectional tower attends to everything
        if self.text.causal:
            trace.mask[TEXT] = positions <= pool.unsqueeze(1)
        else:
            trace.mask[TEXT] = ids != self.text.pad_id if self.text.pad_mask else torch.ones_like(ids, dtype=torch.bool)
        trace.word_ids = text.word_ids.to(self.device)
        trace.content[TEXT] = trace.word_ids >= 0
        if states.maps:
            special = trace.mask[TEXT] & ~trace.content[TEXT]
            trace.attention[TEXT] = AttentionStream(states.maps, tower_groups(trace.mask[TEXT], special, GROUP_TEXT),
                                                    causal=self.text.causal)

    def _image(self, pixels: torch.Tensor, trace: Trace) -> None:
        with BlockStates(self.image.stack, self.output_attentions) as states:
            trace.embeds[IMAGE] = self.model.encode_image(pixels)
        first = states.states[0]
        trace.hidden[IMAGE] = states.states
        real = torch.ones(first.shape[:2], dtype=torch.bool, device=first.device)
        trace.mask[IMAGE] = real
        content = real.clone()
        content[:, :self.image.prefix] = False  # the class (and register) tokens before the patches
        trace.content[IMAGE] = content
        if states.maps:
            trace.attention[IMAGE] = AttentionStream(states.maps, tower_groups(real, ~content, GROUP_IMAGE))
        trace.pool_index[IMAGE] = torch.zeros(first.shape[0], dtype=torch.long,
                                              device=first.device) if self.image.token_pool else None
        trace.patch_grid = self.image.grid
        trace.patch_offset = self.image.prefix
        trace.image_size = tuple(pixels.shape[-2:])

    @torch.inference_mode()
    def forward(self, batch: dict[str, Any]) -> Trace:
        trace = Trace(hidden={}, mask={}, pool_index={}, content={})
        self._text(batch["text"], trace)
        if "pixel_values" in batch:
            self._image(batch["pixel_values"].to(self.device, self.dtype), trace)
            if "image_index" in batch:  # several captions of one image: its tower ran once, rows repeated
                expand_image_entries(trace, batch["image_index"])
        scale = getattr(self.model, "logit_scale", None)
        trace.logit_scale = None if scale is None else float(scale.detach().float().exp())
        return trace
