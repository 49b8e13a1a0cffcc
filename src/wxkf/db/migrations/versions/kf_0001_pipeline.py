"""kf: the conversation pipeline — callbacks, sync cursors, inbound ledger, conversations, outbox.

Revision ID: kf_0001_pipeline
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "kf_0001_pipeline"
down_revision = "0001_core"
branch_labels = ("kf",)
depends_on = None


def upgrade() -> None:
    # wecom-api §1.7/§2: WeCom repeats a callback it thinks failed; (OpenKfId, Token, CreateTime) is
    # the same in every repeat, so it is the dedupe key. `deliveries` counts the repeats.
    op.execute(
        """
        CREATE TABLE kf_callback_events (
            id            bigserial   PRIMARY KEY,
            open_kfid     text        NOT NULL,
            token         text        NOT NULL,
            create_time   bigint      NOT NULL,
            known_account boolean     NOT NULL,
            deliveries    integer     NOT NULL DEFAULT 1,
            received_at   timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_kf_callback_events_key UNIQUE (open_kfid, token, create_time)
        )
        """
    )
    op.execute("CREATE INDEX ix_kf_callback_events_latest ON kf_callback_events (open_kfid, id DESC)")
    # wecom-api §3: next_cursor "强烈建议入库保存"; committed with the ledger rows it covers.
    op.execute(
        """
        CREATE TABLE kf_sync_cursors (
            open_kfid  text        PRIMARY KEY,
            cursor     text        NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE kf_inbound (
            id              bigserial   PRIMARY KEY,
            open_kfid       text        NOT NULL,
            msgid           text        NOT NULL,
            external_userid text        NOT NULL,
            origin          integer     NOT NULL,
            msgtype         text        NOT NULL,
            event_type      text,
            servicer_userid text,
            send_time       timestamptz NOT NULL,
            body            jsonb       NOT NULL,
            recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            status          text        NOT NULL DEFAULT 'pending',
            reason          text,
            processed_at    timestamptz,
            CONSTRAINT uq_kf_inbound_msgid UNIQUE (open_kfid, msgid),
            CONSTRAINT ck_kf_inbound_status
                CHECK (status IN ('pending', 'answered', 'skipped', 'handled', 'recalled'))
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_kf_inbound_pending ON kf_inbound (open_kfid, external_userid, id) "
        "WHERE status = 'pending'"
    )
    # One row per customer of a kf account: the 48 h / 5 budget (wecom-api §4), the pause after a
    # servicer wrote, and a short-lived cache of service_state (wecom-api §6).
    op.execute(
        """
        CREATE TABLE kf_conversations (
            open_kfid         text        NOT NULL,
            external_userid   text        NOT NULL,
            window_started_at timestamptz,
            replies_used      integer     NOT NULL DEFAULT 0,
            paused_until      timestamptz,
            service_state     integer,
            servicer_userid   text,
            state_checked_at  timestamptz,
            updated_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (open_kfid, external_userid)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE kf_outbox (
            id              bigserial   PRIMARY KEY,
            open_kfid       text        NOT NULL,
            external_userid text        NOT NULL,
            msgid           text        NOT NULL,
            kind            text        NOT NULL,
            msgtype         text        NOT NULL,
            body            jsonb       NOT NULL,
            code            text,
            source_msgid    text,
            part            integer     NOT NULL DEFAULT 1,
            status          text        NOT NULL DEFAULT 'pending',
            attempts        integer     NOT NULL DEFAULT 0,
            errcode         integer,
            error           text,
            fail_type       integer,
            created_at      timestamptz NOT NULL DEFAULT now(),
            sent_at         timestamptz,
            CONSTRAINT uq_kf_outbox_msgid UNIQUE (open_kfid, msgid),
            CONSTRAINT ck_kf_outbox_status CHECK (status IN ('pending', 'sent', 'failed'))
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_kf_outbox_pending ON kf_outbox (open_kfid, external_userid, id) "
        "WHERE status = 'pending'"
    )
    # Counters the ops metrics export reads (e.g. kf.errcode.95018, kf.skipped.human_serving).
    op.execute(
        """
        CREATE TABLE kf_counters (
            name  text   PRIMARY KEY,
            value bigint NOT NULL DEFAULT 0
        )
        """
    )


def downgrade() -> None:
    for table in ("kf_counters", "kf_outbox", "kf_conversations", "kf_inbound", "kf_sync_cursors"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP TABLE kf_callback_events")
