"""`wxkf doctor` against the WeCom simulator configured into each failure an operator meets.

Each test breaks one thing the way it breaks in real deployments (wrong secret, untrusted IP,
deleted kf account, 接待设置 routing to humans, wrong LLM key, skewed clock) and asserts the
diagnosis and the fix the operator is shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import serve_handler
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.config import Settings
from wxkf.kf.ledger import record_messages
from wxkf.ops.doctor import (
    Check,
    DoctorReport,
    check_clock,
    check_database,
    check_kf_accounts,
    check_kf_routing,
    check_llm,
    check_wecom_tokens,
    run_doctor,
)
from wxkf.simulator.testing import SimulatorHandle
from wxkf.wecom.client import WeComClient
from wxkf.wecom.tokens import MemoryTokenStore

WECOM_CHECKS: list[Check] = [check_database, check_wecom_tokens, check_kf_accounts, check_kf_routing]


def only(report: DoctorReport, check: str) -> Any:
    (result,) = report.by_check(check)
    return result


async def kf_client(sim: SimulatorHandle) -> WeComClient:
    return WeComClient(sim.base_url, sim.corp_id, sim.kf_secret, token_store=MemoryTokenStore())


async def admin_call(sim: SimulatorHandle, api: str, body: dict[str, Any]) -> None:
    """What an admin does in the console, through the kf API (the client has no account editing)."""
    async with await kf_client(sim) as client:
        token = await client.access_token()
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        response = await http.post(f"/cgi-bin/{api}", params={"access_token": token}, json=body)
    assert response.json()["errcode"] == 0


async def test_healthy_simulator_passes_every_wecom_check(
    sim: SimulatorHandle, settings_factory: Any
) -> None:
    report = await run_doctor(
        settings_factory(**sim.settings_overrides()), checks=[*WECOM_CHECKS, check_clock]
    )

    for name in (
        "database",
        "pgvector",
        "wecom_token:kf",
        "wecom_token:contact",
        "wecom_token:agent",
        "clock",
    ):
        assert only(report, name).status == "ok", only(report, name)
    assert sim.open_kfid in only(report, "kf_accounts").detail
    assert only(report, "kf_routing").status == "skip"  # nothing recorded yet to inspect
    assert report.ok


async def test_wrong_kf_secret_is_40001_with_where_to_copy_it(
    sim: SimulatorHandle, settings_factory: Any
) -> None:
    overrides = sim.settings_overrides() | {"wecom_kf_secret": "not-the-kf-secret"}
    report = await run_doctor(settings_factory(**overrides), checks=WECOM_CHECKS)

    kf = only(report, "wecom_token:kf")
    assert kf.status == "fail"
    assert kf.errcode == 40001
    assert "WECOM_KF_SECRET：secret 不正确（40001 不合法的secret参数）" in kf.detail
    assert "应用管理 → 微信客服 → API → Secret" in kf.fix
    assert kf.see == "docs/troubleshooting.md#errcode-40001"
    assert only(report, "wecom_token:contact").status == "ok"  # the other secrets are still checked
    assert only(report, "kf_accounts").status == "skip"
    assert not report.ok
    assert all("not-the-kf-secret" not in r.detail + r.fix for r in report.results)


async def test_wrong_corp_id_is_40013(sim: SimulatorHandle, settings_factory: Any) -> None:
    overrides = sim.settings_overrides() | {"wecom_corp_id": "ww0000000000000000"}
    report = await run_doctor(settings_factory(**overrides), checks=[check_wecom_tokens])

    kf = only(report, "wecom_token:kf")
    assert (kf.status, kf.errcode) == ("fail", 40013)
    assert "企业ID 不正确" in kf.detail
    assert "我的企业 → 企业信息 → 企业ID" in kf.fix


async def test_untrusted_ip_is_60020_and_names_the_ip_wecom_saw(
    sim: SimulatorHandle, settings_factory: Any
) -> None:
    sim.control.add_fault("gettoken", errcode=60020)
    report = await run_doctor(settings_factory(**sim.settings_overrides()), checks=[check_wecom_tokens])

    for name in ("kf", "contact", "agent"):
        result = only(report, f"wecom_token:{name}")
        assert (result.status, result.errcode) == ("fail", 60020)
        assert "企业微信拒绝了来自 127.0.0.1 的访问（60020 不安全的访问IP）" in result.detail
        assert result.fix.startswith("把 127.0.0.1 加入企业可信IP。")
        assert "企业可信IP" in result.fix
        assert result.see == "docs/troubleshooting.md#errcode-60020"


async def test_deleted_kf_account_is_95004(
    sim: SimulatorHandle, settings_factory: Any, database_url: str
) -> None:
    # wxkf has been syncing the seeded account; then an admin deletes it and creates another.
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(
            "INSERT INTO kf_sync_cursors (open_kfid, cursor) VALUES (%s, 'c1')", (sim.open_kfid,)
        )
        await conn.commit()
    await admin_call(sim, "kf/account/add", {"name": "新客服"})
    await admin_call(sim, "kf/account/del", {"open_kfid": sim.open_kfid})

    report = await run_doctor(settings_factory(**sim.settings_overrides()), checks=WECOM_CHECKS)

    listed, stale = report.by_check("kf_accounts")
    assert listed.status == "ok"
    assert "新客服" in listed.detail
    assert (stale.status, stale.errcode) == ("fail", 95004)
    assert stale.detail.startswith(f"{sim.open_kfid}：open_kfid 不存在")
    assert "kf/account/list" in stale.fix
    assert stale.see == "docs/troubleshooting.md#errcode-95004"


async def record_customer_message(sim: SimulatorHandle, database_url: str, customer: str) -> None:
    """The customer writes; wxkf records it exactly as its sync does (sync_msg → ledger)."""
    sim.control.send_text(customer, "你好，在吗？")
    async with await kf_client(sim) as client:
        page = await client.sync_msg(sim.open_kfid)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await record_messages(conn, sim.open_kfid, page.msg_list)
        await conn.commit()


async def test_routing_to_humans_is_the_95018_risk(
    sim: SimulatorHandle, settings_factory: Any, database_url: str
) -> None:
    # 接待方式「人工接待优先」 with a servicer on duty: new sessions go straight to state 3.
    sim.control.set_routing("human_first")
    await record_customer_message(sim, database_url, sim.customers[0])
    assert sim.control.session(sim.customers[0])["service_state"] == 3  # the premise

    report = await run_doctor(settings_factory(**sim.settings_overrides()), checks=WECOM_CHECKS)

    routing = only(report, "kf_routing")
    assert (routing.status, routing.errcode) == ("fail", 95018)
    assert f"{sim.customers[0]}（state=3）" in routing.detail
    assert "未经 wxkf 回复就进入了人工接待" in routing.detail
    assert "接待设置" in routing.fix
    assert "仅智能助手接待" in routing.fix
    assert routing.see == "docs/troubleshooting.md#errcode-95018"


async def test_routing_to_the_bot_passes(
    sim: SimulatorHandle, settings_factory: Any, database_url: str
) -> None:
    sim.control.set_routing("ai_only")
    await record_customer_message(sim, database_url, sim.customers[0])

    report = await run_doctor(settings_factory(**sim.settings_overrides()), checks=WECOM_CHECKS)

    assert only(report, "kf_routing").status == "ok"
    assert report.ok


@pytest.fixture
def fake_llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-the-right-key") as fake:
        yield fake


async def test_wrong_llm_key_is_401_with_the_key_fix(fake_llm: FakeOpenAI, tmp_path: Any) -> None:
    settings = Settings(
        _env_file=None, llm_base_url=fake_llm.base_url, llm_api_key="sk-a-wrong-key", wxkf_data_dir=tmp_path
    )
    report = await run_doctor(settings, checks=[check_llm])

    llm = only(report, "llm")
    assert (llm.status, llm.errcode) == ("fail", 401)
    assert "拒绝了 API Key（HTTP 401）" in llm.detail
    assert "LLM_API_KEY（或 DEEPSEEK_API_KEY）" in llm.fix
    assert llm.see == "docs/troubleshooting.md#llm-auth-401"
    assert "sk-a-wrong-key" not in llm.detail + llm.fix


async def test_right_llm_key_passes(fake_llm: FakeOpenAI, tmp_path: Any) -> None:
    settings = Settings(
        _env_file=None,
        llm_base_url=fake_llm.base_url,
        llm_api_key="sk-the-right-key",
        llm_model="fake-model",
        wxkf_data_dir=tmp_path,
    )
    report = await run_doctor(settings, checks=[check_llm])
    assert only(report, "llm").status == "ok"
    assert len(fake_llm.chat_requests()) == 1


class _SkewedDate(BaseHTTPRequestHandler):
    skew_seconds = 0.0

    def date_time_string(self, timestamp: float | None = None) -> str:
        import time

        return formatdate(time.time() + self.skew_seconds, usegmt=True)

    def do_HEAD(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def skewed_server() -> Iterator[tuple[str, type[_SkewedDate]]]:
    with serve_handler(_SkewedDate) as served:
        yield served


@pytest.mark.parametrize(("skew", "status"), [(0.0, "ok"), (-30.0, "warn"), (600.0, "fail")])
async def test_clock_is_compared_with_the_date_wecom_sends(
    skewed_server: tuple[str, type[_SkewedDate]], tmp_path: Any, skew: float, status: str
) -> None:
    url, handler = skewed_server
    handler.skew_seconds = skew
    report = await run_doctor(
        Settings(_env_file=None, wecom_api_base=url, wxkf_data_dir=tmp_path), checks=[check_clock]
    )
    clock = only(report, "clock")
    assert clock.status == status
    if skew:
        # The Date header has whole seconds, and a loaded machine adds latency: allow two seconds.
        match = re.search(r"本机比企业微信(慢|快)约 (\d+) 秒", clock.detail)
        assert match is not None
        assert match.group(1) == ("慢" if skew > 0 else "快")
        assert abs(int(match.group(2)) - abs(skew)) <= 2
    if status == "fail":
        assert "NTP" in clock.fix
