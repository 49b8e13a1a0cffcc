"""push: intents, profiles, matches, preferences, templates and the push history (docs/push.md).

One table per concept; every customer's rows live in the same tables, keyed by (open_kfid,
external_userid).

Revision ID: push_0001_tables
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "push_0001_tables"
down_revision = "0001_core"
branch_labels = ("push",)
depends_on = None


def upgrade() -> None:
    # What a customer is looking for. `conditions` is {required, preferred, keywords, excluded}
    # (wxkf.push.conditions); `version` moves on every change, so a changed intent is matched anew.
    # Vectors carry the embedder that made them (`embedder`): another model is detected, not compared.
    op.execute(
        """
        CREATE TABLE push_intents (
            id                 bigserial   PRIMARY KEY,
            open_kfid          text        NOT NULL,
            external_userid    text        NOT NULL,
            name               text        NOT NULL,
            description        text        NOT NULL DEFAULT '',
            conditions         jsonb       NOT NULL DEFAULT '{}'::jsonb,
            threshold          real        NOT NULL,
            priority           smallint    NOT NULL DEFAULT 0,
            max_pushes_per_day smallint    NOT NULL DEFAULT 3,
            template           text,
            status             text        NOT NULL DEFAULT 'active'
                CHECK (status IN ('draft', 'active', 'paused', 'cancelled')),
            expires_at         timestamptz,
            version            integer     NOT NULL DEFAULT 1,
            embedding          vector,
            embedder           text,
            created_by         text        NOT NULL DEFAULT 'api',
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_push_intents_owner ON push_intents (open_kfid, external_userid, status)")
    op.execute("CREATE INDEX ix_push_intents_active ON push_intents (id) WHERE status = 'active'")
    # The company's people. `search_text` and `terms` are derived from the fields on every write:
    # `terms` (words, Chinese characters and pairs, whole tags) lets a keyword or a `contains` gate
    # find its candidates through GIN instead of reading every profile. HNSW indexes, one per vector
    # dimension in use, are created when that dimension first appears (like kb_chunks).
    op.execute(
        """
        CREATE TABLE push_profiles (
            id           bigserial   PRIMARY KEY,
            external_ref text        UNIQUE,
            name         text        NOT NULL,
            gender       text,
            age          integer,
            city         text,
            company      text,
            position     text,
            industry     text,
            education    text,
            attributes   jsonb       NOT NULL DEFAULT '{}'::jsonb,
            description  text        NOT NULL DEFAULT '',
            tags         text[]      NOT NULL DEFAULT '{}',
            search_text  text        NOT NULL DEFAULT '',
            terms        text[]      NOT NULL DEFAULT '{}',
            status       text        NOT NULL DEFAULT 'active' CHECK (status IN ('draft', 'active', 'deleted')),
            version      integer     NOT NULL DEFAULT 1,
            embedding    vector,
            embedder     text,
            created_by   text        NOT NULL DEFAULT 'api',
            created_at   timestamptz NOT NULL DEFAULT now(),
            updated_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # A vector is read for every candidate: kept in the row (MAIN), not in TOAST, where each read is
    # one more index lookup. `terms`, the widest other column, goes out of line first.
    op.execute("ALTER TABLE push_profiles ALTER COLUMN embedding SET STORAGE MAIN")
    op.execute("CREATE INDEX ix_push_profiles_terms ON push_profiles USING gin (terms)")
    # Not partial: ANALYZE keeps statistics of an index's expression, which the planner needs to
    # estimate how many profiles a city gate leaves (matching.py chooses exact or HNSW search by it).
    op.execute("CREATE INDEX ix_push_profiles_city ON push_profiles (lower(city))")
    op.execute("CREATE INDEX ix_push_profiles_unembedded ON push_profiles (id) WHERE embedder IS NULL")
    # One row per (intent version, profile version) that was scored into a match or judged by the
    # LLM: the pair is never scored twice, and a changed profile (a new version) is scored again.
    # `number` is what the customer replies with (查看3), counted per customer when first pushed.
    op.execute(
        """
        CREATE TABLE push_matches (
            id              bigserial   PRIMARY KEY,
            intent_id       bigint      NOT NULL REFERENCES push_intents (id) ON DELETE CASCADE,
            intent_version  integer     NOT NULL,
            profile_id      bigint      NOT NULL REFERENCES push_profiles (id) ON DELETE CASCADE,
            profile_version integer     NOT NULL,
            open_kfid       text        NOT NULL,
            external_userid text        NOT NULL,
            score           real        NOT NULL,
            parts           jsonb       NOT NULL,
            matched         jsonb       NOT NULL,
            explanation     text        NOT NULL,
            status          text        NOT NULL
                CHECK (status IN ('pending', 'scheduled', 'pushed', 'dropped', 'rejected', 'retired')),
            reason          text,
            due_at          timestamptz,
            number          integer,
            feedback        text        CHECK (feedback IN ('viewed', 'not_interested')),
            feedback_at     timestamptz,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_push_matches_pair UNIQUE (intent_id, intent_version, profile_id, profile_version)
        )
        """
    )
    op.execute("CREATE INDEX ix_push_matches_owner ON push_matches (open_kfid, external_userid, status)")
    op.execute("CREATE INDEX ix_push_matches_profile ON push_matches (profile_id)")
    op.execute(
        "CREATE UNIQUE INDEX ux_push_matches_number ON push_matches (open_kfid, external_userid, number) "
        "WHERE number IS NOT NULL"
    )
    op.execute("CREATE INDEX ix_push_matches_due ON push_matches (due_at) WHERE status = 'scheduled'")
    # A customer's own rules; no row: the PUSH_* defaults. Quiet hours are local wall-clock times
    # in `timezone` (both NULL: none).
    op.execute(
        """
        CREATE TABLE push_preferences (
            open_kfid       text        NOT NULL,
            external_userid text        NOT NULL,
            enabled         boolean     NOT NULL,
            quiet_start     time,
            quiet_end       time,
            timezone        text        NOT NULL,
            daily_limit     smallint    NOT NULL,
            min_score       real        NOT NULL,
            digest_hour     smallint    CHECK (digest_hour BETWEEN 0 AND 23),
            mode            text        NOT NULL DEFAULT 'instant' CHECK (mode IN ('instant', 'digest')),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (open_kfid, external_userid),
            CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
        )
        """
    )
    op.execute(
        """
        CREATE TABLE push_templates (
            name       text        PRIMARY KEY,
            kind       text        NOT NULL CHECK (kind IN ('text', 'miniprogram')),
            body       jsonb       NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Every decision about a match: scheduled (with when), sent (with the outbox msgid, shared by
    # the matches merged into one message), dropped or skipped (with the reason). `at` is the
    # push clock's time, which daily limits count by.
    op.execute(
        """
        CREATE TABLE push_history (
            id              bigserial   PRIMARY KEY,
            match_id        bigint      NOT NULL REFERENCES push_matches (id) ON DELETE CASCADE,
            intent_id       bigint      NOT NULL,
            open_kfid       text        NOT NULL,
            external_userid text        NOT NULL,
            status          text        NOT NULL CHECK (status IN ('scheduled', 'sent', 'dropped', 'skipped')),
            reason          text,
            due_at          timestamptz,
            msgid           text,
            template        text,
            at              timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ix_push_history_owner ON push_history (open_kfid, external_userid, at)")
    op.execute("CREATE INDEX ix_push_history_intent ON push_history (intent_id, at)")
    op.execute("CREATE INDEX ix_push_history_status ON push_history (status, at)")
    # The embedder every stored vector was made with, once all of them were (re-)embedded; a
    # different one at run time means re-embedding before any semantic comparison.
    op.execute(
        """
        CREATE TABLE push_state (
            id       smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
            embedder text
        )
        """
    )
    op.execute("INSERT INTO push_state (id) VALUES (1)")


def downgrade() -> None:
    for table in (
        "push_state",
        "push_history",
        "push_templates",
        "push_preferences",
        "push_matches",
        "push_profiles",
        "push_intents",
    ):
        op.execute(f"DROP TABLE {table}")
