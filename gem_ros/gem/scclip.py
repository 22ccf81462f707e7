"""SC-CLIP (Self-Calibrated CLIP; Bai et al.), the function of its authors' code
(SuleBai/SC-CLIP @ 0417ba9, clip/model.py: VisionTransformer.forward, custom_attn,
adaptively_aggregate, mean_interpolation, lof_pytorch; defaults of scclip_segmentor.py),
batch-first, per image as if alone, in bounded memory. test/fixtures/successors/README.md
writes the forward out step by step; with L blocks and F[j] the output of block j + 1:

1. blocks 1..L-1 as CLIP; cls = F[L-2]'s class token, P its patches;
2. outliers of P by the Local Outlier Factor (squared Euclidean distances, `neighbors`
   nearest others, LOF over the (1 - contamination) quantile, strictly), each replaced by the
   mean of its valid 8-neighbours on the patch grid;
3. S_pre = cos(F[pre] patches, outliers replaced the same way); mid = S_pre;
   x = agg(P', S_pre with entries < threshold zeroed);
4. the last block without residual or MLP: x = attn(ln_1(x), mid) + res_cls · cls, where
   attn averages softmax(3 (mid - mean(mid)), negatives masked) with the k-k attention;
5. S_post = cos(F[post] patches), thresholded; x = agg(x, S_post);
6. R = F[start] + ... + F[end - 1] (with class token); x += agg(attn(ln_1(R patches), mid) +
   res_cls · R's class token, S_post);
then ln_post and proj (vision.py). agg(X, C) = (C / (rowsum(C) + 1e-6)) X.

Where this differs from their code, on purpose:
- the outlier index i is the patch (i // cols, i % cols), the row-major position on any
  grid; theirs is (i // rows, i % rows), the same on the square inputs their evaluation feeds,
  elsewhere wrong patches or an index out of range;
- a batch is computed per image (theirs takes one image: its LOF would mix a batch, and
  mean(mid) would span it);
- LOF's pairwise distances are computed in blocks of rows (LOF_BLOCK_BYTES), the same
  arithmetic as their N x N x C difference tensor (1.9 GB at 448 px for ViT-B-16), so memory
  stays bounded whatever the input size; its quantile is a sort and a linear interpolation
  (torch.quantile's), which ONNX can express.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Union

import torch
import torch.nn.functional as F

AUTHORS_BLOCKS = (8, 3, 3, 10)  # pre_adjust, post_adjust, multi_start, multi_end of 12 blocks
AUTHORS_DEPTH = 12
LOF_BLOCK_BYTES = 32 << 20  # the largest difference tensor LOF builds at once, per image


@dataclass(frozen=True)
class ScclipConfig:
    """SC-CLIP's settings (the authors' defaults); `blocks` is (pre, post, start, end), or
    'auto' / 'pre,post,start,end' text until `for_depth` resolves it for a model."""

    blocks: Union[str, tuple] = "auto"
    res_cls: float = 0.3
    threshold: float = 0.4
    lof_neighbors: int = 30
    lof_contamination: float = 0.05

    @classmethod
    def from_settings(cls, settings) -> "ScclipConfig":
        return cls(
            settings.scclip_blocks,
            settings.scclip_res_cls,
            settings.scclip_threshold,
            settings.scclip_lof_neighbors,
            settings.scclip_lof_contamination,
        )

    def for_depth(self, n_blocks: int) -> "ScclipConfig":
        if isinstance(self.blocks, tuple):
            return self
        return replace(self, blocks=resolve_blocks(self.blocks, n_blocks))


def resolve_blocks(text: str, n_blocks: int) -> tuple[int, int, int, int]:
    """The block indices (pre, post, start, end) for a ViT of `n_blocks` blocks: 'auto' is
    the authors' (8, 3, 3, 10) for 12 blocks, scaled by n_blocks / 12 and rounded for other
    depths (ViT-L-14, 24 blocks: 16, 6, 6, 20); or four integers 'pre,post,start,end'.
    ValueError, naming the rule, when they do not fit the model."""
    if n_blocks < 4:
        raise ValueError(f"scclip needs a ViT of at least 4 blocks, this one has {n_blocks}")
    text = str(text).strip().lower()
    if text == "auto":
        scale = n_blocks / AUTHORS_DEPTH
        return tuple(int(math.floor(i * scale + 0.5)) for i in AUTHORS_BLOCKS)
    try:
        pre, post, start, end = (int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(
            f"scclip_blocks must be 'auto' or four integers 'pre,post,start,end', got {text!r}"
        ) from None
    last = n_blocks - 2  # F[0..L-2]: the outputs of blocks 1..L-1
    if not (0 <= pre <= last and 0 <= post <= last and 0 <= start < end <= last + 1):
        raise ValueError(
            f"scclip_blocks {text!r} does not fit a {n_blocks}-block ViT: pre and post must be "
            f"in 0..{last}, and 0 <= start < end <= {last + 1}"
        )
    return pre, post, start, end


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """[B, N, C] -> [B, N, N]: torch.norm(x_i - x_j) ** 2, as lof_pytorch computes it, a block
    of rows at a time (at most LOF_BLOCK_BYTES of differences per image). The block size is a
    plain number of the patch count and width, never of the batch: an exported graph keeps
    its blocks whatever batch it is given."""
    n, c = int(x.shape[1]), int(x.shape[2])
    if x.is_cuda and not torch.jit.is_tracing():
        return cdist_squared(x)
    rows = max(1, LOF_BLOCK_BYTES // (n * c * x.element_size()))
    if rows >= n:
        return torch.norm(x[:, :, None] - x[:, None], dim=3, p=2) ** 2
    if torch.jit.is_tracing():  # an exported graph: no buffer to reuse
        parts = [
            torch.norm(x[:, i : i + rows, None] - x[:, None], dim=3, p=2) ** 2
            for i in range(0, n, rows)
        ]
        return torch.cat(parts, dim=1)
    # One buffer for every block's differences: a fresh one per block made the heap grow by
    # gigabytes (glibc kept the freed blocks resident: measured 3 to 6 GB at 1568 patches).
    out = x.new_empty(x.shape[0], n, n)
    buffer = x.new_empty(x.shape[0], rows, n, c)
    for i in range(0, n, rows):
        block = buffer[:, : min(rows, n - i)]
        torch.sub(x[:, i : i + rows, None], x[:, None], out=block)
        out[:, i : i + rows] = torch.norm(block, dim=3, p=2) ** 2
    return out


def cdist_squared(x: torch.Tensor) -> torch.Tensor:
    """squared_distances on a GPU: one kernel of exact differences (no matrix-product
    shortcut, so the same arithmetic as theirs) that never holds the [B, N, N, C] differences;
    the blocked loop was about 100 small launches per frame there."""
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") ** 2


def lof_outliers(x: torch.Tensor, neighbors: int, contamination: float) -> torch.Tensor:
    """[B, N, C] patches -> [B, N] bool, the Local Outlier Factor outliers of each image."""
    n = int(x.shape[1])
    if n <= neighbors:
        raise ValueError(
            f"scclip's outlier detection compares each patch with its {neighbors} nearest "
            f"others: this input has {n} patches; feed a larger input (input_size) or lower "
            "scclip_lof_neighbors"
        )
    distances = squared_distances(x)
    knn_distances, knn_indices = torch.topk(distances, k=neighbors + 1, largest=False)
    knn_distances, knn_indices = knn_distances[..., 1:], knn_indices[..., 1:]
    k_distances = knn_distances[..., -1:].expand_as(knn_distances)
    reach = torch.max(knn_distances, k_distances)  # the patch's own k-distance, as theirs
    lrd = neighbors / torch.nan_to_num(reach.mean(dim=-1), nan=1e-6)  # [B, N]
    # LRD[knn_indices] per image; gathered along the last axis of an [B, N, N] view (a
    # flattened index would carry the traced batch size into an exported graph).
    neighbour_lrd = torch.gather(lrd.unsqueeze(1).expand(-1, n, -1), 2, knn_indices)
    lof = (neighbour_lrd / lrd.unsqueeze(-1)).mean(dim=-1)  # [B, N]
    return lof > _quantile(lof.float(), 1.0 - contamination).unsqueeze(-1)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(values, q, dim=-1) (linear interpolation), for ONNX too."""
    ordered = values.sort(dim=-1).values
    position = q * (values.shape[-1] - 1)
    low = int(math.floor(position))
    high = min(low + 1, values.shape[-1] - 1)
    return torch.lerp(ordered[..., low], ordered[..., high], position - low)


