"""pgvector values as psycopg sends them: a text literal that `::vector` parses in C."""

from __future__ import annotations

import math
from collections.abc import Sequence


def vector_literal(vector: Sequence[float]) -> str:
    """`[0.1,0.2,…]` with 7 significant digits (a float32's precision); NaN is refused, as pgvector
    would refuse it mid-statement."""
    if any(math.isnan(v) for v in vector):
        raise ValueError("向量含 NaN / the embedder returned NaN")
    return "[" + ",".join(f"{v:.7g}" for v in vector) + "]"
