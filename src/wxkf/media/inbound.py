"""Media customers send: each image, voice, video or file downloaded once with media/get, kept in the
media store, and recorded in `media_inbound` (wecom-api §3, §8).

    media = InboundMedia(pool, client, store, max_bytes=settings.media_max_bytes)
    await media.register(open_kfid, rows)        # one row per media message, status pending
    outcome = await media.fetch(open_kfid, msgid)  # stored | retrying | failed
    contents = await media.contents(open_kfid, msgids)

A media_id lives 3 days ("media_id仅三天内有效"): a message older than that is `failed` (expired)
without asking WeCom. What WeCom refuses for good (40007 invalid media_id …) and files over
MEDIA_MAX_BYTES are `failed` at once; throttling, an unreachable WeCom or an unusable store are
`retrying`, for the caller's job to try again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from wxkf.kf.responder import MediaContent
from wxkf.media.errors import MediaStoreError
from wxkf.media.storage import MediaStore
from wxkf.wecom.client import WeComClient
from wxkf.wecom.errors import APIError, RateLimitedError, TransportError

log = logging.getLogger("wxkf.media")

MEDIA_KINDS = frozenset({"image", "voice", "video", "file"})
MEDIA_ID_TTL = timedelta(days=3)  # wecom-api §8: media_id仅三天内有效
READABLE_KINDS = frozenset({"image", "voice"})  # the bytes a responder can use (vision, speech-to-text)

_EXTENSIONS = {"image": ".jpg", "voice": ".amr", "video": ".mp4", "file": ""}


@dataclass(frozen=True)
class MediaMessage:
    """A media message as recorded from sync_msg: which media_id, sent when."""

    msgid: str
    external_userid: str
    kind: str
    media_id: str
    sent_at: datetime


_REGISTER = """
INSERT INTO media_inbound (open_kfid, msgid, external_userid, kind, media_id, sent_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (open_kfid, msgid) DO NOTHING
"""
_ROWS = """
SELECT msgid, kind, media_id, sent_at, status, attempts, error, sha256, size, content_type, filename
FROM media_inbound WHERE open_kfid = %s AND msgid = ANY(%s)
"""
_STORED = """
UPDATE media_inbound SET status = 'stored', attempts = attempts + 1, errcode = NULL, error = NULL,
       store = %s, sha256 = %s, size = %s, content_type = %s, filename = %s, stored_at = now()
WHERE open_kfid = %s AND msgid = %s
"""
_NOT_STORED = """
UPDATE media_inbound SET status = %s, attempts = attempts + %s, errcode = %s, error = %s
WHERE open_kfid = %s AND msgid = %s AND status <> 'stored'
"""
_PURGE_ROWS = "DELETE FROM media_inbound WHERE created_at < now() - %s RETURNING sha256"
# Bytes still named by a message inside the retention or by a knowledge-base attachment stay.
_UNREFERENCED = """
SELECT k FROM unnest(%s::text[]) AS k
WHERE NOT EXISTS (SELECT 1 FROM media_inbound WHERE sha256 = k)
  AND NOT EXISTS (SELECT 1 FROM kb_attachments WHERE sha256 = k)
"""
_PURGE_UPLOADS = "DELETE FROM media_uploads WHERE uploaded_at < now() - interval '3 days'"
_COUNT = (
    "INSERT INTO kf_counters (name, value) VALUES (%s, 1) "
    "ON CONFLICT (name) DO UPDATE SET value = kf_counters.value + 1"
)


class InboundMedia:
    def __init__(
        self, pool: AsyncConnectionPool[Any], client: WeComClient, store: MediaStore, *, max_bytes: int
    ) -> None:
        self.pool = pool
        self.client = client
        self.store = store
        self.max_bytes = max_bytes

    async def register(self, open_kfid: str, messages: Sequence[MediaMessage]) -> None:
        if not messages:
            return
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                _REGISTER,
                [(open_kfid, m.msgid, m.external_userid, m.kind, m.media_id, m.sent_at) for m in messages],
            )

    async def rows(self, open_kfid: str, msgids: Sequence[str]) -> dict[str, dict[str, Any]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_ROWS, (open_kfid, list(msgids)))
            return {row["msgid"]: row for row in await cur.fetchall()}

    async def fetch(self, open_kfid: str, msgid: str) -> str:
        """Download and store one registered media message; returns its status afterwards."""
        row = (await self.rows(open_kfid, [msgid])).get(msgid)
        if row is None:
            return "failed"
        if row["status"] == "stored":
            return "stored"
        if datetime.now(UTC) - row["sent_at"] > MEDIA_ID_TTL:
            return await self._not_stored(
                open_kfid,
                msgid,
                "failed",
                None,
                "expired",
                "media_id 已超过 3 天有效期 / the media_id expired",
            )
        try:
            media = await self.client.download_media(row["media_id"])
        except (RateLimitedError, TransportError) as exc:
            errcode = exc.errcode if isinstance(exc, APIError) else None
            return await self._not_stored(open_kfid, msgid, "retrying", errcode, "wecom", str(exc))
        except APIError as exc:
            # 40007 invalid media_id and the like: asking again gets the same answer.
            return await self._not_stored(open_kfid, msgid, "failed", exc.errcode, "refused", str(exc))
        if len(media.data) > self.max_bytes:
            return await self._not_stored(
                open_kfid,
                msgid,
                "failed",
                None,
                "too_large",
                f"文件 {len(media.data)} 字节，超过 MEDIA_MAX_BYTES={self.max_bytes} / the file is larger "
                "than MEDIA_MAX_BYTES",
            )
        try:
            key = await self.store.put(media.data)
        except MediaStoreError as exc:
            return await self._not_stored(open_kfid, msgid, "retrying", None, "store", str(exc))
        filename = media.filename or f"{msgid}{_EXTENSIONS.get(row['kind'], '')}"
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                _STORED,
                (self.store.name, key, len(media.data), media.content_type, filename, open_kfid, msgid),
            )
            await conn.execute(_COUNT, (f"media.stored.{row['kind']}",))
        return "stored"

    async def _not_stored(
        self, open_kfid: str, msgid: str, status: str, errcode: int | None, reason: str, error: str
    ) -> str:
        attempted = 0 if reason == "expired" else 1
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_NOT_STORED, (status, attempted, errcode, error[:500], open_kfid, msgid))
            await conn.execute(_COUNT, (f"media.{status}.{reason}",))
        log.warning(
            "媒体下载%s / media download %s: msgid=%s %s",
            "失败，稍后重试" if status == "retrying" else "失败",
            "will be retried" if status == "retrying" else "failed",
            msgid,
            error[:200],
            extra={"decision": f"media_{status}"},
        )
        return status

    async def give_up(self, open_kfid: str, msgid: str, error: str) -> None:
        """The job's last attempt failed too: the message is answered without its media."""
        await self._not_stored(open_kfid, msgid, "failed", None, "gave_up", error)

    async def purge(self, retention: timedelta) -> int:
        """Forget media received more than `retention` ago (MEDIA_RETENTION_DAYS); returns the files deleted."""
        async with self.pool.connection() as conn, conn.transaction():
            rows = await (await conn.execute(_PURGE_ROWS, (retention,))).fetchall()
            keys = sorted({r[0] for r in rows if r[0]})
            unreferenced = [r[0] for r in await (await conn.execute(_UNREFERENCED, (keys,))).fetchall()]
            await conn.execute(_PURGE_UPLOADS)
        await self.store.delete(unreferenced)
        if rows:
            log.info(
                "已清理 %d 条过期媒体记录、%d 个文件 / purged %d media rows and %d files",
                len(rows),
                len(unreferenced),
                len(rows),
                len(unreferenced),
                extra={"decision": "media_purged"},
            )
        return len(unreferenced)

    async def contents(self, open_kfid: str, msgids: Sequence[str]) -> dict[str, MediaContent]:
        """The responder's view of stored or failed media; images and voice come with their bytes."""
        found: dict[str, MediaContent] = {}
        for msgid, row in (await self.rows(open_kfid, msgids)).items():
            data = None
            status, error = row["status"], row["error"] or ""
            if status == "stored" and row["kind"] in READABLE_KINDS:
                try:
                    data = await self.store.get(row["sha256"])
                except MediaStoreError as exc:
                    status, error = "failed", str(exc)
            found[msgid] = MediaContent(
                kind=row["kind"],
                status=status,
                content_type=row["content_type"] or "",
                filename=row["filename"] or "",
                size=int(row["size"] or 0),
                sha256=row["sha256"] or "",
                data=data,
                error=error,
            )
        return found
