"""agent_llm: the tool-call audit and the record of LLM failures.

Revision ID: agent_llm_0001
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "agent_llm_0001"
down_revision = "0001_core"
branch_labels = ("agent_llm",)
depends_on = None


def upgrade() -> None:
    # Every tool call the agent makes, with what it was asked and what came back, so an operator can
    # see why a customer was transferred or a message was sent.
    op.execute(
        """
        CREATE TABLE agent_tool_calls (
            id              bigserial   PRIMARY KEY,
            called_at       timestamptz NOT NULL DEFAULT now(),
            tool            text        NOT NULL,
            audience        text        NOT NULL,
            open_kfid       text,
            external_userid text,
            actor           text,
            arguments       jsonb       NOT NULL,
            result          jsonb,
            status          text        NOT NULL
                CHECK (status IN ('ok', 'error', 'invalid', 'unknown', 'unconfirmed')),
            error           text,
            duration_ms     integer     NOT NULL DEFAULT 0
        )
        """
    )
    op.execute(
        "CREATE INDEX agent_tool_calls_conversation ON agent_tool_calls (open_kfid, external_userid, id)"
    )
    # A customer got the fallback text instead of an answer: what failed, after how many attempts.
    op.execute(
        """
        CREATE TABLE agent_llm_failures (
            id              bigserial   PRIMARY KEY,
            failed_at       timestamptz NOT NULL DEFAULT now(),
            kind            text        NOT NULL,
            status_code     integer,
            open_kfid       text,
            external_userid text,
            model           text        NOT NULL,
            detail          text        NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX agent_llm_failures_time ON agent_llm_failures (failed_at)")


def downgrade() -> None:
    op.execute("DROP TABLE agent_llm_failures")
    op.execute("DROP TABLE agent_tool_calls")
