"""media_in: media customers send (downloaded with media/get), the PostgreSQL media store, and the
per-account settings and knowledge-base collections that go with several kf accounts.

Revision ID: media_in_0001_inbound
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "media_in_0001_inbound"
down_revision = "0001_core"
branch_labels = ("media_in",)
depends_on = ("agent_0001_kb",)  # kb_documents gets a collection column


def upgrade() -> None:
    # wecom-api §3/§8: an image, voice, video or file arrives as a media_id valid for 3 days; the
    # bytes are downloaded with media/get into the media store and outlive it. One row per message.
    op.execute(
        """
        CREATE TABLE media_inbound (
            open_kfid       text        NOT NULL,
            msgid           text        NOT NULL,
            external_userid text        NOT NULL,
            kind            text        NOT NULL,
            media_id        text        NOT NULL,
            sent_at         timestamptz NOT NULL,
            status          text        NOT NULL DEFAULT 'pending',
            attempts        integer     NOT NULL DEFAULT 0,
            errcode         integer,
            error           text,
            store           text,
            sha256          text,
            size            bigint,
            content_type    text,
            filename        text,
            transcript      text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            stored_at       timestamptz,
            PRIMARY KEY (open_kfid, msgid),
            CONSTRAINT ck_media_inbound_status CHECK (status IN ('pending', 'retrying', 'stored', 'failed'))
        )
        """
    )
    op.execute("CREATE INDEX ix_media_inbound_created ON media_inbound (created_at)")
    # The PostgreSQL implementation of the media store: content-addressed, so the same bytes are kept once.
    op.execute(
        """
        CREATE TABLE media_blobs (
            sha256     text        PRIMARY KEY,
            data       bytea       NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # wecom-api §8: an uploaded media_id lives 3 days; the same bytes (by SHA-256) are uploaded again
    # only after that, less a margin.
    op.execute(
        """
        CREATE TABLE media_uploads (
            sha256      text        NOT NULL,
            kind        text        NOT NULL,
            media_id    text        NOT NULL,
            uploaded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (sha256, kind)
        )
        """
    )
    # Several kf accounts in one deployment: each account's own settings (persona, welcome, session
    # policy, what to say when the knowledge base is silent, its KB collection); unset keys fall
    # back to the global settings.
    op.execute(
        """
        CREATE TABLE kf_account_settings (
            open_kfid  text        PRIMARY KEY,
            settings   jsonb       NOT NULL DEFAULT '{}',
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # A knowledge-base collection per account, or the shared one ('').
    op.execute("ALTER TABLE kb_documents ADD COLUMN collection text NOT NULL DEFAULT ''")
    # Images and files a knowledge-base entry references from its Markdown; sent with the answer.
    op.execute(
        """
        CREATE TABLE kb_attachments (
            id           bigserial PRIMARY KEY,
            document_id  bigint    NOT NULL REFERENCES kb_documents (id) ON DELETE CASCADE,
            ordinal      integer   NOT NULL,
            ref          text      NOT NULL,
            kind         text      NOT NULL,
            filename     text      NOT NULL,
            content_type text      NOT NULL,
            sha256       text      NOT NULL,
            size         bigint    NOT NULL,
            UNIQUE (document_id, ordinal, ref)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE kb_attachments")
    op.execute("ALTER TABLE kb_documents DROP COLUMN collection")
    for table in ("kf_account_settings", "media_uploads", "media_blobs", "media_inbound"):
        op.execute(f"DROP TABLE {table}")
