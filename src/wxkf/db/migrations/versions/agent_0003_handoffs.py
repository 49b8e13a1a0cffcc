"""agent: customers handed to a person, so a queue that nobody takes can be ended (wxkf.kf.handoff).

Revision ID: agent_0003_handoffs
Revises: agent_0002_terms_version
"""

from __future__ import annotations

from alembic import op

revision = "agent_0003_handoffs"
down_revision = "agent_0002_terms_version"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per handoff: to the queue (state 2) or to a named servicer (3). `outcome` is filled when
    # it closes: served (a person took it), timed_out (ended after KF_QUEUE_TIMEOUT_MINUTES), left
    # (the session moved on otherwise).
    op.execute(
        """
        CREATE TABLE kf_handoffs (
            id               bigserial   PRIMARY KEY,
            open_kfid        text        NOT NULL,
            external_userid  text        NOT NULL,
            to_state         smallint    NOT NULL,
            servicer_userid  text,
            question         text        NOT NULL DEFAULT '',
            notified         text[]      NOT NULL DEFAULT '{}',
            handed_at        timestamptz NOT NULL DEFAULT now(),
            closed_at        timestamptz,
            outcome          text
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_kf_handoffs_open ON kf_handoffs (open_kfid, external_userid) WHERE closed_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE kf_handoffs")
