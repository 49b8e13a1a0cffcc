"""The chaos run: real wxkf processes on loopback, killed and starved at random, judged by WeCom's record.

    report = run_chaos(ChaosPlan(customers=100, messages=1000), workdir)
    assert report.problems() == []

Processes, each its own, as in production: the simulator (`wxkf simulator`), two
`wxkf serve --no-worker` behind it (the simulator's callbacks take them in turn, as behind a load
balancer), two `wxkf worker`, one PostgreSQL (pgserver). The LLM is the local OpenAI-compatible fake,
which echoes what the customer wrote, so each answer names the messages it covers.

While the customers write (some of them in bursts):
* any wxkf process is killed with SIGKILL every few seconds and started again a moment later; one
  that exits (it may start while the database is down) is started again, as systemd would;
* PostgreSQL is stopped once and started again;
* sync_msg and send_msg answer 45009, -1 and find their access_token revoked (42001) at random, and
  callback deliveries fail as if the service were down (WeCom retries with backoff) or arrive twice.

Then the faults stop and the run waits for the pipeline to settle. The verdict comes from the
simulator, which saw what WeCom would have seen: every customer message answered exactly once (a
merged answer counts for each message it covers), each customer's answers in the order they wrote,
no send that WeCom refused for a rule (state, window, budget, size), and in wxkf's database nothing
queued, running or pending.
"""

from __future__ import annotations

import collections
import functools
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.acceptance.processes import PrivatePostgres, start_wxkf, wxkf_env
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.simulator.seed import seed_world
from wxkf.simulator.testing import SimulatorControl, SimulatorHandle, handle_for

TOKEN_RE = re.compile(r"q(\d+)-(\d+)")  # what a customer writes: q<customer>-<n>
RULE_ERRCODES = {
    95018: "state or 48 h window",
    95002: "48 h window",
    95001: "5-message budget",
    45002: "text too long",
    95007: "event code",
    40096: "unknown customer",
}
INJECTED = {45009, -1, 42001}  # what the faults answer; the client retries them
LLM_KEY = "sk-chaos"


@dataclass
class ChaosPlan:
    customers: int = 100
    messages: int = 1000
    writing_seconds: float = 40.0  # how long the customers keep writing
    burst_share: float = 0.3  # of the messages, sent in bursts of 2-5 within a fraction of a second
    kill_every: tuple[float, float] = (4.0, 8.0)  # seconds between two kills
    down_for: tuple[float, float] = (0.2, 1.0)  # seconds a killed process stays down
    outages: int = 1  # PostgreSQL stops this many times, evenly spread over the writing time
    outage_seconds: float = 3.0
    api_fault_rates: dict[str, float] = field(
        default_factory=lambda: {"45009": 0.04, "-1": 0.03, "invalidate_token": 0.02}
    )
    callback_fault_rates: dict[str, float] = field(
        default_factory=lambda: {"unreachable": 0.1, "duplicate": 0.1}
    )
    stalled_after: float = 5.0  # `wxkf worker --stalled-after`
    sweep_seconds: float = 10.0  # KF_SYNC_SWEEP_SECONDS
    settle_timeout: float = 60.0
    seed: int = 20240101
    # A rolling restart (SIGTERM, drain, start; one process at a time, as a deploy does) begins at
    # this share of the writing time; None: none.
    rolling_restart_at: float | None = 0.6
    # Retention runs every second while the handled rows are made 400 days old every `age_every`
    # seconds, so its passes delete rows in the middle of the traffic; 0: no retention.
    age_every: float = 2.0


