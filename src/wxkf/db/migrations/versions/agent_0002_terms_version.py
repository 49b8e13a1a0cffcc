"""agent: remember which version of the term extraction the stored chunks' terms came from.

Revision ID: agent_0002_terms_version
Revises: agent_0001_kb
"""

from __future__ import annotations

from alembic import op

revision = "agent_0002_terms_version"
down_revision = "agent_0001_kb"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the chunks were termed before versions were kept; the next write or search re-terms them.
    op.execute("ALTER TABLE kb_state ADD COLUMN terms_version text")


def downgrade() -> None:
    op.execute("ALTER TABLE kb_state DROP COLUMN terms_version")
