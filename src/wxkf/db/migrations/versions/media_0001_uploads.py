"""media: files kept by content hash, and their WeCom uploads (a media_id lives 3 days, wecom-api §8).

Revision ID: media_0001_uploads
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "media_0001_uploads"
down_revision = "0001_core"
branch_labels = ("media",)
depends_on = None


def upgrade() -> None:
    # The bytes stay here so a media_id can be renewed by uploading them again after 3 days.
    op.execute(
        """
        CREATE TABLE media_files (
            digest       text        PRIMARY KEY,
            filename     text        NOT NULL,
            content_type text        NOT NULL,
            size         integer     NOT NULL,
            data         bytea       NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE media_uploads (
            digest      text        NOT NULL REFERENCES media_files (digest) ON DELETE CASCADE,
            kind        text        NOT NULL CHECK (kind IN ('image', 'voice', 'video', 'file')),
            media_id    text        NOT NULL,
            uploaded_at timestamptz NOT NULL,
            expires_at  timestamptz NOT NULL,
            PRIMARY KEY (digest, kind)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE media_uploads")
    op.execute("DROP TABLE media_files")
