"""What each process holds in pg_stat_activity: its one pool, and beside it only the job worker's
LISTEN connection and the callback writer's (`wxkf.db.budget`), at idle and under load.

Real processes, as deployed: `wxkf serve --processes 2` (each with its job worker) and a separate
`wxkf worker`, answering the simulator's customers with the agent's LLM responder (the local fake
OpenAI server) on the bundled sample knowledge base. The customers ask a question the knowledge
base answers, so every query of the agent's path runs while the connections are sampled: the
search, the conversation memory, the latency counters, a tool call's audit row and a failed call's
record. Any of them on a connection of its own (a second pool, an unnamed connection) shows here as
a stranger or as more than the budget.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import psycopg

from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.db.budget import wxkf_process
from wxkf.simulator.testing import run_simulator

from .processes import start_wxkf, wxkf_env

POOL_SIZE = 4
CUSTOMERS = 12
QUESTION = "七天无理由退货支持吗"
PASSAGE = "签收之日起 7 天内"  # the sample FAQ's answer to it, which must reach the model
TOOL_CALLS = 2  # the first model answers ask for the customer's profile (a read-only tool)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def held(database_url: str) -> tuple[Counter[tuple[str, int]], list[str]]:
    """(role, pid) → connections to the database, and the names of connections no wxkf process owns."""
    with psycopg.connect(database_url, application_name="budget-test") as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    roles: Counter[tuple[str, int]] = Counter()
    strangers = []
    for (name,) in rows:
        process = wxkf_process(name)
        if process is None:
            strangers.append(name)
        else:
            roles[(name.split(":", 1)[0], int(process.rsplit(":", 1)[1]))] += 1
    return roles, strangers


def agent_rows(database_url: str) -> tuple[int, int, int]:
    """Tool calls audited, LLM failures recorded, LLM calls counted."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM agent_tool_calls), (SELECT count(*) FROM agent_llm_failures), "
            "(SELECT coalesce(sum(value), 0) FROM kf_counters WHERE name = 'agent.llm.calls')"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.1)


def check(roles: Counter[tuple[str, int]], serving: set[int], working: set[int]) -> None:
    for pid in serving | working:
        assert 1 <= roles[("wxkf", pid)] <= POOL_SIZE, (pid, roles)
        assert roles[("wxkf-listen", pid)] == 1, (pid, roles)
        assert roles[("wxkf-callbacks", pid)] <= (1 if pid in serving else 0), (pid, roles)
    assert {pid for _, pid in roles} == serving | working, roles


async def test_each_process_holds_its_pool_and_at_most_two_connections_beside_it(
    database_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    async with run_simulator(
        callback_url=f"http://127.0.0.1:{port}/wecom/callback", customers=CUSTOMERS
    ) as sim:
        with FakeOpenAI(api_key="sk-budget") as llm:
            for _ in range(TOOL_CALLS):
                llm.tool_call("customer_profile", {})
            # One call fails: that customer gets the knowledge base's own answer, the failure is recorded.
            llm.error(400)
            env = wxkf_env(
                database_url,
                sim,
                tmp_path / "var",
                DATABASE_POOL_SIZE=str(POOL_SIZE),
                KF_DEBOUNCE_SECONDS="0",
                KB_EMBEDDER="hashing",  # the lightest: four processes load it on two cores
                LLM_BASE_URL=llm.base_url,
                LLM_API_KEY="sk-budget",
            )
            log = tmp_path / "processes.log"
            assert start_wxkf(["kb", "sample"], env, log).wait(120) == 0
            serve = start_wxkf(["serve", "--port", str(port), "--processes", "2"], env, log)
            worker = start_wxkf(["worker"], env, log)
            try:

                def pids() -> tuple[set[int], set[int]]:
                    children = psutil.Process(serve.pid).children()
                    serving = {c.pid for c in children if any("spawn_main" in a for a in c.cmdline())}
                    return serving, {worker.pid}

                async def started() -> bool:
                    roles, _ = held(database_url)
                    return sum(1 for role, _ in roles if role == "wxkf-listen") == 3

                await until(started, 90)
                serving, working = pids()
                roles, strangers = held(database_url)
                check(roles, serving, working)
                assert strangers == []

                # Under load: every customer writes at once; sampled while they are answered.
                peak: Counter[tuple[str, int]] = Counter()
                seen_strangers: list[str] = []
                customers = sim.customers
                assert len(customers) == CUSTOMERS
                await asyncio.gather(
                    *(asyncio.to_thread(sim.control.send_text, c, QUESTION) for c in customers)
                )

                async def answered() -> bool:
                    roles, strangers = held(database_url)
                    peak.update({k: v - peak[k] for k, v in roles.items() if v > peak[k]})
                    seen_strangers.extend(strangers)
                    received = await asyncio.gather(
                        *(asyncio.to_thread(sim.control.received, c) for c in customers)
                    )
                    return all(received)

                await until(answered, 120)
                check(peak, serving, working)
                assert seen_strangers == []

                # The agent's whole path ran: the passage reached the model, and the writes are there.
                chats = llm.chat_requests()
                assert len(chats) >= CUSTOMERS + TOOL_CALLS
                assert all(PASSAGE in chat.messages[0]["content"] for chat in chats)
                assert agent_rows(database_url) == (TOOL_CALLS, 1, len(chats))
            finally:
                for process in (serve, worker):
                    process.send_signal(signal.SIGTERM)
                for process in (serve, worker):
                    process.wait(60)
