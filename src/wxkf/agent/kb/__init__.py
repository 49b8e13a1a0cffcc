"""The knowledge base: ingest documents, embed and index their chunks, and search them.

    from wxkf.agent.kb import KnowledgeBase, make_embedder

    kb = KnowledgeBase(database, make_embedder(settings))
    passages = await kb.search("买错尺码了能换吗", k=3)   # [] when nothing relevant is known

Public surface: `KnowledgeBase` (`add_documents`, `search`, `list_documents`, `remove`), `Passage`,
the `Embedder` seam with `HashingEmbedder` (offline default) and `OpenAIEmbedder`, `make_embedder`,
and `load_sample` for the bundled demo FAQ.
"""

from wxkf.agent.kb.bundled import SAMPLE_DIR, load_sample
from wxkf.agent.kb.embedders import (
    CorpusStats,
    Embedder,
    EmbeddingError,
    HashingEmbedder,
    OpenAIEmbedder,
    make_embedder,
)
from wxkf.agent.kb.loaders import UnsupportedDocument
from wxkf.agent.kb.store import (
    AddResult,
    DocumentInfo,
    KnowledgeBase,
    KnowledgeBaseError,
    Passage,
    SourceDocument,
)

__all__ = [
    "SAMPLE_DIR",
    "AddResult",
    "CorpusStats",
    "DocumentInfo",
    "Embedder",
    "EmbeddingError",
    "HashingEmbedder",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "OpenAIEmbedder",
    "Passage",
    "SourceDocument",
    "UnsupportedDocument",
    "load_sample",
    "make_embedder",
]
