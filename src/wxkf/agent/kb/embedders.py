"""The embedder seam: text → unit vectors, with a version that changes when the vectors would.

Two implementations:

- `HashingEmbedder` (the default, offline, no key): the terms of `wxkf.agent.kb.text` hashed with
  signed stable hashing into `dim` buckets, weighted by IDF over the knowledge base, L2-normalised.
  The IDF comes from `CorpusStats` (document frequencies kept in PostgreSQL), and its generation is
  part of the version, so a changed corpus re-embeds what was embedded with the old weights.
- `OpenAIEmbedder`: any OpenAI-compatible `/embeddings` endpoint through the `openai` SDK, used when
  `EMBEDDING_BASE_URL` and `EMBEDDING_MODEL` are set.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from wxkf.agent.kb.text import is_cjk, term_counts
from wxkf.config import Settings


class EmbeddingError(Exception):
    """The embedding endpoint failed; the message says what to check."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of one dimension; `version` changes whenever the vectors would."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def min_similarity(self) -> float:
        """Cosine similarity below which a passage is unrelated to a question, for this model."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None:
        """Release connections (the HTTP client of a remote embedder)."""
        ...


@dataclass(frozen=True)
class CorpusStats:
    """Document frequencies over the knowledge base's chunks (possibly only for some terms)."""

    n_chunks: int = 0
    df: Mapping[str, int] = field(default_factory=dict)
    generation: int = 0

    def idf(self, term: str) -> float:
        # Smoothed IDF: never zero, so a term present everywhere still counts a little.
        return math.log((self.n_chunks + 1) / (self.df.get(term, 0) + 1)) + 1.0


@runtime_checkable
class CorpusWeighted(Protocol):
    """An embedder whose vectors depend on corpus statistics (IDF)."""

    def with_stats(self, stats: CorpusStats) -> Embedder: ...


@lru_cache(maxsize=1 << 18)
def _bucket(term: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(term.encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return (value >> 1) % dim, (1.0 if value & 1 else -1.0)


class HashingEmbedder:
    """Offline, Chinese-capable: CJK unigrams + bigrams and Latin words, signed hashing, IDF."""

    ALGORITHM = "hashing-3"  # bump when terms, weights or hashing change: stored vectors re-embed
    UNIGRAM_WEIGHT = 1.5  # paraphrases share characters (缺货/断货, 门店/实体店) more often than words

    def __init__(self, dim: int = 1024, stats: CorpusStats | None = None) -> None:
        self._dim = dim
        self.stats = stats or CorpusStats()

    @property
    def name(self) -> str:
        return "hashing"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def version(self) -> str:
        return f"{self.ALGORITHM}:d{self._dim}:g{self.stats.generation}"

    @property
    def min_similarity(self) -> float:
        # Calibrated on the sample FAQ: unrelated questions stay below ~0.15 (benchmarks/README.md).
        return 0.16

    def with_stats(self, stats: CorpusStats) -> HashingEmbedder:
        return HashingEmbedder(self._dim, stats)

    def embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self._dim
        for term, count in term_counts(text).items():
            weight = (1.0 + math.log(count)) * self.stats.idf(term)
            if len(term) == 1 and is_cjk(term):
                weight *= self.UNIGRAM_WEIGHT
            index, sign = _bucket(term, self._dim)
            vector[index] += sign * weight
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(t) for t in texts]

    async def aclose(self) -> None:
        return None


class OpenAIEmbedder:
    """An OpenAI-compatible `/embeddings` endpoint (OpenAI, DashScope, SiliconFlow, a local server …)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        dimensions: int | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        batch_size: int = 64,
    ) -> None:
        from openai import AsyncOpenAI

        self._client = AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries
        )
        self._host = urlsplit(base_url).netloc or base_url
        self._model = model
        self._dimensions = dimensions
        self._dim = dimensions or 0
        self._batch_size = batch_size

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def dim(self) -> int:
        """The vector size; 0 until the first response when `EMBEDDING_DIMENSIONS` is not set."""
        return self._dim

    @property
    def version(self) -> str:
        return f"openai:{self._host}:{self._model}:d{self._dimensions or 'native'}"

    @property
    def min_similarity(self) -> float:
        return 0.35

    async def aclose(self) -> None:
        await self._client.close()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import openai

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            try:
                if self._dimensions:
                    response = await self._client.embeddings.create(
                        model=self._model, input=batch, dimensions=self._dimensions
                    )
                else:
                    response = await self._client.embeddings.create(model=self._model, input=batch)
            except openai.AuthenticationError as exc:
                raise EmbeddingError(
                    "向量接口拒绝了密钥（401）：检查 EMBEDDING_API_KEY 与账号状态 / the embeddings endpoint "
                    "rejected the key: check EMBEDDING_API_KEY and the account"
                ) from exc
            except openai.OpenAIError as exc:
                raise EmbeddingError(
                    f"向量接口调用失败：检查 EMBEDDING_BASE_URL 与 EMBEDDING_MODEL / the embeddings endpoint "
                    f"failed: {type(exc).__name__}"
                ) from exc
            ordered = sorted(response.data, key=lambda d: d.index)
            if len(ordered) != len(batch):
                raise EmbeddingError(
                    f"向量接口返回了 {len(ordered)} 个向量，应为 {len(batch)} 个 / the endpoint returned "
                    f"{len(ordered)} vectors for {len(batch)} texts"
                )
            vectors.extend(list(d.embedding) for d in ordered)
        if vectors:
            self._dim = len(vectors[0])
        return [_normalised(v) for v in vectors]


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


def make_embedder(settings: Settings) -> Embedder:
    """The OpenAI-compatible embedder when `EMBEDDING_*` is configured, else the offline one."""
    if settings.embedding_base_url and settings.embedding_model:
        key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else "none"
        return OpenAIEmbedder(
            base_url=settings.embedding_base_url,
            api_key=key,
            model=settings.embedding_model,
            dimensions=settings.embedding_dimensions,
            timeout=settings.embedding_timeout_seconds,
        )
    return HashingEmbedder()
