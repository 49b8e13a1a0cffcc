"""kf: accounts whose sync WeCom refused because the account does not exist (95000 / 95004).

Revision ID: kf_0002_sync_refusals
Revises: kf_0001_pipeline
"""

from __future__ import annotations

from alembic import op

revision = "kf_0002_sync_refusals"
down_revision = "kf_0001_pipeline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The sync sweep leaves such an account alone until a callback for it arrives after the refusal;
    # a successful sync of the account removes its row.
    op.execute(
        """
        CREATE TABLE kf_sync_refusals (
            open_kfid  text        PRIMARY KEY,
            errcode    integer     NOT NULL,
            refused_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE kf_sync_refusals")
