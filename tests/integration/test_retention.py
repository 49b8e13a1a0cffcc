"""Retention (wxkf.ops.retention): a deletion pass never causes a repeat or a loss.

One simulator world through three phases on one database. The customers are answered; then, with
no worker running, work is left half-done (a customer message recorded but not answered, a push
queued but not sent, a message still at WeCom whose callback was recorded and whose sync is
queued), everything is made 100 days old, and one bounded pass deletes what is past its age. Then
a worker finishes the work while its periodic retention job deletes what the first pass left: each
message exactly once, and nothing answered before answered again.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline
from wxkf.kf.responder import Conversation
from wxkf.kf.sync import sync_account
from wxkf.ops import retention
from wxkf.ops.metrics import collect, render
from wxkf.simulator.testing import run_simulator

AGE = "100 days"
# Every timestamp a pass looks at, moved back; kf_conversations (the 48 h windows) is left as it is.
BACKDATE = [
    f"UPDATE kf_callback_events SET received_at = received_at - interval '{AGE}'",
    f"UPDATE kf_inbound SET recorded_at = recorded_at - interval '{AGE}', "
    f"send_time = send_time - interval '{AGE}', processed_at = processed_at - interval '{AGE}'",
    f"UPDATE kf_outbox SET created_at = created_at - interval '{AGE}', sent_at = sent_at - interval '{AGE}'",
    f"UPDATE kf_sync_cursors SET updated_at = updated_at - interval '{AGE}'",
]


OLD_ROWS = """
SELECT (SELECT count(*) FROM kf_inbound WHERE processed_at < now() - interval '1 day'),
       (SELECT count(*) FROM kf_outbox WHERE coalesce(sent_at, created_at) < now() - interval '1 day'),
       (SELECT count(*) FROM kf_callback_events WHERE received_at < now() - interval '1 day')
"""


async def counts(run: RunningPipeline) -> dict[str, int]:
    tables = ("kf_callback_events", "kf_inbound", "kf_outbox", "kf_sync_cursors", "kf_conversations")
    return {t: int((await run.query(f"SELECT count(*) FROM {t}"))[0][0]) for t in tables}


def exported(text: str) -> list[str]:
    return sorted(
        line
        for line in text.splitlines()
        if line.startswith(("wxkf_callbacks_total{", "wxkf_replies_total{"))
    )


async def test_a_retention_pass_never_causes_a_repeat_or_a_loss(
    settings_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches, so the pass needs several of them (and more than one run) per table.
    monkeypatch.setattr(retention, "BATCH_ROWS", 2)
    monkeypatch.setattr(retention, "MAX_BATCHES", 2)
    simulator = run_simulator()
    async with simulator as sim:
        a, b, c = sim.customers[:3]
        responder = ScriptedResponder()

        # 1. Everyone answered.
        async with running_pipeline(settings_factory, responder, simulator=simulator) as run:
            for customer, text in ((a, "第一问"), (a, "第二问"), (b, "你好")):
                await run.say(customer, text)
                await run.idle()
            assert [len(await run.texts(x)) for x in (a, b, c)] == [2, 1, 0]

        # 2. No worker: work left half-done, then everything made old.
        async with running_pipeline(
            settings_factory, responder, simulator=simulator, run_worker=False
        ) as run:
            pipeline = run.app.state.pipeline
            await run.say(b, "还在吗")
            await run.control("wait_callbacks")
            await sync_account(pipeline, sim.open_kfid)  # recorded, not answered
            await pipeline.queue_texts(
                Conversation(sim.open_kfid, a), ["到货通知"], kind="push", source="restock-1"
            )
            await run.say(c, "请问营业时间")  # still at WeCom: a callback row and a queued sync
            await run.control("wait_callbacks")
            async with await psycopg.AsyncConnection.connect(run.conninfo) as conn:
                for statement in BACKDATE:
                    await conn.execute(statement)
            before = await counts(run)
            metrics_before = exported(render(await collect(run.app.state.database.pool)))
            windows = await run.query("SELECT * FROM kf_conversations ORDER BY 1, 2")
            first = await retention.run_pass(run.app.state.database.pool, pipeline.settings)
        assert (before["kf_callback_events"], before["kf_inbound"], before["kf_outbox"]) == (5, 4, 4)
        # Bounded: at most BATCH_ROWS × MAX_BATCHES = 4 rows a table; only what is done and old.
        assert {t: n for t, n in first.items() if n} == {
            "kf_callback_events": 4,
            "kf_inbound": 3,
            "kf_outbox": 3,
        }

        # 3. A worker finishes the work; its retention job (every second) deletes the last old callback.
        async with running_pipeline(
            settings_factory, responder, simulator=simulator, retention_cron="* * * * * *"
        ) as run:

            async def finished() -> bool:
                old = await run.query(OLD_ROWS)
                return old == [(0, 0, 0)] and [len(await run.texts(x)) for x in (a, b, c)] == [3, 2, 1]

            await run.until(finished, timeout=30)
            await run.idle()
            after = await counts(run)
            metrics_after = exported(render(await collect(run.app.state.database.pool)))
            received = {x: [m["text"]["content"] for m in await run.received(x)] for x in (a, b, c)}
            kept_windows = await run.query(
                "SELECT * FROM kf_conversations WHERE external_userid <> %s ORDER BY 1, 2", c
            )

    # Nothing lost, nothing twice: each customer got each answer once, in order.
    assert received[a] == ["答复：第一问", "答复：第二问", "到货通知"]
    assert received[b] == ["答复：你好", "答复：还在吗"]
    assert received[c] == ["答复：请问营业时间"]
    # What was old and done is gone; what is left is the new work and what exactly-once needs.
    assert after["kf_inbound"] == 2  # b's and c's messages, answered just now
    assert after["kf_outbox"] == 3  # the push and the two new answers
    assert after["kf_sync_cursors"] == before["kf_sync_cursors"] == 1  # the cursor, 100 days old, kept
    assert after["kf_conversations"] == before["kf_conversations"] + 1  # c's, new; none deleted
    # a's and b's windows: untouched by the pass (b's moved on only because b wrote again).
    assert [row for row in kept_windows if row[1] == a] == [row for row in windows if row[1] == a]
    # The exported counters did not go down: deleted rows were folded into kf_counters.
    for line in metrics_before:
        name_labels, value = line.rsplit(" ", 1)
        now = next(x for x in metrics_after if x.rsplit(" ", 1)[0] == name_labels)
        assert float(now.rsplit(" ", 1)[1]) >= float(value), (line, now)
