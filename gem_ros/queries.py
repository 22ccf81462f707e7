"""Query text: parsing and the one check every query meets, whatever its source (API, CLI,
topic, service, parameter). No torch here, so that the CLI's commands (`gem-ros queries`,
`gem-ros bag`'s refusals) answer without loading it; gem_ros.gem.text re-exports them."""

from __future__ import annotations

import re
from typing import Iterable

# Far above any real phrase, far below what would make the tokenizer slow; the token check
# (gem_ros.gem.text) is the real limit.
MAX_QUERY_CHARS = 300
# Queries asked at once. Each costs a full-size mask per frame (307 KB at 640x480) and a row
# of text embeddings; a few dozen covers any task, thousands would take gigabytes a frame.
MAX_QUERIES = 32
_SEPARATORS = re.compile(r"[,;]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class QueryError(ValueError):
    """A text query the model cannot take (empty, blank, too long)."""


def parse_queries(text: str) -> list[str]:
    """'red mug; person, , person' -> ['red mug', 'person']: split on ',' and ';', trim,
    drop empties and duplicates, keep the first occurrence's order."""
    return list(dict.fromkeys(q.strip() for q in _SEPARATORS.split(text) if q.strip()))


def check_queries(queries: Iterable[str]) -> list[str]:
    """Trimmed, de-duplicated queries, or QueryError naming the offending one."""
    queries = list(queries)
    if len(queries) > MAX_QUERIES and len(set(queries)) > MAX_QUERIES:
        raise QueryError(f"{len(queries)} queries at once; at most {MAX_QUERIES}")
    out: list[str] = []
    for q in queries:
        if not isinstance(q, str):
            raise QueryError(f"a query must be a string, got {type(q).__name__}")
        q = _CONTROL.sub(" ", q).strip()
        if not q:
            raise QueryError("empty or blank query")
        if len(q) > MAX_QUERY_CHARS:
            raise QueryError(
                f"query of {len(q)} characters is too long (at most "
                f"{MAX_QUERY_CHARS}): {q[:40]!r}..."
            )
        if q not in out:
            out.append(q)
    if len(out) > MAX_QUERIES:
        raise QueryError(f"{len(out)} different queries at once; at most {MAX_QUERIES}")
    return out
