"""The bundled sample knowledge base: the FAQ of 青禾生活馆, a fictional online shop, for the demo."""

from __future__ import annotations

from pathlib import Path

from wxkf.agent.kb.store import AddResult, KnowledgeBase, SourceDocument

SAMPLE_DIR = Path(__file__).parent / "sample"


def sample_documents() -> list[SourceDocument]:
    # A stable source name ("sample/…") rather than the install path, so answers cite the same
    # source on every machine and re-loading after an upgrade replaces rather than duplicates.
    return [
        SourceDocument.from_path(path, source=f"sample/{path.name}")
        for path in sorted(SAMPLE_DIR.glob("*.md"))
    ]


async def load_sample(kb: KnowledgeBase) -> list[AddResult]:
    """Load the sample FAQ; a second call changes nothing."""
    return await kb.add_documents(sample_documents())
