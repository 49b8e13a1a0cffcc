"""Uploads for outbound media: media/upload once per content, reused while its media_id lives.

wecom-api §8: "media_id仅三天内有效". `UploadCache.media_id` returns the media_id of bytes uploaded
less than 3 days minus `margin` ago (by SHA-256 and kind, shared by every process through
`media_uploads`), else uploads them from the media store and remembers the new one. The margin
(MEDIA_REFRESH_MARGIN_HOURS) covers a message queued just before the old media_id ran out. The
upload time is this process's clock taken before the upload, so it is never later than WeCom's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from wxkf.clock import Clock, utcnow
from wxkf.media.storage import MediaStore
from wxkf.wecom.client import WeComClient
from wxkf.wecom.models import MediaKind

UPLOAD_TTL = timedelta(days=3)  # wecom-api §8

_CACHED = "SELECT media_id FROM media_uploads WHERE sha256 = %s AND kind = %s AND uploaded_at > %s"
_REMEMBER = """
INSERT INTO media_uploads (sha256, kind, media_id, uploaded_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (sha256, kind) DO UPDATE SET media_id = EXCLUDED.media_id, uploaded_at = EXCLUDED.uploaded_at
"""


class UploadCache:
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        client: WeComClient,
        store: MediaStore,
        *,
        margin: timedelta = timedelta(hours=12),
        clock: Clock = utcnow,
    ) -> None:
        self.pool = pool
        self.client = client
        self.store = store
        self.margin = margin
        self.clock = clock
        self.uploads = 0  # this process's count, for tests and the benchmark

    async def media_id(self, kind: MediaKind, sha256: str, filename: str) -> str:
        now = self.clock()
        async with self.pool.connection() as conn:
            cutoff = now - (UPLOAD_TTL - self.margin)
            row = await (await conn.execute(_CACHED, (sha256, kind, cutoff))).fetchone()
        if row is not None:
            return str(row[0])
        data = await self.store.get(sha256)
        response = await self.client.upload_media(kind, filename, data)
        self.uploads += 1
        async with self.pool.connection() as conn:
            await conn.execute(_REMEMBER, (sha256, kind, response.media_id, now))
        return response.media_id
