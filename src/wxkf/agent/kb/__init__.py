"""The knowledge base: ingest documents, embed and index their chunks, and search them.

    from wxkf.agent.kb import KnowledgeBase

    kb = KnowledgeBase.from_settings(database, settings)
    passages = await kb.search("买错尺码了能换吗", k=3)   # [] when nothing relevant is known

Public surface: `KnowledgeBase` (`add_documents`, `search`, `list_documents`, `remove`, `reindex`,
`status`), `Passage`, the `Embedder` seam with `E5Embedder` (the offline default), `USEEmbedder`,
`FusedEmbedder` (both in one vector), `HashingEmbedder` and `OpenAIEmbedder`, `make_embedder`, and `load_sample` for the bundled demo FAQ.
"""

from typing import TYPE_CHECKING

from wxkf._lazy import lazy_exports

if TYPE_CHECKING:
    from wxkf.agent.kb.bundled import SAMPLE_DIR, load_sample
    from wxkf.agent.kb.embedders import (
        CorpusStats,
        E5Embedder,
        Embedder,
        EmbeddingError,
        FusedEmbedder,
        HashingEmbedder,
        OpenAIEmbedder,
        USEEmbedder,
        make_embedder,
    )
    from wxkf.agent.kb.loaders import UnsupportedDocument
    from wxkf.agent.kb.store import (
        AddResult,
        DocumentInfo,
        KnowledgeBase,
        KnowledgeBaseError,
        KnowledgeBaseStale,
        KnowledgeBaseStatus,
        Passage,
        SourceDocument,
    )

# Names load on first use (PEP 562): `import wxkf.agent.kb.cli` for `wxkf --help` must not pull in
# the store's psycopg and its pool.
_SOURCES = {
    "SAMPLE_DIR": "bundled",
    "load_sample": "bundled",
    "CorpusStats": "embedders",
    "E5Embedder": "embedders",
    "Embedder": "embedders",
    "USEEmbedder": "embedders",
    "EmbeddingError": "embedders",
    "FusedEmbedder": "embedders",
    "HashingEmbedder": "embedders",
    "OpenAIEmbedder": "embedders",
    "make_embedder": "embedders",
    "UnsupportedDocument": "loaders",
    "AddResult": "store",
    "DocumentInfo": "store",
    "KnowledgeBase": "store",
    "KnowledgeBaseError": "store",
    "KnowledgeBaseStale": "store",
    "KnowledgeBaseStatus": "store",
    "Passage": "store",
    "SourceDocument": "store",
}


__getattr__ = lazy_exports(__name__, _SOURCES)


__all__ = [
    "SAMPLE_DIR",
    "AddResult",
    "CorpusStats",
    "DocumentInfo",
    "E5Embedder",
    "Embedder",
    "EmbeddingError",
    "FusedEmbedder",
    "HashingEmbedder",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "KnowledgeBaseStale",
    "KnowledgeBaseStatus",
    "OpenAIEmbedder",
    "Passage",
    "SourceDocument",
    "USEEmbedder",
    "UnsupportedDocument",
    "load_sample",
    "make_embedder",
]