@dataclass
class ChaosReport:
    plan: ChaosPlan
    messages: int = 0
    answers: int = 0
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    restarts_after_exit: int = 0
    outages: int = 0
    outage_seconds: float = 0.0
    faults_fired: collections.Counter[str] = field(default_factory=collections.Counter)
    callback_attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    rule_breaks: list[str] = field(default_factory=list)
    left_in_database: dict[str, int] = field(default_factory=dict)
    writing_seconds: float = 0.0
    settle_seconds: float = 0.0
    settled: bool = False
    cpu_seconds: float = 0.0  # of every process the run started (PostgreSQL's excepted)
    graceful_restarts: collections.Counter[str] = field(default_factory=collections.Counter)
    forced_stops: list[str] = field(default_factory=list)  # a SIGTERM not obeyed within the bound
    aged_rows: int = 0
    aged_rows_left: int = 0  # of those, what retention had not deleted when the run settled

    def problems(self) -> list[str]:
        found = []
        if not self.settled:
            found.append(f"did not settle within {self.plan.settle_timeout:g} s")
        if self.lost:
            found.append(f"{len(self.lost)} unanswered: {self.lost[:10]}")
        if self.duplicated:
            found.append(f"{len(self.duplicated)} answered twice: {self.duplicated[:10]}")
        if self.out_of_order:
            found.append(f"{len(self.out_of_order)} customers answered out of order: {self.out_of_order[:5]}")
        if self.rule_breaks:
            found.append(f"{len(self.rule_breaks)} sends refused for a rule: {self.rule_breaks[:5]}")
        left = {k: v for k, v in self.left_in_database.items() if v}
        if left:
            found.append(f"left in the database: {left}")
        if self.forced_stops:
            found.append(f"not stopped within {DRAIN_BOUND:g} s of SIGTERM: {self.forced_stops}")
        return found

    @property
    def retention_deleted(self) -> int:
        return self.aged_rows - self.aged_rows_left

    def summary(self) -> str:
        return (
            f"{self.messages} messages from {self.plan.customers} customers → {self.answers} answers; "
            f"kills {dict(self.kills)}, restarts after exit {self.restarts_after_exit}, "
            f"PostgreSQL down {self.outages}× for {self.outage_seconds:.1f} s in all; "
            f"graceful restarts {dict(self.graceful_restarts)}; retention deleted {self.retention_deleted} "
            f"of {self.aged_rows} aged rows; faults fired {dict(self.faults_fired)}; "
            f"callback attempts {dict(self.callback_attempts)}; writing {self.writing_seconds:.0f} s, "
            f"settled in {self.settle_seconds:.1f} s, {self.cpu_seconds:.0f} CPU-s in the processes; "
            f"lost {len(self.lost)}, duplicated "
            f"{len(self.duplicated)}, out of order {len(self.out_of_order)}, rule breaks {len(self.rule_breaks)}"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


DRAIN_BOUND = 30.0  # seconds a process may take to stop after SIGTERM (a deploy's stop timeout)
READY_BOUND = 120.0  # seconds a restarted process may take to serve again (a loaded machine)


class Fleet:
    """The wxkf processes: started, killed, and started again when they exit (as systemd would)."""

    def __init__(self, workdir: Path, env: Callable[[str], dict[str, str]]) -> None:
        self.workdir = workdir
        self.env = env
        self.commands: dict[str, list[str]] = {}
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.down_until: dict[str, float] = {}
        self.restarts_after_exit = 0
        self.restarting: set[str] = set()  # in a graceful restart: neither killed nor supervised
        self._lock = threading.Lock()

    def add(self, name: str, args: list[str]) -> None:
        self.commands[name] = args
        self.start(name)

    def start(self, name: str) -> None:
        log = self.workdir / f"{name}.log"
        self.running[name] = start_wxkf(self.commands[name], self.env(name), log)

    def kill(self, name: str, down_for: float) -> None:
        with self._lock:
            process = self.running[name]
            process.send_signal(signal.SIGKILL)
            process.wait()
            self.down_until[name] = time.monotonic() + down_for

    def restart(self, name: str, ready: Callable[[], bool]) -> bool:
        """SIGTERM, wait for the drain (at most DRAIN_BOUND), start again and wait until `ready`;
        False if it had to be killed. Until it is ready again, the chaos leaves it alone."""
        with self._lock:
            self.restarting.add(name)
            process = self.running[name]
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(DRAIN_BOUND)
            graceful = True
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            graceful = False
        try:
            with self._lock:
                self.start(name)
            deadline = time.monotonic() + READY_BOUND
            while not ready() and time.monotonic() < deadline:
                with self._lock:
                    if self.running[name].poll() is not None:  # exited (the database was down): again
                        self.restarts_after_exit += 1
                        self.start(name)
                time.sleep(0.2)
        finally:
            self.restarting.discard(name)
        return graceful

    def supervise(self) -> None:
        """Start what is down and due: killed ones after their pause, exited ones after a second."""
        with self._lock:
            now = time.monotonic()
            for name, process in self.running.items():
                if process.poll() is None or name in self.restarting:
                    continue
                due = self.down_until.pop(name, None)
                if due is None:  # it exited by itself (started while the database was down)
                    self.restarts_after_exit += 1
                    self.down_until[name] = now + 1.0
                elif due <= now:
                    self.start(name)
                else:
                    self.down_until[name] = due

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self, lines: int = 30) -> str:
        out = []
        for name in self.commands:
            text = (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
            out.append(f"--- {name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


def _counts(plan: ChaosPlan) -> list[int]:
    """How many messages each customer writes: the total spread evenly."""
    counts = [plan.messages // plan.customers] * plan.customers
    for i in range(plan.messages - sum(counts)):
        counts[i] += 1
    return counts


def _schedule(plan: ChaosPlan, customers: list[str], rng: random.Random) -> list[tuple[float, str, str]]:
    """(when, customer, text) for every message, in time order; some customers write in bursts.

    Customer i writes q<i>-0, q<i>-1, … in that order, so the answers' order can be checked.
    """
    timeline: list[tuple[float, str, str]] = []
    for index, (customer, count) in enumerate(zip(customers, _counts(plan), strict=True)):
        times: list[float] = []
        while len(times) < count:
            burst = rng.randint(2, 5) if rng.random() < plan.burst_share else 1
            start = rng.uniform(0, plan.writing_seconds)
            times += [start + k * 0.05 for k in range(min(burst, count - len(times)))]
        timeline += [(when, customer, f"q{index}-{n}") for n, when in enumerate(sorted(times))]
    return sorted(timeline)


def run_chaos(plan: ChaosPlan, workdir: Path, *, say: Callable[[str], object] = print) -> ChaosReport:
    rng = random.Random(plan.seed)
    report = ChaosReport(plan)
    cpu_before = _children_cpu()
    port = _free_port()
    sim_log = workdir / "simulator.log"
    world = seed_world(seed=plan.seed, customers=plan.customers)  # the same ids the process seeds
    with PrivatePostgres() as pg, FakeOpenAI(api_key=LLM_KEY) as llm, sim_log.open("ab") as out:
        conninfo = pg.database("wxkf")
        simulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wxkf.cli",
                "simulator",
                "--port",
                str(port),
                "--seed",
                str(plan.seed),
                "--customers",
                str(plan.customers),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        sim = handle_for(f"http://127.0.0.1:{port}", world)
        try:
            _until(lambda: _answers(f"{sim.base_url}/sim/ping"), 30, "the simulator to start")
            _configure_simulator(sim, plan)
            ports = {"serve-1": _free_port(), "serve-2": _free_port()}

            def env(name: str) -> dict[str, str]:
                return wxkf_env(
                    conninfo,
                    sim,
                    workdir / name,
                    LLM_BASE_URL=llm.base_url,
                    LLM_API_KEY=LLM_KEY,
                    EMBEDDING_BASE_URL=llm.base_url,
                    EMBEDDING_API_KEY=LLM_KEY,
                    EMBEDDING_MODEL="fake-embedding",
                    KF_DEBOUNCE_SECONDS="0.3",
                    KF_POLL_INTERVAL_SECONDS="0.1",
                    KF_SYNC_SWEEP_SECONDS=str(plan.sweep_seconds),
                    **({"RETENTION_CRON": "* * * * * *"} if plan.age_every else {}),
                )

            fleet = Fleet(workdir, env)
            serve_ports = {name: f"http://127.0.0.1:{p}/health" for name, p in ports.items()}
            for name, serve_port in ports.items():
                fleet.add(name, ["serve", "--no-worker", "--port", str(serve_port)])
            for name in ("worker-1", "worker-2"):
                fleet.add(name, ["worker", "--stalled-after", str(plan.stalled_after)])
            sim.control.set_callback_urls([f"http://127.0.0.1:{p}/wecom/callback" for p in ports.values()])
            for health in [f"http://127.0.0.1:{p}/health" for p in ports.values()]:
                _until(functools.partial(_answers, health), 60, "wxkf serve to start")
            say("chaos: all processes up; the customers start writing")
            try:
                kinds = _add_faults(sim, plan)
                _write_with_chaos(plan, sim, pg, fleet, rng, report, say, serve_ports)
                sim.control.clear_faults()
                say(f"chaos: {report.messages} messages written in {report.writing_seconds:.0f} s")
                _settle(plan, sim, conninfo, fleet, report, say)
            finally:
                fleet.stop()
            _judge(sim, conninfo, report, kinds)
            report.aged_rows_left = _aged_rows_left(conninfo)
            report.restarts_after_exit = fleet.restarts_after_exit
            if report.problems():
                say(fleet.logs())
        finally:
            simulator.send_signal(signal.SIGTERM)
            simulator.wait(30)
    report.cpu_seconds = _children_cpu() - cpu_before
    return report


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.1)


def _configure_simulator(sim: SimulatorHandle, plan: ChaosPlan) -> None:
    # WeCom retries a failed callback; the waits grow so that a replica's restart is covered
    # (0.25, 0.5, 1, 2, 4, 8 s: about 16 s in all).
    sim.control.set_behaviour(
        callback_retries=6, callback_retry_delay=0.25, callback_retry_backoff=2.0, callback_timeout=5.0
    )


def _add_faults(sim: SimulatorHandle, plan: ChaosPlan) -> dict[int, str]:
    """The plan's faults; each kind also hits its API's first call for sure. Returns id → kind."""
    kinds: dict[int, str] = {}
    for api in ("kf/sync_msg", "kf/send_msg"):
        for kind, rate in plan.api_fault_rates.items():
            effect: dict[str, Any] = (
                {"invalidate_token": True} if kind == "invalidate_token" else {"errcode": int(kind)}
            )
            for fault in (
                sim.control.add_fault(api, times=1, **effect),
                sim.control.add_fault(api, rate=rate, **effect),
            ):
                kinds[int(fault["id"])] = f"{api.removeprefix('kf/')} {kind}"
    for kind, rate in plan.callback_fault_rates.items():
        fault = sim.control.add_fault("callback", rate=rate, **{kind: True})
        kinds[int(fault["id"])] = f"callback {kind}"
    return kinds


SENDERS = 4  # threads writing as the customers; each keeps its own customers' order


def _write_with_chaos(
    plan: ChaosPlan,
    sim: SimulatorHandle,
    pg: PrivatePostgres,
    fleet: Fleet,
    rng: random.Random,
    report: ChaosReport,
    say: Callable[[str], object],
    health: dict[str, str],
) -> None:
    """The customers write (in threads, on schedule) while processes die, PostgreSQL goes away, a
    rolling restart goes through every process and retention deletes what was just handled."""
    timeline = _schedule(plan, sim.customers[: plan.customers], rng)
    customers = {c: i for i, c in enumerate(sim.customers[: plan.customers])}
    started = time.monotonic()

    def write(share: int) -> None:
        control = SimulatorControl(sim.base_url, sim.open_kfid)  # a client of its own per thread
        try:
            for when, customer, text in timeline:
                if customers[customer] % SENDERS != share:
                    continue
                delay = started + when - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                control.send_text(customer, text)
        finally:
            control.close()

    senders = [threading.Thread(target=write, args=(i,), name=f"chaos-writer-{i}") for i in range(SENDERS)]
    for sender in senders:
        sender.start()
    done = threading.Event()
    helpers = []
    if plan.age_every:
        helpers.append(threading.Thread(target=_age, args=(pg, plan, report, done), name="chaos-ageing"))
    if plan.rolling_restart_at is not None:
        at = started + plan.rolling_restart_at * plan.writing_seconds
        helpers.append(
            threading.Thread(
                target=_rolling_restart, args=(fleet, at, report, say, health), name="chaos-rolling"
            )
        )
    for helper in helpers:
        helper.start()
    next_kill = started + rng.uniform(*plan.kill_every)
    victims: list[str] = []
    outages = [started + (k + 0.5) / plan.outages * plan.writing_seconds for k in range(plan.outages)]
    outage_until: float | None = None
    while any(sender.is_alive() for sender in senders) or outage_until is not None:
        now = time.monotonic()
        if outages and outage_until is None and now >= outages[0]:
            say(f"chaos: PostgreSQL stops for {plan.outage_seconds:g} s")
            pg.stop()
            outages.pop(0)
            outage_until = time.monotonic() + plan.outage_seconds
        elif outage_until is not None and now >= outage_until:
            pg.start()
            report.outage_seconds += time.monotonic() - outage_until + plan.outage_seconds
            report.outages += 1
            outage_until = None
        if now >= next_kill and now - started < plan.writing_seconds:  # chaos keeps to the plan's time
            if not victims:  # every process once per round, in a random order
                victims = rng.sample(sorted(fleet.commands), len(fleet.commands))
            victim = victims.pop()
            if fleet.running[victim].poll() is None and victim not in fleet.restarting:
                fleet.kill(victim, rng.uniform(*plan.down_for))
                report.kills[victim.split("-")[0]] += 1
            next_kill = now + rng.uniform(*plan.kill_every)
        fleet.supervise()
        time.sleep(0.05)
    report.writing_seconds = time.monotonic() - started
    done.set()
    for helper in helpers:
        helper.join()
    report.messages = len(timeline)


def _rolling_restart(
    fleet: Fleet, at: float, report: ChaosReport, say: Callable[[str], object], health: dict[str, str]
) -> None:
    """Each process in turn, as a deploy does: stopped with SIGTERM, drained, started, healthy."""
    time.sleep(max(0.0, at - time.monotonic()))
    say("chaos: rolling restart")
    for name in sorted(fleet.commands):
        # The next one only when this one serves again (a worker: once it runs).
        ready = functools.partial(_answers, health[name]) if name in health else lambda: True
        if fleet.restart(name, ready):
            report.graceful_restarts[name.split("-")[0]] += 1
        else:
            report.forced_stops.append(name)


# Handled rows made old: what retention may delete, with the rows still needed (pending ones) left
# alone, as time would. Only rows handled a few seconds ago, so the pipeline has let go of them.
_AGE = (
    "UPDATE kf_callback_events SET received_at = received_at - interval '400 days' "
    "WHERE received_at > now() - interval '1 day' AND received_at < now() - interval '3 s'",
    "UPDATE kf_inbound SET processed_at = processed_at - interval '400 days' WHERE status <> 'pending' "
    "AND processed_at > now() - interval '1 day' AND processed_at < now() - interval '3 s'",
    "UPDATE kf_outbox SET sent_at = sent_at - interval '400 days', created_at = created_at - interval "
    "'400 days' WHERE status <> 'pending' AND sent_at > now() - interval '1 day' "
    "AND sent_at < now() - interval '3 s'",
)
_AGED_LEFT = (
    "SELECT (SELECT count(*) FROM kf_callback_events WHERE received_at < now() - interval '300 days')"
    " + (SELECT count(*) FROM kf_inbound WHERE processed_at < now() - interval '300 days')"
    " + (SELECT count(*) FROM kf_outbox WHERE sent_at < now() - interval '300 days')"
)


def _age(pg: PrivatePostgres, plan: ChaosPlan, report: ChaosReport, done: threading.Event) -> None:
    conninfo = pg.uri("wxkf")
    while not done.wait(plan.age_every):
        try:
            with psycopg.connect(conninfo, connect_timeout=2, autocommit=True) as conn:
                for sql in _AGE:
                    report.aged_rows += conn.execute(sql).rowcount
        except psycopg.OperationalError:
            continue  # PostgreSQL is down for the outage: age them on the next turn


def _aged_rows_left(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(_AGED_LEFT).fetchone()
    return int(row[0]) if row else 0


def _settle(
    plan: ChaosPlan,
    sim: SimulatorHandle,
    conninfo: str,
    fleet: Fleet,
    report: ChaosReport,
    say: Callable[[str], object],
) -> None:
    """Wait until every message is answered and nothing is queued, running or pending."""
    started = time.monotonic()
    deadline = started + plan.settle_timeout
    next_word = started
    while time.monotonic() < deadline:
        fleet.supervise()
        answered = _answered_count(sim)
        left = _left_in_database(conninfo)
        if answered >= report.messages and not any(left.values()):
            report.settled = True
            report.left_in_database = left  # once settled (the sync sweep queues a job now and then)
            break
        if time.monotonic() >= next_word:
            say(f"chaos: settling, {answered}/{report.messages} answered, left {left}")
            next_word += 5
        time.sleep(0.5)
    report.settle_seconds = time.monotonic() - started


def _replies(sim: SimulatorHandle) -> dict[str, list[str]]:
    """What each customer received through send_msg, in order."""
    return {
        customer: [r["text"]["content"] for r in sim.control.received(customer) if r["via"] == "send_msg"]
        for customer in sim.customers
    }


def _answered_count(sim: SimulatorHandle) -> int:
    return sum(len(TOKEN_RE.findall(text)) for texts in _replies(sim).values() for text in texts)


_LEFT = {
    "jobs queued or running": "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    "messages pending": "SELECT count(*) FROM kf_inbound WHERE status = 'pending'",
    "replies unsent": "SELECT count(*) FROM kf_outbox WHERE status = 'pending'",
}


def _left_in_database(conninfo: str) -> dict[str, int]:
    try:
        with psycopg.connect(conninfo, connect_timeout=5) as conn:
            return {what: int(conn.execute(sql).fetchone()[0]) for what, sql in _LEFT.items()}  # type: ignore[index]
    except psycopg.OperationalError:
        return {"database unreachable": 1}


def _judge(sim: SimulatorHandle, conninfo: str, report: ChaosReport, kinds: dict[int, str]) -> None:
    """The verdict, from the simulator's record and wxkf's database."""
    replies = _replies(sim)
    answered: collections.Counter[str] = collections.Counter()
    for customer, texts in replies.items():
        numbers: list[int] = []
        for text in texts:
            tokens = TOKEN_RE.findall(text)
            report.answers += 1 if tokens else 0
            for who, n in tokens:
                answered[f"q{who}-{n}"] += 1
                numbers.append(int(n))
        if numbers != sorted(numbers):
            report.out_of_order.append(f"{customer}: {numbers}")
    expected = _expected_tokens(report)
    report.lost = sorted(t for t in expected if answered[t] == 0)
    report.duplicated = sorted(t for t, count in answered.items() if count > 1)
    for call in sim.control.calls():
        errcode = int(call["errcode"])
        if call["api"] == "kf/send_msg" and errcode in RULE_ERRCODES:
            report.rule_breaks.append(f"{errcode} {RULE_ERRCODES[errcode]}")
        for fault in call.get("faults") or []:
            report.faults_fired[kinds[fault]] += 1
    for attempt in sim.control.callbacks():
        outcome = "duplicate" if attempt.get("duplicate") else str(attempt["status"] or attempt["error"])
        report.callback_attempts[outcome.split(" ")[0]] += 1
    if not report.settled:
        report.left_in_database = _left_in_database(conninfo)
    report.lost = _where_they_went(conninfo, report.lost)


def _where_they_went(conninfo: str, lost: list[str]) -> list[str]:
    """Each unanswered message with what wxkf's ledger says of it: the first clue when one is lost."""
    if not lost:
        return lost
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT body->'body'->>'content', status, coalesce(reason, '') FROM kf_inbound "
            "WHERE body->'body'->>'content' = ANY(%s)",
            ([token.split(" ")[0] for token in lost],),
        ).fetchall()
    found = {text: f"{status} {reason}".strip() for text, status, reason in rows}
    return [f"{token} ({found.get(token, 'never synced')})" for token in lost]


def _expected_tokens(report: ChaosReport) -> set[str]:
    return {f"q{c}-{n}" for c, count in enumerate(_counts(report.plan)) for n in range(count)}
