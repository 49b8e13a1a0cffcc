"""agent: the knowledge base — documents, chunks (pgvector + lexical terms), corpus statistics.

Revision ID: agent_0001_kb
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "agent_0001_kb"
down_revision = "0001_core"
branch_labels = ("agent",)
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE kb_documents (
            id           bigserial   PRIMARY KEY,
            source       text        NOT NULL UNIQUE,
            format       text        NOT NULL,
            content_hash text        NOT NULL,
            added_at     timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_kb_documents_content_hash ON kb_documents (content_hash)")
    # The vector column has no fixed dimension so another embedder (another model, another dim) can
    # take over; HNSW needs a fixed dimension, hence one partial expression index per dimension in use.
    # 1024 is the offline hashing embedder's; the knowledge base creates others when it meets them.
    op.execute(
        """
        CREATE TABLE kb_chunks (
            id               bigserial PRIMARY KEY,
            document_id      bigint    NOT NULL REFERENCES kb_documents (id) ON DELETE CASCADE,
            ordinal          integer   NOT NULL,
            heading          text      NOT NULL DEFAULT '',
            text             text      NOT NULL,
            terms            text[]    NOT NULL,
            n_terms          integer   NOT NULL,
            embedding        vector,
            embedder_version text,
            UNIQUE (document_id, ordinal)
        )
        """
    )
    op.execute("CREATE INDEX ix_kb_chunks_terms ON kb_chunks USING gin (terms)")
    op.execute(
        "CREATE INDEX ix_kb_chunks_hnsw_1024 ON kb_chunks "
        "USING hnsw ((embedding::vector(1024)) vector_cosine_ops) WHERE vector_dims(embedding) = 1024"
    )
    # Document frequencies over all chunks, shared by every process (IDF for both retrieval halves).
    op.execute("CREATE TABLE kb_terms (term text PRIMARY KEY, df integer NOT NULL)")
    # One row: `generation` changes with every change of the corpus; `embedder_version` is the
    # version every chunk was last embedded with, so a reader knows in one lookup whether it may search.
    op.execute(
        """
        CREATE TABLE kb_state (
            id               smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
            generation       bigint   NOT NULL DEFAULT 0,
            n_chunks         integer  NOT NULL DEFAULT 0,
            avg_terms        double precision NOT NULL DEFAULT 0,
            embedder_version text
        )
        """
    )
    op.execute("INSERT INTO kb_state (id) VALUES (1)")


def downgrade() -> None:
    op.execute("DROP TABLE kb_state")
    op.execute("DROP TABLE kb_terms")
    op.execute("DROP TABLE kb_chunks")
    op.execute("DROP TABLE kb_documents")