def replace_outliers(
    patches: torch.Tensor, outliers: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """mean_interpolation: each outlier patch becomes the mean of its 8-neighbours on the
    grid that are not outliers; one without such neighbours stays. patches [B, N, C],
    outliers [B, N] (patch i at row i // cols, column i % cols)."""
    rows, cols = grid
    # Plain numbers (the grid and the width, fixed for a model and input size) and -1 for the
    # batch: a traced export keeps the batch axis dynamic and the channels known.
    c = int(patches.shape[-1])
    fmap = patches.transpose(1, 2).reshape(-1, c, rows, cols)
    bad = outliers.view(-1, 1, rows, cols)
    keep = (~bad).to(patches.dtype)
    kernel = torch.ones(1, 1, 3, 3, dtype=patches.dtype, device=patches.device)
    kernel[:, :, 1, 1] = 0
    # Zero padding of the convolution itself, as their F.pad(..., value=0) (an explicit Pad
    # leaves the exporter a convolution input of unknown rank).
    neighbour_sum = F.conv2d(fmap * keep, kernel.repeat(c, 1, 1, 1), padding=1, groups=c)
    valid = F.conv2d(keep, kernel, padding=1)
    mean = neighbour_sum / torch.where(valid == 0, torch.ones_like(valid), valid)
    fmap = torch.where(bad & (valid > 0), mean, fmap)
    return fmap.reshape(-1, c, rows * cols).transpose(1, 2)


def cosine(patches: torch.Tensor) -> torch.Tensor:
    """[B, N, C] -> [B, N, N] cosine similarities (no epsilon, as theirs)."""
    unit = patches / patches.norm(dim=-1, keepdim=True)
    return unit @ unit.transpose(1, 2)


def aggregate(tokens: torch.Tensor, corrs: torch.Tensor) -> torch.Tensor:
    """adaptively_aggregate: rows of `corrs` [B, N, N], normalised, mix tokens [B, N, C]."""
    return (corrs / (corrs.sum(dim=-1, keepdim=True) + 1e-6)) @ tokens


def _thresholded(similarity: torch.Tensor, threshold: float) -> torch.Tensor:
    return similarity.masked_fill(similarity < threshold, 0.0)


def mixed_attention(attn, y: torch.Tensor, mid: torch.Tensor, qkv_of) -> torch.Tensor:
    """custom_attn: out_proj of ((softmax(Mid) + softmax(k kᵀ/√d)) / 2) v per head, where
    Mid = 3 (mid - mean(mid)) (the mean over the image's whole matrix), negatives -inf, the
    same for every head. y [B, N, C] (ln_1 applied), mid [B, N, N]."""
    qkv = qkv_of(attn, y)  # [3, B, heads, N, d]
    k, v = qkv[1], qkv[2]
    mid = (mid - mid.mean(dim=(1, 2), keepdim=True)) * 3.0
    mid = mid.masked_fill(mid < 0.0, float("-inf"))
    weights = F.softmax(mid, dim=-1).unsqueeze(1)
    k_attn = torch.matmul(k, k.transpose(-1, -2)) * attn.head_dim**-0.5
    weights = (weights + F.softmax(k_attn, dim=-1)) / 2
    out = torch.matmul(weights, v)  # [B, heads, N, d]
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def scclip_tokens(
    features: list, last_block, grid: tuple[int, int], config: ScclipConfig, qkv_of
) -> torch.Tensor:
    """SC-CLIP's patch tokens [B, N, C] (before ln_post and proj) from `features`, the outputs
    [B, 1 + N, C] of blocks 1..L-1, and the last block."""
    pre, post, start, end = config.blocks
    x = features[-1]
    cls, patches = x[:, :1], x[:, 1:]
    outliers = lof_outliers(patches.float(), config.lof_neighbors, config.lof_contamination)
    patches = replace_outliers(patches, outliers, grid)

    mid = cosine(replace_outliers(features[pre][:, 1:], outliers, grid))
    x = aggregate(patches, _thresholded(mid, config.threshold))
    attn = last_block.attn
    x = mixed_attention(attn, last_block.ln_1(x), mid, qkv_of) + config.res_cls * cls

    after = _thresholded(cosine(features[post][:, 1:]), config.threshold)
    x = aggregate(x, after)

    summed = torch.zeros_like(features[0])
    for i in range(start, end):
        summed = summed + features[i]
    multi = mixed_attention(attn, last_block.ln_1(summed[:, 1:]), mid, qkv_of)
    multi = multi + config.res_cls * summed[:, :1]
    return x + aggregate(multi, after)
