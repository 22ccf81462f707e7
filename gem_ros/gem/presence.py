"""Is a queried thing in the image at all? The presence decision of each query.

GEM's heatmaps are min-max normalised per query, so they always point somewhere; the dense
map says where, not whether. CLIP's image embedding (its class token, what CLIP was trained
to match with captions) says whether: each query competes with a few background prompts
("wall", "floor", ...) in a softmax of CLIP's scaled similarities, and its share is its
confidence. Each query competes only with the background, never with the other queries, so
a query's confidence does not change with what else is asked, and one query alone works.

Chosen by measurement (the scene benchmark, `gem-ros eval scenes --protocol presence`):
against the raw peak cosine (AUROC 0.70) and a softmax over the queries alone (which cannot
say "none of these": 0.93 on scenes with empty images), this rule separates present from
absent queries at AUROC >= 0.998 on normal, small-object and empty scenes.
"""

from __future__ import annotations

from typing import Sequence

import torch


def confidences(
    image: torch.Tensor,
    text: torch.Tensor,
    background: torch.Tensor,
    logit_scale: float,
    queries: Sequence[str],
    background_names: Sequence[str],
) -> torch.Tensor:
    """[P] presence confidences in [0, 1].

    image: [D] normalised image embedding; text: [P, D] the queries' embeddings; background:
    [B, D] the background prompts'. A background prompt equal to a query (case-insensitive)
    is left out of that query's competitors.
    """
    z_query = logit_scale * (text @ image)  # [P]
    z_background = (logit_scale * (background @ image)).expand(len(queries), -1)  # [P, B]
    same = torch.tensor(
        [[q.lower() == b.lower() for b in background_names] for q in queries],
        device=z_background.device,
    )
    rivals = torch.logsumexp(z_background.masked_fill(same, -torch.inf), dim=1)  # [P]
    # softmax share of the query among itself and its rivals; 1 when it has none
    return torch.sigmoid(z_query - rivals)
