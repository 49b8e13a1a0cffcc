"""Handing a customer to a person, and what everyone hears (wecom-api §5, §6, §8).

    reply asks for a human → can anyone receive?  (kf/servicer/list: a member 接待中, or a department)
        no  → the reply's `unattended_text` instead; the bot keeps the customer (never an unattended queue)
        yes → the reply → trans → 2 (or 3 with a named servicer) → the queue notice with trans's msg_code
              → the servicers on duty (or KF_HANDOFF_NOTIFY_USERIDS) get a WeCom app message with the question
              → still queued after KF_QUEUE_TIMEOUT_MINUTES: trans → 4 and the timeout notice with its
                msg_code; the customer's next message reaches the bot again
    the bot ends a human session (KF_SESSION_POLICY=end) → the end notice with trans's msg_code

The notices go through the outbox as send_msg_on_event rows: once a session is in state 2, 3 or 4,
send_msg answers 95018, and the msg_code is the one way to reach the customer (wecom-api §5: one message
per code; the queue code lives 48 h, the end code 20 s, so the end notice is sent at once).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from procrastinate import JobContext

from wxkf.kf import ledger, outbox
from wxkf.kf.responder import Conversation, Reply
from wxkf.kf.service_state import record_api_error
from wxkf.ops.logging import log_context
from wxkf.wecom.client import WeComClient
from wxkf.wecom.errors import APIError, RateLimitedError, WeComError
from wxkf.wecom.tokens import PostgresTokenStore

if TYPE_CHECKING:
    import procrastinate

    from wxkf.kf.runtime import Pipeline

log = logging.getLogger("wxkf.kf.handoff")

QUEUE_TIMEOUT_TASK = "kf:queue_timeout"
SERVICER_ON_DUTY = 0  # wecom-api §8 servicer/list status: 0 接待中, 1 停止接待

_RECORD = """
INSERT INTO kf_handoffs (open_kfid, external_userid, to_state, servicer_userid, question, notified)
VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
"""
_OPEN_HANDOFF = "SELECT to_state FROM kf_handoffs WHERE id = %s AND closed_at IS NULL"
_CLOSE = "UPDATE kf_handoffs SET closed_at = now(), outcome = %s WHERE id = %s AND closed_at IS NULL"


async def on_duty(pipeline: Pipeline, open_kfid: str) -> tuple[list[str], bool]:
    """The account's servicers who receive now, and whether a department (whose members WeCom does not
    list) serves it too. A failed servicer/list counts as nobody: the bot keeps the customer."""
    try:
        found = await pipeline.client.list_servicers(open_kfid)
    except RateLimitedError:
        raise
    except APIError as exc:
        await record_api_error(
            pipeline.pool, exc, Conversation(open_kfid, "-"), "接待人员列表 / servicer/list"
        )
        return [], False
    members = [s.userid for s in found.servicer_list if s.userid and s.status == SERVICER_ON_DUTY]
    return members, any(s.department_id is not None for s in found.servicer_list)


async def settle(pipeline: Pipeline, conversation: Conversation, reply: Reply) -> Reply:
    """A reply that asks for a human, as it will be sent: unchanged when someone can receive, else
    its unattended variant without the handoff."""
    members, departments = await on_duty(pipeline, conversation.open_kfid)
    wanted = reply.handoff_servicer
    if (wanted in members) if wanted else (members or departments):
        return reply
    log.info(
        "没有可接待的接待人员，机器人继续接待 / no servicer can receive%s: the bot keeps the customer",
        f" ({wanted})" if wanted else "",
        extra={"decision": "handoff_unattended"},
    )
    async with pipeline.pool.connection() as conn:
        await ledger.count(conn, "kf.handoff.unattended")
    return Reply(
        text=reply.unattended_text or reply.text,
        sources=reply.sources,
        messages=reply.messages,
        question=reply.question,
    )


async def hand_off(pipeline: Pipeline, conversation: Conversation, reply: Reply) -> None:
    """trans → 3 with the servicer, or → 2 (the queue); then the notice, the record and the staff alert.

    The caller sends the outbox afterwards (the notice is a send_msg_on_event row). APIError from
    trans propagates: nothing changed.
    """
    settings = pipeline.settings
    servicer = reply.handoff_servicer
    to_state = 3 if servicer else 2
    code = await pipeline.states.trans(conversation, to_state, servicer)
    notified = await _notify_staff(pipeline, conversation, reply.question, servicer)
    async with pipeline.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            _RECORD,
            (
                conversation.open_kfid,
                conversation.external_userid,
                to_state,
                servicer,
                reply.question,
                notified,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        handoff_id: int = row[0]
        if code and settings.kf_queue_text.strip():
            await outbox.enqueue_on_event(
                conn,
                conversation,
                kind="notice",
                code=code,
                text=settings.kf_queue_text,
                source=f"handoff-{handoff_id}",
            )
        await ledger.count(conn, f"kf.handoff.to_state_{to_state}")
    if to_state == 2 and settings.kf_queue_timeout_minutes > 0:
        await defer_queue_timeout(
            pipeline.procrastinate, conversation, handoff_id, settings.kf_queue_timeout_minutes
        )


async def queue_end_notice(
    pipeline: Pipeline, conversation: Conversation, code: str | None, source: str
) -> None:
    """The end notice after the bot ended a session (trans → 4 gave `code`, valid 20 s: send it now)."""
    text = pipeline.settings.kf_end_text.strip()
    if not code or not text:
        return
    async with pipeline.pool.connection() as conn:
        await outbox.enqueue_on_event(conn, conversation, kind="notice", code=code, text=text, source=source)


async def _notify_staff(
    pipeline: Pipeline, conversation: Conversation, question: str, servicer: str | None
) -> list[str]:
    """A WeCom app message to the servicer taking over, the configured staff, or the servicers on duty.

    Needs WECOM_AGENT_ID and WECOM_AGENT_SECRET (a self-built app); returns who was told. A failure is
    logged and costs the customer nothing.
    """
    settings = pipeline.settings
    secret = settings.wecom_agent_secret
    if settings.wecom_agent_id is None or secret is None or not secret.get_secret_value():
        return []
    configured = [u.strip() for u in settings.kf_handoff_notify_userids.split(",") if u.strip()]
    recipients = (
        [servicer] if servicer else configured or (await on_duty(pipeline, conversation.open_kfid))[0]
    )
    if not recipients:
        return []
    text = (
        f"【待接待】客户 {conversation.external_userid} 需要人工客服"
        f"{'（已转给您）' if servicer else '（在待接入池排队）'}。\n"
        f"客户的问题：{(question or '（无）')[:500]}\n请在企业微信「微信客服」中接待。"
    )
    try:
        async with WeComClient(
            settings.wecom_api_base,
            settings.wecom_corp_id,
            secret,
            token_store=PostgresTokenStore(pipeline.pool),
        ) as app:
            await app.send_app_message(settings.wecom_agent_id, "|".join(recipients), text)
    except WeComError as exc:
        log.warning(
            "通知接待人员失败 / could not notify the servicers: %s",
            type(exc).__name__,
            extra={"decision": "notify_failed"},
        )
        return []
    log.info(
        "已通知接待人员 / servicers notified: %s",
        ",".join(recipients),
        extra={"decision": "servicers_notified"},
    )
    return recipients


# --- the queue timeout -------------------------------------------------------------------------------


async def defer_queue_timeout(
    app: procrastinate.App, conversation: Conversation, handoff_id: int, minutes: float
) -> None:
    await app.configure_task(QUEUE_TIMEOUT_TASK, schedule_in={"seconds": minutes * 60}).defer_async(
        open_kfid=conversation.open_kfid, external_userid=conversation.external_userid, handoff_id=handoff_id
    )


async def queue_timeout_job(
    context: JobContext, open_kfid: str, external_userid: str, handoff_id: int
) -> None:
    """Still queued after KF_QUEUE_TIMEOUT_MINUTES: tell the customer and end the session (2 → 4)."""
    from wxkf.kf.conversation import deliver  # the conversation job imports this module

    pipeline: Pipeline = context.additional_context["pipeline"]
    conversation = Conversation(open_kfid, external_userid)
    with log_context(open_kfid=open_kfid, external_userid=external_userid):
        async with pipeline.pool.connection() as conn:
            cur = await conn.execute(_OPEN_HANDOFF, (handoff_id,))
            if await cur.fetchone() is None:
                return  # closed meanwhile
        try:
            state = await pipeline.states.fetch(conversation)
            if state.state != 2:
                async with pipeline.pool.connection() as conn:
                    await conn.execute(_CLOSE, ("served" if state.state == 3 else "left", handoff_id))
                return
            code = await pipeline.states.trans(conversation, 4)
        except RateLimitedError:
            raise
        except APIError as exc:
            await record_api_error(
                pipeline.pool, exc, conversation, "结束排队会话 / service_state/trans 2 → 4"
            )
            return
        async with pipeline.pool.connection() as conn, conn.transaction():
            if code and pipeline.settings.kf_queue_timeout_text.strip():
                await outbox.enqueue_on_event(
                    conn,
                    conversation,
                    kind="notice",
                    code=code,
                    text=pipeline.settings.kf_queue_timeout_text,
                    source=f"queue-timeout-{handoff_id}",
                )
            await conn.execute(_CLOSE, ("timed_out", handoff_id))
            await ledger.count(conn, "kf.handoff.timed_out")
        log.info(
            "排队超过 %g 分钟无人接待，已结束会话 / nobody took the queued customer: session ended",
            pipeline.settings.kf_queue_timeout_minutes,
            extra={"decision": "queue_timed_out"},
        )
        await deliver(pipeline, conversation)


def register(app: procrastinate.App, retry: Any) -> None:
    app.task(name=QUEUE_TIMEOUT_TASK, pass_context=True, retry=retry)(queue_timeout_job)
