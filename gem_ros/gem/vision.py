"""Patch tokens of an open_clip vision transformer, with or without GEM's parallel path.

`PatchTokenEncoder` reads the weights of an open_clip `VisionTransformer` and runs its own
forward over them; it never replaces modules or methods of the open_clip model, so two
models in one process (or the same model used plainly) do not interfere.

method "gem": the original path runs unchanged and feeds every block's attention; from the
first of the last `depth - 1` blocks a second path starts, which adds each block's
self-self attention output (no MLP). ln_post and proj are applied to its patch tokens.
method "clip": the unmodified patch tokens after ln_post and proj (the paper's baseline).

methods "naclip", "sclip", "clearclip" (the authors' code: see test/fixtures/successors/
README.md): blocks 1..L-1 unchanged, then their own last block on x (its input), with
y = ln_1(x), q, k, v = the per-head split of in_proj(y), O = out_proj, softmax over keys:
- NACLIP: O(softmax(k kᵀ/√d + Ω) v), Ω[i, j] = exp(-|p_i - p_j|² / 2σ²) over patch grid
  positions (0 on the class token's row and column), no residual, no MLP;
- SCLIP: x' = x + O((softmax(q qᵀ/√d) + softmax(k kᵀ/√d)) v), then x' + mlp(ln_2(x'));
- ClearCLIP: O(softmax(q qᵀ/√d) v), no residual, no MLP.
Their positional embeddings are resampled as their authors do (bicubic by scale factor
(grid + 0.1) / g, no antialias), not as GEM's (bicubic to the size, antialiased).

method "scclip" (SC-CLIP; gem_ros/gem/scclip.py has its forward): blocks 1..L-1 unchanged,
their outputs then repaired, aggregated and run through the last block's attention.

With `image=True` the encoder also returns CLIP's image embedding (the class token of the
original path after ln_post and proj, as `encode_image`), which the presence decision reads:
for GEM only the class token's row of the last block's attention and MLP is run for it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import METHODS
from .scclip import ScclipConfig, scclip_tokens
from .ss_attention import adaptive_inverse_temperature, self_self_attention

try:  # the same resampling the GEM authors copied from timm; timm comes with open_clip.
    from timm.layers import resample_abs_pos_embed
except ImportError:  # pragma: no cover - timm is optional for open_clip
    resample_abs_pos_embed = None

POS_CACHE_GRIDS = 8  # resampled positional embeddings (and NACLIP biases) kept per input grid
SUCCESSORS = ("naclip", "sclip", "clearclip")  # methods that replace the last block only
# Methods whose authors resample positional embeddings by scale factor (theirs, not timm's).
SCALE_RESAMPLED = SUCCESSORS + ("scclip",)


def _resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Positional embeddings [1+N, C] resampled to `grid` (bicubic, antialias), as the
    authors do."""
    old = int(round((pos_embed.shape[0] - 1) ** 0.5))
    if resample_abs_pos_embed is not None:
        return resample_abs_pos_embed(
            pos_embed.unsqueeze(0),
            new_size=list(grid),
            old_size=[old, old],
            num_prefix_tokens=1,
            interpolation="bicubic",
            antialias=True,
        )[0]
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", antialias=True)
    return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)[0]], dim=0)


def _resample_pos_embed_by_scale(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """NACLIP's, SCLIP's and ClearCLIP's resampling: bicubic interpolation of the g x g grid
    driven by the scale factor ((rows + 0.1) / g, (cols + 0.1) / g), no antialias."""
    old = int(round((pos_embed.shape[0] - 1) ** 0.5))
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos,
        scale_factor=((grid[0] + 0.1) / old, (grid[1] + 0.1) / old),
        mode="bicubic",
        align_corners=False,
        recompute_scale_factor=False,
    )
    return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)[0]], dim=0)


def neighbourhood_bias(grid: tuple[int, int], std: float) -> torch.Tensor:
    """NACLIP's Ω [1 + h*w, 1 + h*w]: a Gaussian of the distance between patch positions
    (row, col), in patches; 0 on the class token's row and column."""
    rows, cols = torch.meshgrid(
        torch.arange(grid[0], dtype=torch.float32),
        torch.arange(grid[1], dtype=torch.float32),
        indexing="ij",
    )
    pos = torch.stack([rows.flatten(), cols.flatten()], dim=1)  # [h*w, 2]
    bias = torch.zeros(pos.shape[0] + 1, pos.shape[0] + 1)
    bias[1:, 1:] = torch.exp(-torch.cdist(pos, pos).square() / (2 * std * std))
    return bias


