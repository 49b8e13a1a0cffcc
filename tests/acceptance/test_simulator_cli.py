"""`wxkf simulator` as an operator runs it: its own process on a free port, the seeded world printed,
and a real WeCom API call (gettoken, then kf/account/list) with the printed credentials."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.kf_harness import free_port
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.tokens import MemoryTokenStore

START_TIMEOUT = 60.0


async def read_world(stdout: asyncio.StreamReader) -> dict[str, str]:
    """The printed lines up to the control API's, as {VARIABLE: value} plus the account's open_kfid."""
    world: dict[str, str] = {}
    lines: list[str] = []
    while not any("/sim/world" in line for line in lines):
        raw = await asyncio.wait_for(stdout.readline(), START_TIMEOUT)
        assert raw, "the simulator exited before printing its world:\n" + "\n".join(lines)
        lines.append(raw.decode())
    text = "".join(lines)
    world.update(re.findall(r"\b(WECOM_[A-Z_]+)=(\S+)", text))
    account = re.search(r"open_kfid\s+(\S+)", text)
    assert account is not None, text
    world["open_kfid"] = account.group(1)
    return world


async def wait_listening(base_url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(base_url=base_url) as http:
        while True:
            try:
                if (await http.get("/sim/ping")).status_code == 200:
                    return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)  # polling the port: uvicorn prints nothing we could wait on


async def _start_simulator(port: int) -> asyncio.subprocess.Process:
    """`wxkf simulator` with a fixed seed, as a user starts it, without the caller's WECOM_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECOM_", "WXKF_"))}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxkf.cli", "simulator", "--port", str(port), "--seed", "7", "--customers", "2",
        stdout=asyncio.subprocess.PIPE,
        env={**env, "COLUMNS": "200"},
    )  # fmt: skip


async def test_the_simulator_process_prints_its_world_and_answers_the_kf_api() -> None:
    port = free_port()
    process = await _start_simulator(port)
    try:
        assert process.stdout is not None
        world = await read_world(process.stdout)
        base_url = f"http://127.0.0.1:{port}"
        assert world["WECOM_API_BASE"] == base_url
        assert world["WECOM_CORP_ID"].startswith("ww")
        assert world["open_kfid"].startswith("wk")
        await wait_listening(base_url)
        async with WeComClient(
            base_url,
            world["WECOM_CORP_ID"],
            world["WECOM_KF_SECRET"],
            token_store=MemoryTokenStore(),
            retry=RetryPolicy(attempts=1),
        ) as client:
            token = await client.access_token()  # gettoken
            accounts = await client.list_accounts()  # kf/account/list
        assert token
        assert world["open_kfid"] in [a.open_kfid for a in accounts.account_list]
    finally:
        if process.returncode is None:
            process.terminate()
        code = await asyncio.wait_for(process.wait(), 30)
    assert code in (0, -15)  # uvicorn's graceful shutdown on SIGTERM, or the signal itself


async def test_the_printed_wecom_lines_paste_into_dotenv_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/simulator.md: copy the printed `WECOM_*=` lines into `.env`; each must then read as its value."""
    from dotenv import dotenv_values

    from wxkf.config import load_settings
    from wxkf.simulator.seed import AGENT_APP, CONTACT_APP, KF_APP, seed_world

    port = free_port()
    process = await _start_simulator(port)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        while not any("/sim/world" in line for line in lines):
            raw = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
            assert raw, "the simulator exited before printing its world:\n" + "\n".join(lines)
            lines.append(raw.decode().rstrip("\n"))
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    # What the user copies: every printed line that sets a WECOM_ variable, from that name on.
    copied = [line[m.start() :] for line in lines if (m := re.search(r"\bWECOM_[A-Z_]+=", line))]
    assert copied, "\n".join(lines)
    dotenv = tmp_path / ".env"
    dotenv.write_text("\n".join(copied) + "\n", encoding="utf-8")
    parsed = dotenv_values(dotenv)
    world = seed_world(seed=7, customers=2)
    assert parsed == {
        "WECOM_API_BASE": f"http://127.0.0.1:{port}",
        "WECOM_CORP_ID": world.corp_id,
        "WECOM_KF_SECRET": world.apps[KF_APP].secret,
        "WECOM_CONTACT_SECRET": world.apps[CONTACT_APP].secret,
        "WECOM_AGENT_ID": str(world.apps[AGENT_APP].agent_id),
        "WECOM_AGENT_SECRET": world.apps[AGENT_APP].secret,
        "WECOM_TOKEN": world.callback_token,
        "WECOM_AES_KEY": world.encoding_aes_key,
    }
    # ... and the lines are exactly what .env holds, so pasting the printed block whole works too.
    assert all(line.strip() in copied for line in lines if "WECOM_" in line)
    # wxkf reads that .env as settings, with no "须为整数" for WECOM_AGENT_ID.
    for name in list(os.environ):
        if name.startswith(("WECOM_", "WXKF_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WXKF_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.wecom_agent_id == world.apps[AGENT_APP].agent_id
    assert settings.wecom_api_base == f"http://127.0.0.1:{port}"
