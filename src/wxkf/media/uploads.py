"""Media files by content hash and their WeCom uploads (see the package docstring).

    MediaError             a media operation failed; the message says why
    ├── MediaNotFound          no file with that digest was saved
    └── InvalidMedia           the bytes break a media/upload rule (size, type) before any upload

WeCom's own refusals of an upload (40004, 40006, 44001 …) are `wxkf.wecom.errors.APIError`.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from wxkf.clock import Clock, utcnow
from wxkf.wecom.client import WeComClient
from wxkf.wecom.models import MEDIA_MAX_BYTES, MEDIA_MIN_BYTES, MediaKind

MEDIA_LIFETIME = timedelta(days=3)  # wecom-api §8: "media_id仅三天内有效"


class MediaError(Exception):
    """A media operation failed; the message says why (Chinese first)."""


class MediaNotFound(MediaError):
    pass


class InvalidMedia(MediaError):
    pass


@dataclass(frozen=True)
class StoredMedia:
    digest: str
    filename: str
    content_type: str
    size: int


_SAVE = """
INSERT INTO media_files (digest, filename, content_type, size, data)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (digest) DO NOTHING
"""
_FILE = "SELECT filename, content_type, size, data FROM media_files WHERE digest = %s"
_INFO = "SELECT digest, filename, content_type, size FROM media_files WHERE digest = %s"
_FRESH_UPLOAD = """
SELECT media_id FROM media_uploads WHERE digest = %s AND kind = %s AND expires_at > %s
"""
_STORE_UPLOAD = """
INSERT INTO media_uploads (digest, kind, media_id, uploaded_at, expires_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (digest, kind) DO UPDATE
SET media_id = EXCLUDED.media_id, uploaded_at = EXCLUDED.uploaded_at, expires_at = EXCLUDED.expires_at
"""


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MediaUploads:
    """Save bytes once by content; hand out a media_id that is valid for at least `margin` more."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        client: Callable[[], WeComClient],
        *,
        clock: Clock = utcnow,
        margin: timedelta = timedelta(hours=12),
    ) -> None:
        self._pool = pool
        self._client = client  # built on first upload: a process that only saves needs no WeCom secret
        self._clock = clock
        self._margin = margin

    async def save(self, data: bytes, filename: str, content_type: str | None = None) -> str:
        """Keep `data` (idempotent); returns its digest, the key of `media_id`."""
        if len(data) < MEDIA_MIN_BYTES:
            raise InvalidMedia(
                f"文件太小（{len(data)} 字节），企业微信要求大于 5 字节 / media must be larger than 5 bytes"
            )
        largest = max(MEDIA_MAX_BYTES.values())
        if len(data) > largest:
            raise InvalidMedia(f"文件超过 {largest >> 20} MB / media over {largest >> 20} MB")
        digest = content_digest(data)
        kind = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        async with self._pool.connection() as conn:
            await conn.execute(_SAVE, (digest, filename, kind, len(data), data))
        return digest

    async def info(self, digest: str) -> StoredMedia:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_INFO, (digest,))).fetchone()
        if row is None:
            raise MediaNotFound(f"没有这个文件 / no saved media {digest[:12]}…")
        return StoredMedia(row[0], row[1], row[2], row[3])

    async def media_id(self, digest: str, kind: MediaKind) -> str:
        """A media_id for the saved file, valid until at least `margin` from now (uploads when needed).

        Two processes uploading the same file at the same moment both succeed; either media_id works.
        """
        now = self._clock()
        async with self._pool.connection() as conn:
            row = await (await conn.execute(_FRESH_UPLOAD, (digest, kind, now + self._margin))).fetchone()
            if row is not None:
                return str(row[0])
            stored = await (await conn.execute(_FILE, (digest,))).fetchone()
        if stored is None:
            raise MediaNotFound(f"没有这个文件 / no saved media {digest[:12]}…")
        filename, _content_type, size, data = stored
        limit = MEDIA_MAX_BYTES[kind]
        if size > limit:
            raise InvalidMedia(
                f"{kind} 最大 {limit >> 20} MB，文件有 {size} 字节 / a {kind} is at most {limit >> 20} MB"
            )
        uploaded = await self._client().upload_media(kind, filename, bytes(data))
        uploaded_at = self._uploaded_at(uploaded.created_at, now)
        async with self._pool.connection() as conn:
            await conn.execute(
                _STORE_UPLOAD, (digest, kind, uploaded.media_id, uploaded_at, uploaded_at + MEDIA_LIFETIME)
            )
        return uploaded.media_id

    @staticmethod
    def _uploaded_at(created_at: int, now: datetime) -> datetime:
        """WeCom's created_at (unix seconds) when it gave one, else our own clock: the 3 days count from it."""
        if created_at > 0:
            return datetime.fromtimestamp(min(created_at, int(now.timestamp())), now.tzinfo)
        return now
