"""console: staff users, sessions' signing key, audit log, takeovers, unanswered questions, live changes.

Revision ID: console_0001_console
Revises: 0001_core (depends on the kf pipeline's and the knowledge base's tables)
"""

from __future__ import annotations

from alembic import op

revision = "console_0001_console"
down_revision = "0001_core"
branch_labels = ("console",)
depends_on = ("kf_0001_pipeline", "agent_0001_kb")

# What the console watches: a change to any of these rows is a change to one conversation. A new
# customer message also upserts its kf_conversations row (the budget window) in the same transaction,
# so its kf_inbound insert needs no call of its own: the sync's busiest write calls the function once
# per message, not twice.
WATCHED = {
    "kf_inbound_console_insert": "AFTER INSERT ON kf_inbound FOR EACH ROW WHEN (NEW.origin <> 3)",
    "kf_inbound_console_status": "AFTER UPDATE OF status ON kf_inbound FOR EACH ROW",
    "kf_outbox_console_notify": "AFTER INSERT OR UPDATE OF status ON kf_outbox FOR EACH ROW",
    "kf_conversations_console_notify": "AFTER INSERT OR UPDATE ON kf_conversations FOR EACH ROW",
    "console_takeovers_console_notify": "AFTER INSERT OR DELETE ON console_takeovers FOR EACH ROW",
}


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE console_users (
            id             bigserial   PRIMARY KEY,
            username       text        NOT NULL,
            role           text        NOT NULL,
            password_hash  text        NOT NULL,
            disabled       boolean     NOT NULL DEFAULT false,
            failed_logins  integer     NOT NULL DEFAULT 0,
            locked_until   timestamptz,
            session_epoch  integer     NOT NULL DEFAULT 0,
            created_at     timestamptz NOT NULL DEFAULT now(),
            last_login_at  timestamptz,
            CONSTRAINT ck_console_users_role CHECK (role IN ('admin', 'agent'))
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX uq_console_users_username ON console_users (lower(username))")
    # The key that signs session cookies: made once, shared by every replica on this database.
    op.execute("CREATE TABLE console_secrets (name text PRIMARY KEY, value text NOT NULL)")
    op.execute(
        """
        CREATE TABLE console_audit (
            id       bigserial   PRIMARY KEY,
            at       timestamptz NOT NULL DEFAULT now(),
            user_id  bigint,
            username text        NOT NULL,
            action   text        NOT NULL,
            target   text        NOT NULL DEFAULT '',
            detail   jsonb       NOT NULL DEFAULT '{}',
            ip       text        NOT NULL DEFAULT ''
        )
        """
    )
    op.execute("CREATE INDEX ix_console_audit_at ON console_audit (at DESC)")
    op.execute("CREATE INDEX ix_console_audit_target ON console_audit (target, id)")
    # A staff member serving a customer from the console; the bot is paused while the row exists.
    op.execute(
        """
        CREATE TABLE console_takeovers (
            open_kfid       text        NOT NULL,
            external_userid text        NOT NULL,
            user_id         bigint      NOT NULL,
            username        text        NOT NULL,
            started_at      timestamptz NOT NULL DEFAULT now(),
            previous_pause  timestamptz,
            PRIMARY KEY (open_kfid, external_userid)
        )
        """
    )
    # Nicknames from kf/customer/batchget, so the list does not ask WeCom at every refresh.
    op.execute(
        """
        CREATE TABLE console_customers (
            external_userid text        PRIMARY KEY,
            nickname        text        NOT NULL,
            fetched_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # The bytes of documents uploaded in the console: what re-indexing reads them from.
    op.execute(
        """
        CREATE TABLE console_kb_files (
            id          bigserial   PRIMARY KEY,
            document_id bigint      UNIQUE REFERENCES kb_documents (id) ON DELETE SET NULL,
            source      text        NOT NULL UNIQUE,
            filename    text        NOT NULL,
            format      text        NOT NULL,
            data        bytea       NOT NULL,
            uploaded_by text        NOT NULL,
            uploaded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE console_unanswered_groups (
            id               bigserial   PRIMARY KEY,
            question         text        NOT NULL,
            vector           real[]      NOT NULL,
            embedder_version text        NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            document_id      bigint,
            resolved_at      timestamptz,
            resolved_by      text
        )
        """
    )
    op.execute(
        """
        CREATE TABLE console_unanswered (
            id              bigserial   PRIMARY KEY,
            open_kfid       text        NOT NULL,
            external_userid text        NOT NULL,
            msgid           text        NOT NULL,
            question        text        NOT NULL,
            kind            text        NOT NULL,
            asked_at        timestamptz NOT NULL DEFAULT now(),
            group_id        bigint      REFERENCES console_unanswered_groups (id) ON DELETE SET NULL,
            CONSTRAINT uq_console_unanswered_msgid UNIQUE (open_kfid, msgid),
            CONSTRAINT ck_console_unanswered_kind CHECK (kind IN ('no_answer', 'handoff'))
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_console_unanswered_ungrouped ON console_unanswered (id) WHERE group_id IS NULL"
    )
    op.execute("CREATE INDEX ix_console_unanswered_group ON console_unanswered (group_id)")
    # Live updates: NOTIFY 'wxkf_console' with the conversation's key, but only while some console is
    # watching (`console_watch.until` ahead of now). A transaction that notifies takes a database-wide
    # lock at commit, so the pipeline does not pay for it when nobody looks.
    op.execute("CREATE TABLE console_watch (only_row boolean PRIMARY KEY DEFAULT true, until timestamptz)")
    op.execute("INSERT INTO console_watch (only_row, until) VALUES (true, NULL)")
    op.execute(
        """
        CREATE FUNCTION console_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            changed record;
        BEGIN
            IF (SELECT until FROM console_watch) > now() THEN
                IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
                IF changed.external_userid <> '' THEN
                    PERFORM pg_notify('wxkf_console', changed.open_kfid || ' ' || changed.external_userid);
                END IF;
            END IF;
            RETURN NULL;
        END $$
        """
    )
    for trigger, when in WATCHED.items():
        op.execute(f"CREATE TRIGGER {trigger} {when} EXECUTE FUNCTION console_notify_change()")
    # A transcript and a conversation's last message read one conversation's rows in order. Not
    # CONCURRENTLY (Alembic runs in the migrator's transaction): while they build, the sync's inserts
    # wait; callbacks are still recorded and answered 200, and WeCom keeps the messages (the cursor).
    op.execute("CREATE INDEX ix_kf_inbound_conversation ON kf_inbound (open_kfid, external_userid, id)")
    op.execute("CREATE INDEX ix_kf_outbox_conversation ON kf_outbox (open_kfid, external_userid, id)")
    op.execute("CREATE INDEX ix_kf_conversations_updated ON kf_conversations (updated_at DESC)")


def downgrade() -> None:
    for index in ("ix_kf_conversations_updated", "ix_kf_outbox_conversation", "ix_kf_inbound_conversation"):
        op.execute(f"DROP INDEX {index}")
    for trigger, when in WATCHED.items():
        op.execute(f"DROP TRIGGER {trigger} ON {when.split(' ON ')[1].split()[0]}")
    op.execute("DROP FUNCTION console_notify_change()")
    for table in (
        "console_watch",
        "console_unanswered",
        "console_unanswered_groups",
        "console_kb_files",
        "console_customers",
        "console_takeovers",
        "console_audit",
        "console_secrets",
        "console_users",
    ):
        op.execute(f"DROP TABLE {table}")
