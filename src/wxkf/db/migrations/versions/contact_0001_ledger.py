"""contact: customer cache, tasks, the receive ledger, reminders and confirmations.

Revision ID: contact_0001
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "contact_0001"
down_revision = "0001_core"
branch_labels = ("contact",)
depends_on = None


def upgrade() -> None:
    # externalcontact/list + /get (wecom-api §9), cached per member with a TTL.
    op.execute(
        """
        CREATE TABLE contact_customer_lists (
            member_userid text        PRIMARY KEY,
            fetched_at    timestamptz NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE contact_customers (
            member_userid   text        NOT NULL,
            external_userid text        NOT NULL,
            position        integer     NOT NULL,
            name            text        NOT NULL DEFAULT '',
            remark          text        NOT NULL DEFAULT '',
            corp_name       text        NOT NULL DEFAULT '',
            contact_type    integer     NOT NULL DEFAULT 0,
            added_at        timestamptz,
            detail          jsonb       NOT NULL DEFAULT '{}'::jsonb,
            fetched_at      timestamptz NOT NULL,
            PRIMARY KEY (member_userid, external_userid)
        )
        """
    )
    # One row per add_msg_template task this service created.
    op.execute(
        """
        CREATE TABLE contact_tasks (
            msgid        text        PRIMARY KEY,
            sender       text        NOT NULL,
            origin       text        NOT NULL,
            text_content text        NOT NULL DEFAULT '',
            attachments  jsonb       NOT NULL DEFAULT '[]'::jsonb,
            recipients   integer     NOT NULL,
            fail_list    text[]      NOT NULL DEFAULT '{}',
            capped       text[]      NOT NULL DEFAULT '{}',
            created_at   timestamptz NOT NULL DEFAULT now(),
            cancelled_at timestamptz,
            checked_at   timestamptz
        )
        """
    )
    # The receive ledger (wecom-api §9 receiving cap): one row per customer per task. Rows are
    # reserved before add_msg_template is called, so concurrent sends cannot both pass the cap.
    op.execute(
        """
        CREATE TABLE contact_receipts (
            id              bigserial   PRIMARY KEY,
            external_userid text        NOT NULL,
            sender          text        NOT NULL,
            reservation     uuid        NOT NULL,
            msgid           text,
            state           text        NOT NULL CHECK (state IN
                              ('reserved','pending','sent','not_friend','capped','rejected','cancelled')),
            created_at      timestamptz NOT NULL DEFAULT now(),
            received_at     timestamptz
        )
        """
    )
    op.execute("CREATE INDEX ix_contact_receipts_customer ON contact_receipts (external_userid, created_at)")
    op.execute("CREATE INDEX ix_contact_receipts_msgid ON contact_receipts (msgid)")
    op.execute("CREATE INDEX ix_contact_receipts_reservation ON contact_receipts (reservation)")
    # wecom-api §9: at most 3 reminders per task per 24 h; checked here before asking WeCom.
    op.execute(
        """
        CREATE TABLE contact_reminders (
            id          bigserial   PRIMARY KEY,
            msgid       text        NOT NULL,
            reminded_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_contact_reminders_msgid ON contact_reminders (msgid, reminded_at)")
    # A sending tool's first call stores its preview here; the second call presents the token.
    # (Every tool call itself is audited by the agent's registry in agent_tool_calls.)
    op.execute(
        """
        CREATE TABLE contact_confirmations (
            token         text        PRIMARY KEY,
            member_userid text        NOT NULL,
            action        text        NOT NULL,
            payload       jsonb       NOT NULL,
            preview       text        NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            expires_at    timestamptz NOT NULL,
            used_at       timestamptz,
            msgid         text
        )
        """
    )


def downgrade() -> None:
    for table in (
        "contact_confirmations",
        "contact_reminders",
        "contact_receipts",
        "contact_tasks",
        "contact_customers",
        "contact_customer_lists",
    ):
        op.execute(f"DROP TABLE {table}")
