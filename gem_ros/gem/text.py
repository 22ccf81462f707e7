"""Text queries: parsing, validation and cached CLIP text embeddings."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

# The query checks are torch-free (gem_ros/queries.py): the CLI uses them without torch.
from ..queries import (  # noqa: F401 - re-exported
    MAX_QUERIES,
    MAX_QUERY_CHARS,
    QueryError,
    check_queries,
    parse_queries,
)
from ..settings import DEFAULT_TEMPLATE  # noqa: F401 - re-exported


def check_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    templates = (templates,) if isinstance(templates, str) else tuple(templates)
    if not templates:
        raise ValueError("at least one prompt template is needed")
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"a prompt template needs exactly one '{{}}': {t!r}")
    return templates


class TextEmbeddingCache:
    """L2-normalised text embeddings per query, computed once per (model, templates, query).

    With several templates, each prompt's embedding is normalised, the mean taken and
    normalised again (CLIP's prompt ensembling).
    """

    def __init__(
        self,
        encode_text: Callable[[torch.Tensor], torch.Tensor],
        tokenizer,
        context_length: int,
        device: torch.device,
        max_entries: int = 4096,
    ):
        self._encode_text = encode_text
        self._tokenizer = tokenizer
        self._context_length = context_length
        self._device = device
        self._max_entries = max_entries
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._last: tuple[tuple, torch.Tensor] | None = None
        # One caller encodes at a time (the frame pipeline, a question, the map): another's
        # insertions would evict entries between this caller's insert and its read. check()
        # only reads one entry (atomic) and never waits on an encoding.
        self._lock = threading.Lock()
        self.encoded = 0  # prompts sent through the text tower, for tests and stats

    def check(self, queries: Sequence[str], templates: tuple[str, ...]) -> None:
        """QueryError if a prompt of `queries` is longer than the text encoder's context.
        Tokenizes only (no text tower): cheap enough for a caller that must not wait."""
        for q in queries:
            if (templates, q) not in self._cache:
                for t in templates:
                    self._check_length(t.format(q))

    def _check_length(self, prompt: str) -> None:
        encode = getattr(self._tokenizer, "encode", None)
        if encode is None:
            return
        n = len(encode(prompt)) + 2  # start and end tokens
        if n > self._context_length:
            raise QueryError(
                f"prompt {prompt[:40]!r}... is {n} tokens; the text encoder "
                f"takes at most {self._context_length}"
            )

    def __call__(self, queries: Sequence[str], templates: tuple[str, ...]) -> torch.Tensor:
        """[P, D] float32 embeddings of `queries` (already checked), in order."""
        if not queries:
            raise QueryError("no queries")
        with self._lock:
            return self._embeddings(queries, templates)

    def _embeddings(self, queries: Sequence[str], templates: tuple[str, ...]) -> torch.Tensor:
        key = (templates, tuple(queries))
        if self._last is not None and self._last[0] == key:
            return self._last[1]  # the usual case: the same queries as the last frame
        missing = list(dict.fromkeys(q for q in queries if (templates, q) not in self._cache))
        # At most MAX_QUERIES queries' prompts through the text tower at once: cameras with
        # queries of their own ask for up to 8 x MAX_QUERIES in one frame cycle.
        for at in range(0, len(missing), MAX_QUERIES):
            chunk = missing[at : at + MAX_QUERIES]
            prompts = [t.format(q) for q in chunk for t in templates]
            for p in prompts:
                self._check_length(p)
            tokens = self._tokenizer(prompts).to(self._device)
            emb = F.normalize(self._encode_text(tokens).float(), dim=-1)
            emb = F.normalize(emb.view(len(chunk), len(templates), -1).mean(1), dim=-1)
            self.encoded += len(prompts)
            for q, e in zip(chunk, emb):
                self._cache[(templates, q)] = e
        for q in queries:
            self._cache.move_to_end((templates, q))
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        out = torch.stack([self._cache[(templates, q)] for q in queries])
        self._last = (key, out)
        return out
