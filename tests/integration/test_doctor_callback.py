"""doctor's callback-URL check against what operators meet: nothing listening, a wrong Token, a URL
that answers something other than the decrypted echostr (wecom-api §1.4) — and the real route passing.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest

from tests.conftest import serve_handler
from tests.integration.kf_harness import ScriptedResponder, free_port, running_pipeline
from wxkf.ops.doctor import CheckResult, DoctorContext, check_callback_url

GUIDE = "docs/troubleshooting.md#messages-not-received"


async def check(settings: Any) -> CheckResult:
    async with httpx.AsyncClient(timeout=5.0) as http:
        (result,) = await check_callback_url(DoctorContext(settings=settings, http=http))
    return result


async def test_the_real_callback_route_passes_and_a_wrong_token_is_a_signature_mismatch(
    settings_factory: Any,
) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder(), run_worker=False) as run:
        right = settings_factory(**run.sim.settings_overrides(), wxkf_public_url=run.base_url)
        ok = await check(right)
        wrong_token = settings_factory(
            **{**run.sim.settings_overrides(), "wecom_token": "NotTheConsoleToken"},
            wxkf_public_url=run.base_url,
        )
        refused = await check(wrong_token)
    assert ok.status == "ok"
    assert "通过签名验证" in ok.detail
    assert refused.status == "fail"
    assert "HTTP 403" in refused.detail
    assert "signature or corp id mismatch" in refused.detail
    assert "WECOM_TOKEN" in refused.fix
    assert "restart wxkf serve" in refused.fix
    assert refused.see == GUIDE
    assert "NotTheConsoleToken" not in refused.detail + refused.fix


async def test_nothing_listening_is_unreachable_with_the_serve_fix(settings_factory: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    result = await check(
        settings_factory(
            wecom_corp_id="wwdoctor", wecom_token="tok", wecom_aes_key="a" * 43, wxkf_public_url=url
        )
    )
    assert result.status == "fail"
    assert f"{url}/wecom/callback 无法访问 / unreachable: ConnectError" in result.detail
    assert "wxkf serve is running" in result.fix
    assert result.see == GUIDE


class _OtherAnswer(BaseHTTPRequestHandler):
    """A URL that is not wxkf's callback: a web page, or the plaintext JSON-quoted by a framework."""

    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def other_server() -> Iterator[tuple[str, type[_OtherAnswer]]]:
    with serve_handler(_OtherAnswer) as served:
        yield served


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"<html><body>Welcome to nginx!</body></html>", "Welcome to nginx!"),
        (b'"1616140317555161061"\n', '"1616140317555161061"'),
    ],
)
async def test_a_url_answering_something_else_is_told_apart_from_a_signature_problem(
    settings_factory: Any, other_server: tuple[str, type[_OtherAnswer]], body: bytes, shown: str
) -> None:
    url, handler = other_server
    handler.body = body
    result = await check(
        settings_factory(
            wecom_corp_id="wwdoctor", wecom_token="tok", wecom_aes_key="a" * 43, wxkf_public_url=url
        )
    )
    assert result.status == "fail"
    assert "answered something else than the decrypted echostr" in result.detail
    assert shown in result.detail
    assert "reverse proxy" in result.fix
    assert "bare plaintext" in result.fix
    assert result.see == GUIDE