class PatchTokenEncoder(nn.Module):
    """Image -> projected patch tokens [B, h/p, w/p, D] of an open_clip ViT."""

    def __init__(
        self,
        visual: nn.Module,
        method: str = "gem",
        depth: int = 7,
        ss_attn_iter: int = 1,
        ss_attn_temp: float | None = None,
        naclip_std: float = 5.0,
        scclip: Optional[ScclipConfig] = None,
    ):
        super().__init__()
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is None or not hasattr(visual, "conv1"):
            raise ValueError(
                f"{type(visual).__name__} is not an open_clip VisionTransformer; GEM needs a "
                "CLIP ViT (timm or ResNet towers are not supported)"
            )
        if not all(_standard_block(b) for b in blocks):
            raise ValueError(
                "GEM needs open_clip ViT blocks with standard multi-head attention "
                "(a packed qkv projection, no scaled-cosine attention)"
            )
        if not getattr(visual.transformer, "batch_first", True):
            raise ValueError("open_clip >= 2.26 (batch-first transformer) is required")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "gem" and not 2 <= depth <= len(blocks) + 1:
            raise ValueError(
                f"gem depth must be in [2, {len(blocks) + 1}] for a "
                f"{len(blocks)}-block ViT, got {depth}"
            )
        if ss_attn_iter < 0:
            raise ValueError(f"ss_attn_iter must be >= 0, got {ss_attn_iter}")
        if ss_attn_temp is not None and ss_attn_temp <= 0:
            raise ValueError(f"ss_attn_temp must be > 0 (or None for adaptive), got {ss_attn_temp}")
        if not naclip_std > 0:
            raise ValueError(f"naclip_std must be > 0, got {naclip_std}")
        self.visual = visual
        self.method = method
        self.depth = depth
        self.ss_attn_iter = ss_attn_iter
        self.ss_attn_temp = ss_attn_temp
        self.naclip_std = naclip_std
        # Resolved for this depth only when used: other methods ignore its settings.
        self.scclip = (
            (scclip or ScclipConfig()).for_depth(len(blocks)) if method == "scclip" else None
        )
        self.patch_size = int(visual.conv1.kernel_size[0])
        # [1 + h*w, C] per input grid, least recently used first; bounded, as frame sizes
        # (and so grids) are whatever the cameras send.
        self._pos_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._bias_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        # A graph of a new input size is exported on a thread of its own while frames run on
        # the worker (gem_ros/gem/backends.py): the caches are shared under a lock, and the
        # export's fixed grid is its own thread's.
        self._cache_lock = threading.Lock()
        self._export = threading.local()

    @property
    def fixed_grid(self) -> Optional[tuple[int, int]]:
        """Set while this thread exports a graph of one input size (gem_ros/gem/export.py): a
        traced shape is a tensor, the grid must be plain numbers."""
        return getattr(self._export, "grid", None)

    @fixed_grid.setter
    def fixed_grid(self, grid: Optional[tuple[int, int]]) -> None:
        self._export.grid = grid

    def _pos_embed(self, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        # Resampled once per input grid: every frame of a camera has the same size.
        def make():
            pos = self.visual.positional_embedding.detach()
            if pos.shape[0] == grid[0] * grid[1] + 1:
                return pos
            if self.method in SCALE_RESAMPLED:
                return _resample_pos_embed_by_scale(pos.float(), grid)
            return _resample_pos_embed(pos.float(), grid)

        with self._cache_lock:
            return _cached(self._pos_cache, grid, make).to(dtype)

    def _neighbourhood_bias(self, grid, like: torch.Tensor) -> torch.Tensor:
        """NACLIP's Ω for this grid, made once per grid, device and dtype: built on the CPU
        and copied to a GPU, it cost a host-to-device copy per frame."""

        def make():
            return neighbourhood_bias(grid, self.naclip_std).to(like.device, like.dtype)

        with self._cache_lock:
            return _cached(self._bias_cache, (*grid, like.device, like.dtype), make)

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        v = self.visual
        x = v.conv1(pixels)
        grid = self.fixed_grid or (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(grid, x.dtype)
        return v.ln_pre(x), grid  # patch dropout is the identity at inference

    def forward(
        self, pixels: torch.Tensor, image: bool = False
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """-> (patch tokens [B, h, w, D], the image embedding [B, D] when `image`, else None)."""
        x, grid = self._embed(pixels)
        blocks = self.visual.transformer.resblocks
        n_special = {"gem": self.depth - 1, "clip": 0}.get(self.method, 1)
        n_plain = len(blocks) - n_special
        features = []  # SC-CLIP reads every block's output
        for block in blocks[:n_plain]:
            x = _plain_block(block, x)  # [B, N, C] with N = 1 + h*w tokens
            if self.method == "scclip":
                features.append(x)
        if self.method == "scclip":
            tokens = scclip_tokens(features, blocks[-1], grid, self.scclip, _qkv)
            cls = None
            if image:  # the original last block's class token, for the image embedding
                qkv = _qkv(blocks[-1].attn, blocks[-1].ln_1(x))
                cls = _block_tail(blocks[-1], x[:, :1], qkv[0][:, :, :1], qkv)
        elif self.method in SUCCESSORS:
            tokens, cls = self._last_block(blocks[-1], x, grid, image)
            tokens = tokens[:, 1:]
        elif n_special == 0:
            tokens, cls = x[:, 1:], x[:, :1]
        else:
            tokens, cls = self._gem_path(x, blocks[n_plain:], image)
            tokens = tokens[:, 1:]  # GEM's class token is never compared
        tokens = self._project(tokens)  # [B, h*w, D]
        embedding = self._project(cls)[:, 0] if image else None  # [B, D]
        return tokens.reshape(tokens.shape[0], *grid, tokens.shape[-1]), embedding

    def _last_block(self, block, x: torch.Tensor, grid, image: bool):
        """NACLIP's, SCLIP's or ClearCLIP's last block on x [B, N, C] -> (tokens [B, N, C],
        the original block's class token [B, 1, C] when `image`)."""
        attn = block.attn
        qkv = _qkv(attn, block.ln_1(x))  # [3, B, heads, N, d]
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.method == "naclip":
            bias = self._neighbourhood_bias(grid, k)
            tokens = attn.out_proj(_merge_heads(F.scaled_dot_product_attention(k, k, v, bias)))
        elif self.method == "clearclip":
            tokens = attn.out_proj(_merge_heads(F.scaled_dot_product_attention(q, q, v)))
        else:  # sclip: the two softmaxes summed, with the residual and the MLP
            both = F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)
            tokens = x + block.ls_1(attn.out_proj(_merge_heads(both)))
            tokens = tokens + block.ls_2(block.mlp(block.ln_2(tokens)))
        cls = _block_tail(block, x[:, :1], q[:, :, :1], qkv) if image else None
        return tokens, cls

    def _project(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.visual.ln_post(tokens)
        return tokens if self.visual.proj is None else tokens @ self.visual.proj

    def _gem_path(
        self, x: torch.Tensor, blocks, image: bool
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """x: [B, N, C] tokens entering the first GEM block -> (GEM's tokens [B, N, C], the
        original path's class token after the last block [B, 1, C] when `image`)."""
        gem = x
        for i, block in enumerate(blocks):
            attn = block.attn
            h = block.ln_1(x)  # [B, N, C]
            # One qkv projection shared by the original attention and self-self attention,
            # laid out once as contiguous [3, B, heads, N, head_dim].
            qkv = _qkv(attn, h).contiguous()
            inv_temp = (
                self.ss_attn_temp
                if self.ss_attn_temp is not None
                else adaptive_inverse_temperature(h, attn.head_dim)
            )
            ss = self_self_attention(qkv, self.ss_attn_iter, inv_temp)  # [B, heads, N, d]
            gem = gem + block.ls_1(attn.out_proj(_merge_heads(ss)))  # [B, N, C]
            if i == len(blocks) - 1:
                # The original path's last block feeds only the image embedding: its class
                # token's row (1 of N queries), or nothing.
                return gem, (_block_tail(block, x[:, :1], qkv[0][:, :, :1], qkv) if image else None)
            x = _block_tail(block, x, qkv[0], qkv)
        raise AssertionError("unreachable: a GEM path has at least one block")


def _cached(cache: OrderedDict, grid, make) -> torch.Tensor:
    """cache[grid], made once; at most POS_CACHE_GRIDS grids kept, least recently used out.
    The caller holds the encoder's cache lock."""
    if grid not in cache:
        cache[grid] = make()
        while len(cache) > POS_CACHE_GRIDS:
            cache.popitem(last=False)
    cache.move_to_end(grid)
    return cache[grid]


def _standard_block(block) -> bool:
    """An open_clip residual block whose attention this module can run itself: a packed qkv
    projection (nn.MultiheadAttention, or open_clip's own Attention class with the same
    attribute names), without scaled-cosine attention or an inner norm."""
    attn = getattr(block, "attn", None)
    needed = ("in_proj_weight", "in_proj_bias", "out_proj", "num_heads", "head_dim")
    return (
        attn is not None
        and all(hasattr(attn, a) for a in needed)
        and getattr(attn, "logit_scale", None) is None
        and isinstance(getattr(attn, "ln_inner", nn.Identity()), nn.Identity)
        and all(hasattr(block, a) for a in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
    )


def _qkv(attn, h: torch.Tensor) -> torch.Tensor:
    """[B, N, C] -> q, k, v as a [3, B, heads, N, head_dim] view."""
    batch, n_tok, _ = h.shape
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)  # [B, N, 3C]
    return qkv.view(batch, n_tok, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)


def _plain_block(block, x: torch.Tensor) -> torch.Tensor:
    """open_clip's residual block, with torch's fused attention (its inference fast path for
    nn.MultiheadAttention builds the full attention matrix instead)."""
    qkv = _qkv(block.attn, block.ln_1(x))
    return _block_tail(block, x, qkv[0], qkv)


def _block_tail(block, x: torch.Tensor, q: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
    """The rest of a residual block for the tokens x [B, M, C] whose queries are q
    [B, heads, M, d], attending to all keys and values of qkv."""
    attended = F.scaled_dot_product_attention(q, qkv[1], qkv[2])  # [B, heads, M, d]
    x = x + block.ls_1(block.attn.out_proj(_merge_heads(attended)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d] -> [B, N, H*d]."""
    return x.transpose(1, 2).flatten(2)
