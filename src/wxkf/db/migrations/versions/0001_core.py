"""core: pgvector and the shared WeCom access_token cache.

Revision ID: 0001_core
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001_core"
down_revision = None
branch_labels = ("core",)
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # spec §7.4: one token per (corp, secret); the secret itself is never stored, only its digest.
    op.execute(
        """
        CREATE TABLE wecom_access_tokens (
            corp_id       text        NOT NULL,
            secret_digest text        NOT NULL,
            access_token  text        NOT NULL,
            expires_at    timestamptz NOT NULL,
            refreshed_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (corp_id, secret_digest)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE wecom_access_tokens")
