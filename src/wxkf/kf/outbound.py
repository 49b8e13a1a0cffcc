"""Sending one outbox row: text, a welcome (send_msg_on_event), or any other msgtype (wecom-api §4, §5).

Files a row references from the media store are uploaded here, when the row is sent, through the
upload cache: a message queued days ago still gets a media_id that is alive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wxkf.kf import outbox
from wxkf.kf.responder import Conversation
from wxkf.wecom.models import MediaKind, MsgMenu, Text

if TYPE_CHECKING:
    from wxkf.kf.runtime import Pipeline


async def uploaded(pipeline: Pipeline, body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its file references uploaded and replaced by their media_ids."""
    media_ids: dict[str, str] = {}
    for ref in ("media", "thumb_media", "pic_media"):
        media = body.get(ref)
        if isinstance(media, dict):
            kind: MediaKind = media.get("kind", "image")
            media_ids[ref] = await pipeline.uploads.media_id(
                kind, str(media["sha256"]), str(media.get("filename") or "file")
            )
    if not media_ids:
        return body
    return outbox.with_media_ids(body, lambda name, _ref: media_ids[name])


async def send_row(pipeline: Pipeline, conversation: Conversation, row: dict[str, Any]) -> None:
    """Send one pending outbox row with its own msgid (a retry sends the same one)."""
    body: dict[str, Any] = row["body"]
    msgid = row["msgid"]
    if row["code"]:
        message: Text | MsgMenu = (
            MsgMenu.model_validate(body)
            if row["msgtype"] == "msgmenu"
            else Text(content=str(body["content"]))
        )
        await pipeline.client.send_msg_on_event(row["code"], message, msgid=msgid)
    elif row["msgtype"] == "text":
        await pipeline.client.send_text(
            conversation.open_kfid, conversation.external_userid, str(body.get("content", "")), msgid=msgid
        )
    else:
        resolved = {**row, "body": await uploaded(pipeline, body)}
        await pipeline.client.send_msg(outbox.send_request(conversation, resolved))
