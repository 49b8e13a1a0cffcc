"""The media store: bytes kept by their SHA-256, behind one small seam with three implementations.

    store = media_store(settings, pool)          # what MEDIA_STORE names
    key = await store.put(data)                  # the SHA-256 hex of `data`; the same bytes are kept once
    data = await store.get(key)                  # MediaNotFound when absent
    await store.delete([key, …])                 # retention; absent keys are fine

* `PostgresMediaStore` (default): table `media_blobs`, shared by every replica with no extra service.
* `DirectoryMediaStore`: files under `WXKF_DATA_DIR/media/ab/abcdef…`, for one machine.
* `S3MediaStore`: any S3-compatible service (AWS S3, MinIO, COS, OSS …), objects under
  `MEDIA_S3_PREFIX`, requests signed with AWS Signature Version 4 (path-style URLs, which every
  S3-compatible service accepts).

What a key belongs to (a customer's message, a knowledge-base attachment) is recorded elsewhere;
the store only keeps bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
from psycopg_pool import AsyncConnectionPool

from wxkf.config import Settings
from wxkf.media.errors import MediaNotFound, MediaStoreError


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class MediaStore(Protocol):
    name: str

    async def put(self, data: bytes) -> str: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, keys: Sequence[str]) -> None: ...

    async def aclose(self) -> None: ...


# --- PostgreSQL -------------------------------------------------------------------------------------

_PUT_BLOB = "INSERT INTO media_blobs (sha256, data) VALUES (%s, %s) ON CONFLICT (sha256) DO NOTHING"
_GET_BLOB = "SELECT data FROM media_blobs WHERE sha256 = %s"
_DELETE_BLOBS = "DELETE FROM media_blobs WHERE sha256 = ANY(%s)"


class PostgresMediaStore:
    name = "postgres"

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def put(self, data: bytes) -> str:
        key = content_key(data)
        async with self.pool.connection() as conn:
            await conn.execute(_PUT_BLOB, (key, data))
        return key

    async def get(self, key: str) -> bytes:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(_GET_BLOB, (key,))).fetchone()
        if row is None:
            raise MediaNotFound(key, self.name)
        return bytes(row[0])

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            async with self.pool.connection() as conn:
                await conn.execute(_DELETE_BLOBS, (list(keys),))

    async def aclose(self) -> None:
        return None


# --- the data dir -----------------------------------------------------------------------------------


class DirectoryMediaStore:
    name = "dir"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise MediaNotFound(key, self.name)
        return self.root / key[:2] / key

    async def put(self, data: bytes) -> str:
        key = content_key(data)
        path = self._path(key)

        def write() -> None:
            if path.exists():
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.part")
            partial.write_bytes(data)
            partial.replace(path)  # atomic: a reader never sees half a file

        await asyncio.to_thread(write)
        return key

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise MediaNotFound(key, self.name) from None

    async def delete(self, keys: Sequence[str]) -> None:
        def remove() -> None:
            for key in keys:
                self._path(key).unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def aclose(self) -> None:
        return None


# --- S3-compatible ------------------------------------------------------------------------------------

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    url: str,
    *,
    region: str,
    access_key: str,
    secret_key: str,
    payload_sha256: str,
    now: datetime,
    service: str = "s3",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """The headers that sign one request with AWS Signature Version 4 (host, x-amz-date,
    x-amz-content-sha256, Authorization). `url` must already be percent-encoded."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(v.split()) for k, v in (headers or {}).items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = amz_date
    if service == "s3":
        signed["x-amz-content-sha256"] = payload_sha256
    names = sorted(signed)
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, _, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
        )
    )
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            query,
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    result = {n: signed[n] for n in names if n != "host"}
    result["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return result


class S3MediaStore:
    name = "s3"

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        region: str,
        access_key: str,
        secret_key: str,
        prefix: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self.prefix = prefix
        self._http = httpx.AsyncClient(timeout=60, transport=transport)

    def _url(self, key: str) -> str:
        return f"{self.endpoint}/{quote(self.bucket)}/{quote(self.prefix + key)}"

    async def _request(self, method: str, key: str, data: bytes = b"") -> httpx.Response:
        url = self._url(key)
        digest = hashlib.sha256(data).hexdigest() if data else _EMPTY_SHA256
        headers = sigv4_headers(
            method,
            url,
            region=self.region,
            access_key=self._access_key,
            secret_key=self._secret_key,
            payload_sha256=digest,
            now=datetime.now(UTC),
        )
        try:
            return await self._http.request(method, url, content=data or None, headers=headers)
        except httpx.HTTPError as exc:
            raise MediaStoreError(
                f"无法连接 S3 存储 {self.endpoint}（检查 MEDIA_S3_ENDPOINT）/ cannot reach the S3 "
                f"endpoint: {type(exc).__name__}"
            ) from exc

    def _refused(self, response: httpx.Response, action: str) -> MediaStoreError:
        code = ""
        if b"<Code>" in response.content:
            code = response.content.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode(errors="replace")
        return MediaStoreError(
            f"S3 存储拒绝了{action}（HTTP {response.status_code} {code}），检查 MEDIA_S3_BUCKET 与密钥 / "
            f"the S3 store refused to {action}: HTTP {response.status_code} {code}"
        )

    async def put(self, data: bytes) -> str:
        key = content_key(data)
        response = await self._request("PUT", key, data)
        if response.status_code >= 300:
            raise self._refused(response, "写入 / write")
        return key

    async def get(self, key: str) -> bytes:
        response = await self._request("GET", key)
        if response.status_code == 404:
            raise MediaNotFound(key, self.name)
        if response.status_code >= 300:
            raise self._refused(response, "读取 / read")
        return response.content

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            response = await self._request("DELETE", key)
            if response.status_code >= 300 and response.status_code != 404:
                raise self._refused(response, "删除 / delete")

    async def aclose(self) -> None:
        await self._http.aclose()


def media_store(settings: Settings, pool: AsyncConnectionPool[Any]) -> MediaStore:
    """The store MEDIA_STORE names (`pool` serves the PostgreSQL one)."""
    if settings.media_store == "dir":
        return DirectoryMediaStore(settings.wxkf_data_dir / "media")
    if settings.media_store == "s3":
        secret = settings.media_s3_secret_key
        return S3MediaStore(
            settings.media_s3_endpoint,
            settings.media_s3_bucket,
            region=settings.media_s3_region,
            access_key=settings.media_s3_access_key,
            secret_key=secret.get_secret_value() if secret else "",
            prefix=settings.media_s3_prefix,
        )
    return PostgresMediaStore(pool)
