"""Self-self attention, the one new operation of GEM (Bousselham et al., CVPR 2024).

Each of a block's own q, k and v projections attends to itself (q-q, k-k, v-v): the
tokens are L2-normalised, clustered by `iters` rounds of softmax(p pᵀ·τ) p with
re-normalisation, and then used as queries and keys over the values v. The three results
are averaged. This is the function of the authors' `SelfSelfAttention.forward` (GEM path
only), written with fused scaled-dot-product attention and the three branches batched.
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F


def adaptive_inverse_temperature(block_input: torch.Tensor, head_dim: int) -> torch.Tensor:
    """GEM's adaptive τ: mean token norm of ln_1(x) (full width, per image) · head_dim^-0.5.

    block_input: [B, N, C], the block's ln_1 output. Returns [B, 1, 1, 1].
    """
    mean_norm = block_input.float().norm(dim=-1).mean(dim=-1)
    return (mean_norm * head_dim ** -0.5).view(-1, 1, 1, 1)


def self_self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    iters: int,
    inv_temp: Union[float, torch.Tensor],
) -> torch.Tensor:
    """The qkv ensemble of self-self attention, per head.

    q, k, v: [B, H, N, d]. inv_temp: a float or a [B, 1, 1, 1] tensor. Returns [B, H, N, d]
    (heads not yet merged, output projection not applied).
    """
    batch = q.shape[0]
    # One attention call serves the three branches: stack them along the batch axis.
    p = torch.cat([v, k, q], dim=0)
    if isinstance(inv_temp, torch.Tensor):
        inv_temp = inv_temp.to(p.dtype).repeat(3, 1, 1, 1)
    for _ in range(iters):
        p = F.normalize(p, dim=-1)
        # softmax(p pᵀ·τ) p: τ goes into the query so the fused kernel runs with scale 1.
        p = F.scaled_dot_product_attention(p * inv_temp, p, p, scale=1.0)
    p = F.normalize(p, dim=-1)
    values = v.repeat(3, 1, 1, 1)
    out = F.scaled_dot_product_attention(p * inv_temp, p, values, scale=1.0)
    return out.view(3, batch, *out.shape[1:]).mean(dim=0)
