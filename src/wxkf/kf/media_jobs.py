"""Customers' media in the conversation: downloaded before answering, retried without blocking.

    conversation job, batch with an image ─▶ register + fetch now ─▶ stored: answered with its bytes
                                                                  ├▶ failed: answered honestly
                                                                  └▶ retrying: parked, `kf:fetch_media`
    kf:fetch_media (backoff) ─▶ stored / failed ─▶ the conversation job runs again and answers it

A parked message stays `pending` in the ledger while the conversation's later messages are
answered; it is answered when its download succeeds or is given up (after the job's last attempt).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import procrastinate
from procrastinate import JobContext, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued

from wxkf.kf.inbound import KNOWN_MSGTYPES
from wxkf.kf.ledger import ORIGIN_CUSTOMER, InboundRow
from wxkf.kf.responder import Conversation, MediaContent
from wxkf.media.inbound import MEDIA_KINDS, MediaMessage

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline

log = logging.getLogger("wxkf.kf.media")

FETCH_TASK = "kf:fetch_media"
PURGE_TASK = "kf:purge_media"


class MediaNotYetStored(Exception):
    """The download failed in a way worth retrying (procrastinate retries the job)."""


# Waits 2, 4, 8 … 256 s: about eight and a half minutes in all, well inside the media_id's 3 days.
FETCH_RETRY = RetryStrategy(max_attempts=9, exponential_wait=2, retry_exceptions={MediaNotYetStored})


def _media_messages(rows: list[InboundRow]) -> list[MediaMessage]:
    return [
        MediaMessage(r.msgid, r.external_userid, r.msgtype, str(r.body["body"]["media_id"]), r.send_time)
        for r in rows
        if r.origin == ORIGIN_CUSTOMER
        and r.msgtype in MEDIA_KINDS
        and isinstance(r.body.get("body"), dict)
        and r.body["body"].get("media_id")
    ]


async def prepare_batch(
    pipeline: Pipeline, conversation: Conversation, rows: list[InboundRow]
) -> tuple[list[InboundRow], dict[str, MediaContent]]:
    """Fetch the media of `rows` that is not stored yet; returns the rows to answer now (parked ones
    left out) and the media of those rows by msgid. A msgtype wxkf does not know is logged: it is
    kept as WeCom sent it and answered from its rendering."""
    for row in rows:
        if row.msgtype not in KNOWN_MSGTYPES:
            log.info(
                "未知的消息类型 %s，已按原样保存 / unknown msgtype %s, stored as received",
                row.msgtype,
                row.msgtype,
                extra={"decision": "unknown_msgtype", "content": row.body},
            )
    messages = _media_messages(rows)
    if not messages:
        return rows, {}
    media = pipeline.media
    await media.register(conversation.open_kfid, messages)
    known = await media.rows(conversation.open_kfid, [m.msgid for m in messages])
    parked: set[str] = set()
    for message in messages:
        found = known.get(message.msgid)
        if found is None or found["status"] in ("stored", "failed"):
            continue
        if found["status"] == "retrying":
            parked.add(message.msgid)  # the fetch job owns it now
            continue
        if await media.fetch(conversation.open_kfid, message.msgid) == "retrying":
            parked.add(message.msgid)
            await defer_fetch(pipeline.procrastinate, conversation, message.msgid)
    if parked:
        log.info(
            "%d 条媒体消息下载失败，稍后重试；先回复其余消息 / %d media message(s) parked for a retry",
            len(parked),
            len(parked),
            extra={"decision": "media_parked"},
        )
    contents = await media.contents(
        conversation.open_kfid, [m.msgid for m in messages if m.msgid not in parked]
    )
    return [r for r in rows if r.msgid not in parked], contents


def _fetch_lock(conversation: Conversation, msgid: str) -> str:
    return f"kf-media:{conversation.open_kfid}:{msgid}"


async def defer_fetch(app: procrastinate.App, conversation: Conversation, msgid: str) -> None:
    lock = _fetch_lock(conversation, msgid)
    with contextlib.suppress(AlreadyEnqueued):
        await app.configure_task(FETCH_TASK, queueing_lock=lock).defer_async(
            open_kfid=conversation.open_kfid, external_userid=conversation.external_userid, msgid=msgid
        )


async def fetch_media_job(context: JobContext, open_kfid: str, external_userid: str, msgid: str) -> None:
    from wxkf.kf.jobs import defer_converse

    pipeline: Pipeline = context.additional_context["pipeline"]
    conversation = Conversation(open_kfid, external_userid)
    status = await pipeline.media.fetch(open_kfid, msgid)
    if status == "retrying":
        attempt = context.job.attempts + 1
        if FETCH_RETRY.max_attempts is None or attempt < FETCH_RETRY.max_attempts:
            raise MediaNotYetStored(msgid)
        await pipeline.media.give_up(
            open_kfid, msgid, f"重试 {attempt} 次后仍未下载 / still not downloaded after {attempt} attempts"
        )
    # Stored or given up: the parked message can be answered now.
    await defer_converse(pipeline.procrastinate, conversation)


async def purge_media_job(context: JobContext, timestamp: int) -> None:
    """Hourly: media older than MEDIA_RETENTION_DAYS leave the store (one worker runs it per hour)."""
    pipeline: Pipeline = context.additional_context["pipeline"]
    await pipeline.media.purge(timedelta(days=pipeline.settings.media_retention_days))


def register_tasks(app: procrastinate.App) -> None:
    app.task(name=FETCH_TASK, pass_context=True, retry=FETCH_RETRY)(fetch_media_job)
    app.periodic(cron="17 * * * *", periodic_id="media-retention")(
        app.task(name=PURGE_TASK, pass_context=True, queueing_lock=PURGE_TASK)(purge_media_job)
    )
