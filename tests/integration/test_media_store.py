"""The media store's three implementations, media downloads into it, and retention."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.conftest import serve_handler
from wxkf.media.errors import MediaNotFound, MediaStoreError
from wxkf.media.inbound import InboundMedia, MediaMessage
from wxkf.media.storage import DirectoryMediaStore, MediaStore, PostgresMediaStore, S3MediaStore
from wxkf.simulator.samples import sample_png
from wxkf.simulator.testing import SimulatorHandle
from wxkf.wecom.client import WeComClient
from wxkf.wecom.tokens import MemoryTokenStore


class FakeS3(BaseHTTPRequestHandler):
    """An S3-compatible bucket in memory: refuses unsigned requests and payloads whose signed hash lies."""

    objects: ClassVar[dict[str, bytes]] = {}

    def _refuse(self, status: int, code: str) -> None:
        body = f"<Error><Code>{code}</Code></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _signed(self, payload: bytes) -> bool:
        auth = self.headers.get("Authorization", "")
        return (
            auth.startswith("AWS4-HMAC-SHA256 Credential=AK/")
            and self.headers.get("x-amz-content-sha256") == hashlib.sha256(payload).hexdigest()
        )

    def do_PUT(self) -> None:
        payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._signed(payload):
            return self._refuse(403, "SignatureDoesNotMatch")
        self.objects[self.path] = payload
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        if not self._signed(b""):
            return self._refuse(403, "SignatureDoesNotMatch")
        if self.path not in self.objects:
            return self._refuse(404, "NoSuchKey")
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.objects[self.path])))
        self.end_headers()
        self.wfile.write(self.objects[self.path])

    def do_DELETE(self) -> None:
        self.objects.pop(self.path, None)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
async def pool(database_url: str) -> Any:
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as opened:
        yield opened


async def _round_trip(store: MediaStore) -> None:
    data = sample_png()
    key = await store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert await store.put(data) == key  # the same bytes are kept once
    assert await store.get(key) == data
    await store.delete([key])
    with pytest.raises(MediaNotFound):
        await store.get(key)
    await store.delete([key])  # deleting what is gone is fine


async def test_postgres_store(pool: Any) -> None:
    await _round_trip(PostgresMediaStore(pool))


async def test_directory_store(tmp_path: Path) -> None:
    store = DirectoryMediaStore(tmp_path / "media")
    await _round_trip(store)
    with pytest.raises(MediaNotFound):
        await store.get("../../etc/passwd")  # a key is a digest, never a path


async def test_s3_store_signs_its_requests() -> None:
    with serve_handler(FakeS3) as (url, handler):
        handler.objects = {}
        store = S3MediaStore(
            url, "media", region="us-east-1", access_key="AK", secret_key="SK", prefix="wxkf/"
        )
        try:
            await _round_trip(store)
            key = await store.put(b"hello s3")
            assert f"/media/wxkf/{key}" in handler.objects
        finally:
            await store.aclose()


async def test_s3_store_explains_an_unreachable_endpoint() -> None:
    store = S3MediaStore("http://127.0.0.1:9", "media", region="us-east-1", access_key="AK", secret_key="SK")
    try:
        with pytest.raises(MediaStoreError, match="MEDIA_S3_ENDPOINT"):
            await store.put(b"bytes!")
    finally:
        await store.aclose()


async def test_downloads_refuse_expired_and_oversized_media_and_retention_purges(
    sim: SimulatorHandle, pool: Any, database_url: str
) -> None:
    store = PostgresMediaStore(pool)
    async with WeComClient(
        sim.base_url, sim.corp_id, sim.kf_secret, token_store=MemoryTokenStore()
    ) as client:
        media = InboundMedia(pool, client, store, max_bytes=100)
        png = sample_png()  # 93 bytes: within the limit
        big = sample_png(64, 64)
        now = datetime.now(UTC)
        messages = [
            MediaMessage(
                "ok", "wm1", "image", sim.control.upload_media("image", png, "a.png", "image/png"), now
            ),
            MediaMessage(
                "big", "wm1", "image", sim.control.upload_media("image", big + b"x" * 200, "b.png"), now
            ),
            MediaMessage("old", "wm1", "image", "gone", now - timedelta(days=3, minutes=1)),
            MediaMessage("bad", "wm1", "file", "no-such-media-id", now),
        ]
        await media.register("wk1", messages)
        assert [await media.fetch("wk1", m.msgid) for m in messages] == [
            "stored",
            "failed",
            "failed",
            "failed",
        ]
        rows = await media.rows("wk1", [m.msgid for m in messages])
        assert rows["ok"]["filename"] == "a.png"
        assert "MEDIA_MAX_BYTES" in rows["big"]["error"]
        assert "3 天" in rows["old"]["error"]
        assert "40007" in rows["bad"]["error"]
        contents = await media.contents("wk1", ["ok"])
        assert contents["ok"].data == png
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE media_inbound SET created_at = now() - interval '31 days' WHERE msgid = 'ok'"
            )
        assert await media.purge(timedelta(days=30)) == 1
        with pytest.raises(MediaNotFound):
            await store.get(hashlib.sha256(png).hexdigest())
        assert sorted(await media.rows("wk1", [m.msgid for m in messages])) == ["bad", "big", "old"]
