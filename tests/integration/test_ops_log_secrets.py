"""A full end-to-end run with every log line captured: no secret, token or message body in any of them.

Logging is configured exactly as `wxkf serve` does (`configure_logging`), at DEBUG so the chattiest
libraries (httpx, openai, procrastinate, uvicorn) write everything they would. The run: the callback
URL verification doctor sends, a customer message through the simulator, sync, the LLM responder
(local fake OpenAI), send_msg, and a refused gettoken.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import httpx

from tests.integration.kf_harness import running_pipeline
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.responder import build_responder
from wxkf.ops.doctor import DoctorContext, check_callback_url
from wxkf.ops.logging import configure_logging

LLM_KEY = "sk-e2e-llm-key-0123456789"
CUSTOMER_TEXT = "我的手机号是13800138000，请回电"


async def test_no_secret_in_any_log_line_of_a_full_run(
    settings_factory: Any, database: Any, restore_logging: None, tmp_path: Any
) -> None:
    stream = io.StringIO()
    with FakeOpenAI(api_key=LLM_KEY) as fake:
        fake.reply("您好，已为您登记回电。")
        llm: dict[str, Any] = {
            "llm_base_url": fake.base_url,
            "llm_api_key": LLM_KEY,
            "llm_model": "fake-model",
        }
        responder = build_responder(settings_factory(**llm), database)
        async with running_pipeline(settings_factory, responder, **llm) as run:
            sim = run.sim
            settings = settings_factory(**sim.settings_overrides(), **llm, log_level="DEBUG")
            log_dir = configure_logging(settings, stream=stream)

            # doctor's signed URL verification against the real callback route
            async with httpx.AsyncClient() as http:
                verify = settings_factory(**sim.settings_overrides(), wxkf_public_url=run.base_url)
                (callback,) = await check_callback_url(DoctorContext(settings=verify, http=http))
            assert callback.status == "ok"

            customer = sim.customers[0]
            await run.say(customer, CUSTOMER_TEXT)
            await run.until(lambda: _answered(run, customer))
            await run.idle()

            # a refused gettoken logs the WeCom error too
            await run.control("add_fault", "gettoken", errcode=60020, times=1)
            await run.control("invalidate_tokens")
            await run.say(customer, "还在吗")
            await run.idle()
            tokens = [row[0] for row in await run.query("SELECT access_token FROM wecom_access_tokens")]
        await responder.aclose()

    for handler in logging.getLogger().handlers:
        handler.flush()
    output = stream.getvalue() + "".join(p.read_text(encoding="utf-8") for p in sorted(log_dir.iterdir()))
    assert len(output.splitlines()) > 20  # the run was really logged
    assert "HTTP Request" in output or "kf/sync_msg" in output
    secrets = [
        sim.kf_secret,
        sim.contact_secret,
        sim.agent_secret,
        sim.callback_token,
        sim.encoding_aes_key,
        LLM_KEY,
        *tokens,
    ]
    assert tokens
    for secret in secrets:
        assert secret not in output
    assert CUSTOMER_TEXT not in output
    assert "13800138000" not in output


async def _answered(run: Any, customer: str) -> bool:
    return len(await run.texts(customer)) >= 1
