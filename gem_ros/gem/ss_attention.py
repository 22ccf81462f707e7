"""Self-self attention, the one new operation of GEM (Bousselham et al., CVPR 2024).

Each of a block's own q, k and v projections attends to itself (q-q, k-k, v-v): the
tokens are L2-normalised, clustered by `iters` rounds of softmax(p pᵀ·τ) p with
re-normalisation, and then used as queries and keys over the values v. The three results
are averaged. This is the function of the authors' `SelfSelfAttention.forward` (GEM path
only), written with fused scaled-dot-product attention, the three branches batched into
one call, and as few full-size elementwise passes as the maths allows (on a CPU those
passes cost a third as much as the attention itself).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F


def adaptive_inverse_temperature(block_input: torch.Tensor, head_dim: int) -> torch.Tensor:
    """GEM's adaptive τ: mean token norm of ln_1(x) (full width, per image) · head_dim^-0.5.

    block_input: [B, N, C], the block's ln_1 output. Returns [B, 1, 1, 1].
    """
    mean_norm = block_input.float().norm(dim=-1).mean(dim=-1)
    return (mean_norm * head_dim**-0.5).view(-1, 1, 1, 1)


def _scale_of(inv_temp: Union[float, torch.Tensor]) -> tuple[float, Optional[torch.Tensor]]:
    """SDPA takes one float scale. A per-image τ on the CPU with one image is read out as a
    float; otherwise (a batch, or a GPU, where reading it would stall the stream) it is
    multiplied into the queries."""
    if not isinstance(inv_temp, torch.Tensor):
        return float(inv_temp), None
    # Exported to ONNX, τ must stay a tensor of the graph, not a constant of the trace.
    if inv_temp.numel() == 1 and inv_temp.device.type == "cpu" and not _exporting():
        return float(inv_temp), None
    return 1.0, inv_temp.repeat(3, 1, 1, 1)


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


def _normalize_(p: torch.Tensor) -> None:
    """F.normalize(p, dim=-1) in place."""
    p.div_(torch.linalg.vector_norm(p, dim=-1, keepdim=True).clamp_min_(1e-12))


def self_self_attention(
    qkv: torch.Tensor, iters: int, inv_temp: Union[float, torch.Tensor]
) -> torch.Tensor:
    """The qkv ensemble of self-self attention, per head.

    qkv: [3, B, H, N, d], the block's q, k and v stacked (contiguous). inv_temp: a float or
    a [B, 1, 1, 1] tensor. Returns [B, H, N, d] (heads not merged, no output projection).
    """
    if qkv.dtype in (torch.float16, torch.bfloat16):
        return _low_precision_self_self_attention(qkv, iters, inv_temp)
    _, batch, heads, tokens, dim = qkv.shape
    scale, temp = _scale_of(inv_temp)
    # The three branches as one batch of 3B; normalising makes the copy that leaves qkv intact.
    p = F.normalize(qkv.flatten(0, 1), dim=-1)
    for _ in range(iters):
        p = F.scaled_dot_product_attention(p if temp is None else p * temp, p, p, scale=scale)
        _normalize_(p)  # in place: fresh buffers of this size cost page faults on a CPU
    # The shared values, broadcast to the three branches without a copy when B == 1.
    values = qkv[2].unsqueeze(0).expand(3, -1, -1, -1, -1).reshape(3 * batch, heads, tokens, dim)
    out = F.scaled_dot_product_attention(p if temp is None else p * temp, p, values, scale=scale)
    branches = out.view(3, batch, heads, tokens, dim)
    return branches[0].add_(branches[1]).add_(branches[2]).div_(3)  # the mean, in place


def _low_precision_self_self_attention(
    qkv: torch.Tensor, iters: int, inv_temp: Union[float, torch.Tensor]
) -> torch.Tensor:
    """self_self_attention for fp16/bf16 qkv (autocast): the L2 normalisations and the
    temperature in fp32, the attention products in the low precision. In bf16 the
    normalised vectors lose the small differences the sharpened softmax acts on: on the scenes
    benchmark (100 scenes, scene CLIP) bf16 pointed 1.0 point under fp32 with them in bf16,
    0.5 with them in fp32 (test/test_precision_accuracy.py)."""
    low = qkv.dtype
    _, batch, heads, tokens, dim = qkv.shape
    scale, temp = _scale_of(inv_temp)

    def operands(p):  # (queries, keys) in the low precision, the temperature applied in fp32
        keys = p.to(low)
        return (keys if temp is None else (p * temp).to(low)), keys

    p = F.normalize(qkv.flatten(0, 1).float(), dim=-1)
    for _ in range(iters):
        queries, keys = operands(p)
        p = F.normalize(
            F.scaled_dot_product_attention(queries, keys, keys, scale=scale).float(), dim=-1
        )
    queries, keys = operands(p)
    values = qkv[2].unsqueeze(0).expand(3, -1, -1, -1, -1).reshape(3 * batch, heads, tokens, dim)
    out = F.scaled_dot_product_attention(queries, keys, values, scale=scale)
    branches = out.view(3, batch, heads, tokens, dim)
    return branches[0].add_(branches[1]).add_(branches[2]).div_(3)
