"""Where /metrics gets its numbers: refused callbacks, WeCom errcodes by API, LLM latency.

Each source writes to PostgreSQL (`kf_counters`), so the numbers are the same whichever process
is scraped; these tests write through the real code paths and read through the real export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline
from tests.integration.test_ops_http import sample
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.prompts import HANDOFF_TEXT
from wxkf.agent.responder import LLMResponder, build_responder
from wxkf.config import Settings
from wxkf.db.engine import Database
from wxkf.kf.responder import Conversation, InboundMessage, ReplyRequest
from wxkf.ops.metrics import LLM_LATENCY_BUCKETS, collect, render
from wxkf.simulator.callbacks import event_xml
from wxkf.simulator.testing import run_simulator
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.crypto import CallbackCrypto, signature
from wxkf.wecom.errors import APIError
from wxkf.wecom.tokens import MemoryTokenStore


async def metrics_text(database: Database) -> str:
    return render(await collect(database.pool))


# --- callbacks refused, by outcome ---------------------------------------------------------------


async def test_refused_callbacks_are_counted_by_outcome_and_nothing_else_is_recorded(
    settings_factory: Any,
) -> None:
    async with running_pipeline(
        settings_factory, ScriptedResponder(), run_worker=False, kf_accounts=""
    ) as run:
        xml = event_xml(run.sim.corp_id, run.sim.open_kfid, "TOKEN1", 1_800_000_000)
        body, params = run.sim.crypto().callback_envelope(xml)
        other = CallbackCrypto(run.sim.callback_token, run.sim.encoding_aes_key, "wwSomeOtherCorp")
        foreign, foreign_params = other.callback_envelope(
            event_xml("wwSomeOtherCorp", run.sim.open_kfid, "T", 1), "1"
        )
        bad_cipher = "bm90IGNpcGhlcnRleHQ="
        cipher_params = {
            **params,
            "msg_signature": signature(
                run.sim.callback_token, params["timestamp"], params["nonce"], bad_cipher
            ),
        }
        async with httpx.AsyncClient(base_url=run.base_url) as http:
            refused = [
                await http.post(
                    "/wecom/callback", params={**params, "msg_signature": "0" * 40}, content=body
                ),
                await http.post("/wecom/callback", params=foreign_params, content=foreign),
                await http.post("/wecom/callback", params=params, content="<xml><Encrypt>"),
                await http.post(
                    "/wecom/callback",
                    params=cipher_params,
                    content=f"<xml><Encrypt>{bad_cipher}</Encrypt></xml>",
                ),
                await http.post("/wecom/callback", params={}, content=body),
                await http.post("/wecom/callback", params=params, content=b"x" * (1024 * 1024 + 1)),
                await http.get(
                    "/wecom/callback",
                    params={"msg_signature": "0" * 40, "timestamp": "1", "nonce": "2", "echostr": "abc"},
                ),
            ]
            metrics = (await http.get("/metrics")).text
        assert [r.status_code for r in refused] == [403, 403, 400, 400, 400, 413, 403]
        assert sample(metrics, "wxkf_callbacks_total", outcome="bad_signature") == 1
        assert sample(metrics, "wxkf_callbacks_total", outcome="wrong_corp_id") == 1
        assert sample(metrics, "wxkf_callbacks_total", outcome="malformed") == 3
        assert sample(metrics, "wxkf_callbacks_total", outcome="oversized") == 1
        assert sample(metrics, "wxkf_callbacks_total", outcome="url_refused") == 1
        assert sample(metrics, "wxkf_callbacks_total", outcome="accepted") == 0
        # The counter is the only trace: no event, no message, no job.
        assert await _rows(run, "kf_callback_events", "kf_inbound", "procrastinate_jobs") == 0


async def _rows(run: RunningPipeline, *tables: str) -> int:
    total = 0
    for table in tables:
        total += int((await run.query(f"SELECT count(*) FROM {table}"))[0][0])
    return total


async def test_a_non_kf_callback_is_acknowledged_and_counted_as_ignored(settings_factory: Any) -> None:
    async with running_pipeline(
        settings_factory, ScriptedResponder(), run_worker=False, kf_accounts=""
    ) as run:
        xml = (
            f"<xml><ToUserName><![CDATA[{run.sim.corp_id}]]></ToUserName><CreateTime>1</CreateTime>"
            "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event></xml>"
        )
        body, params = run.sim.crypto().callback_envelope(xml)
        async with httpx.AsyncClient(base_url=run.base_url) as http:
            response = await http.post("/wecom/callback", params=params, content=body)
            metrics = (await http.get("/metrics")).text
        assert (response.status_code, response.text) == (200, "success")
        assert sample(metrics, "wxkf_callbacks_total", outcome="ignored") == 1
        assert await _rows(run, "kf_callback_events") == 0


# --- WeCom errcodes, by API ------------------------------------------------------------------------


async def test_every_wecom_errcode_of_the_pipeline_client_is_counted_by_api(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, ScriptedResponder()) as run:
        customer = run.sim.customers[0]
        await run.control("add_fault", "kf/sync_msg", errcode=60020, times=1)
        await run.say(customer, "第一条")
        await run.idle()
        # 95001 is final: the reply is given up, and the errcode counted once.
        await run.control("add_fault", "kf/send_msg", errcode=95001, times=1)
        await run.say(customer, "第二条")
        await run.idle()
        metrics = await metrics_text(run.app.state.database)
    assert sample(metrics, "wxkf_wecom_errors_total", api="kf/sync_msg", errcode="60020") == 1
    assert sample(metrics, "wxkf_wecom_errors_total", api="kf/send_msg", errcode="95001") == 1


async def test_the_client_hook_sees_each_errcode_and_cannot_change_the_outcome() -> None:
    seen: list[tuple[str, int]] = []

    async def broken_counter(api: str, errcode: int) -> None:
        seen.append((api, errcode))
        raise RuntimeError("the counter's database is down")

    async with (
        run_simulator() as sim,
        WeComClient(
            sim.base_url,
            sim.corp_id,
            "not-the-secret",
            token_store=MemoryTokenStore(),
            retry=RetryPolicy(attempts=1),
            on_api_error=broken_counter,
        ) as client,
    ):
        with pytest.raises(APIError) as raised:
            await client.list_accounts()
    assert raised.value.errcode == 40001
    assert seen == [("gettoken", 40001)]


# --- LLM latency ---------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-demo") as server:
        yield server


def _request(text: str) -> ReplyRequest:
    message = InboundMessage("m1", "text", {"content": text}, text, datetime.now(UTC))
    return ReplyRequest(Conversation("wkSHOP", "wmCUSTOMER"), [message], remaining_budget=5)


async def test_llm_latency_is_a_histogram_of_every_call_failed_ones_included(
    settings_factory: Callable[..., Settings], database: Database, fake: FakeOpenAI
) -> None:
    settings = settings_factory(deepseek_api_key="sk-demo", llm_base_url=fake.base_url, llm_max_retries=0)
    responder = build_responder(settings, database)
    assert isinstance(responder, LLMResponder)
    try:
        fake.reply("满 99 元包邮哦。")
        assert (await responder.respond(_request("运费怎么算？"))).text.startswith("满 99 元包邮")
        fake.error(401)
        # The knowledge base is empty here: the offline fallback has nothing and hands over.
        assert (await responder.respond(_request("运费怎么算？"))).text == HANDOFF_TEXT
    finally:
        await responder.aclose()
    metrics = await metrics_text(database)
    assert sample(metrics, "wxkf_llm_latency_seconds_count") == 2
    assert sample(metrics, "wxkf_llm_latency_seconds_bucket", le="+Inf") == 2
    assert sample(metrics, "wxkf_llm_latency_seconds_sum") > 0
    buckets = [sample(metrics, "wxkf_llm_latency_seconds_bucket", le=f"{b:g}") for b in LLM_LATENCY_BUCKETS]
    assert buckets == sorted(buckets)
    assert buckets[-1] <= 2
    assert sample(metrics, "wxkf_llm_failures_total", kind="auth") == 1
    assert "# TYPE wxkf_llm_latency_seconds histogram" in metrics
