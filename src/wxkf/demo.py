"""`wxkf demo`: one minute with wxkf on the built-in WeCom simulator, nothing configured.

The simulator plays WeCom; wxkf runs for real (embedded PostgreSQL, callback route, worker, the
offline responder on the bundled shop FAQ with the offline embedding model — or the LLM when a key is
configured). You type as a
WeChat customer and see what WeCom delivers to you, plus wxkf's reason whenever it stays silent.
Commands show WeCom's rules and wxkf's answers to them:

    /human  a servicer (接待人员) takes the session over — state 3, the bot must not send (95018)
    /bot    the servicer ends the session — your next message opens a new one the bot answers
    /48h    the clock jumps 48 hours — the 48 h window closes until you write again
    /six    wxkf tries to send you 6 notices in a row — WeCom allows 5 per window; the 6th is held
    /image  you send a photo of a parcel — downloaded with media/get; seen by a vision model when
            LLM_VISION_MODEL is set, else an honest "please describe it"
    /voice  you send a voice note (AMR) — transcribed when STT_BASE_URL is set, else the same honesty
    /push   you are looking for someone; a matching profile is added and the push arrives — at night
            it waits for the morning (the clock advances); reply 查看1 for the details
    /state  the session's state;  /help;  /quit

Every command works in every state (/human when a human already serves says so, /bot with nobody
serving says the bot is answering). Typing never waits: what wxkf sends arrives on screen as it
comes, while you type on. Without a terminal (CI, a pipe) it plays a scripted tour of the same
steps, each step shown once it is settled. Each run starts from an empty database of its own
(`wxkf_demo` in the embedded PostgreSQL), so it can be run again.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import uvicorn
from rich.console import Console

from wxkf.config import Settings, load_settings
from wxkf.kf.policy import Reason
from wxkf.simulator.testing import SimulatorControlError

WAIT_SECONDS = 60.0  # bounds a step that hangs; a settled step goes on at once
PRINT_EVERY_SECONDS = 0.2  # while typing, arrivals are shown within this
DEMO_DBNAME = "wxkf_demo"  # in the embedded PostgreSQL under WXKF_DATA_DIR, recreated at each start
# Shares no character with its FAQ entry (收到的商品有破损怎么办？): the offline embedding model bridges it.
PARAPHRASE = "东西送来就坏掉了"
TOUR = [
    "你好",
    "运费怎么算？",
    "/push",
    "查看1",
    "/human",
    "还有人在吗？",
    "/bot",
    "可以开发票吗？",
    PARAPHRASE,
    "/image",
    "/voice",
    "/six",
    "/48h",
    "退货的运费谁承担？",
    "你们老板最喜欢哪支足球队？",
    "/state",
    "/quit",
]
HELP = (
    "输入文字即以客户身份发消息 / type to write as the customer. "
    "命令 / commands: /human /bot /48h /six /push /image /voice /state /help /quit"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BackgroundServer:
    """Run an ASGI app with uvicorn in a daemon thread on 127.0.0.1."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="wxkf-server", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"服务未能启动 / the server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


class Demo:
    """The customer's side of the demo: what they type, what they receive, and wxkf's reasons.

    `wait`: each step waits until it is settled before the next (the scripted tour). Otherwise a
    background thread prints what arrives, and each typed line is taken at once. `api` is wxkf's
    HTTP API (the /push step).
    """

    def __init__(
        self, sim: Any, conninfo: str, console: Console, *, wait: bool = True, api: PushApi | None = None
    ) -> None:
        self.sim = sim
        self.control = sim.control
        self.conninfo = conninfo
        self.console = console
        self.wait = wait
        self.api = api
        self.customer: str = sim.customers[0]
        self.seen_received = 0
        self.seen_decision_id = 0
        self.last_msgid = ""  # the newest message or event of this customer: the demo ends after it
        self._printing = threading.Lock()
        self._stop = threading.Event()
        self._printer: threading.Thread | None = None

    # -- what the customer sees ------------------------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.control.received(self.customer)
        return items

    def show_new(self, wait_for: Callable[[], bool] | None = None) -> None:
        """Print what arrived and wxkf's decisions; in the tour, once `wait_for` holds (or a timeout).

        Typing (`wait=False`) never waits here: the background printer shows later arrivals.
        """
        deadline = time.monotonic() + WAIT_SECONDS
        while self.wait and wait_for is not None and not wait_for() and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._printing:
            items = self.received()
            for item in items[self.seen_received :]:
                self.console.print(f"[green]客服 / bot[/green] ▸ {_render(item)}", highlight=False)
            self.seen_received = len(items)
            for line in self.decisions():
                self.console.print(f"[dim]  wxkf: {line}[/dim]", highlight=False)

    def start_printer(self) -> None:
        def loop() -> None:
            while not self._stop.wait(PRINT_EVERY_SECONDS):
                try:
                    self.show_new()
                except Exception:  # noqa: S112 - the simulator or the database is shutting down
                    continue

        self._printer = threading.Thread(target=loop, name="wxkf-demo-printer", daemon=True)
        self._printer.start()

    def stop_printer(self) -> None:
        self._stop.set()
        if self._printer is not None:
            self._printer.join(timeout=5)

    def decisions(self) -> list[str]:
        """wxkf's own record of why messages were not answered (kf_inbound.reason)."""
        with psycopg.connect(self.conninfo) as conn:
            rows = conn.execute(
                "SELECT id, status, coalesce(reason, '') FROM kf_inbound "
                "WHERE external_userid = %s AND id > %s AND status <> 'pending' AND origin = 3 ORDER BY id",
                (self.customer, self.seen_decision_id),
            ).fetchall()
        lines = []
        for row_id, status, reason in rows:
            self.seen_decision_id = max(self.seen_decision_id, row_id)
            if status != "answered":
                explained = Reason(reason).explain if reason in Reason._value2member_map_ else reason
                lines.append(f"未回复 / not answered: {explained}")
        return lines

    def settled(self, msgid: str = "") -> Callable[[], bool]:
        """True once `msgid` (a message or event of this customer) is handled, nothing of the customer
        is pending, the outbox is sent and no job is still at work (a handoff's notice follows the
        reply): answered or not, the step is over."""

        def check() -> bool:
            with psycopg.connect(self.conninfo) as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM kf_inbound WHERE msgid = %(m)s AND status <> 'pending')"
                    " >= (%(m)s <> '')::int"
                    " AND NOT EXISTS (SELECT 1 FROM kf_inbound WHERE external_userid = %(c)s AND status = 'pending')"
                    " AND NOT EXISTS (SELECT 1 FROM kf_outbox WHERE external_userid = %(c)s AND status = 'pending')"
                    " AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                    " AND scheduled_at IS NULL)",
                    {"m": msgid, "c": self.customer},
                ).fetchone()
            return bool(row and row[0])

        return check

    # -- the customer's actions ------------------------------------------------------------------

    def say(self, text: str) -> None:
        item = self.control.send_text(self.customer, text)
        self.last_msgid = str(item["msgid"])
        self.show_new(self.settled(self.last_msgid))

    def state(self) -> None:
        session = self.control.session(self.customer)
        self.console.print(
            f"会话状态 / session state: {session.get('service_state')} "
            f"servicer={session.get('servicer_userid') or '-'}",
            highlight=False,
        )

    def session_state(self) -> tuple[int, str]:
        session = self.control.session(self.customer)
        return int(session["service_state"]), str(session.get("servicer_userid") or "")

    def human(self) -> None:
        servicer = self.sim.servicers[0]
        state, serving = self.session_state()
        if state == 3:
            self.console.print(
                f"👤 接待人员 {serving} 已在接待（state=3），无需再接入 / {serving} already serves this customer",
                highlight=False,
            )
            return
        if state == 4:
            # wecom-api §6: no session to take from the pool; a servicer who writes in an ended
            # session starts one they serve (state 3).
            event = self.control.servicer_reply(
                self.customer, servicer, "您好，我是人工客服，请问有什么可以帮您？"
            )
        else:
            event = self.control.take(self.customer, servicer)
        self.console.print(
            f"👤 接待人员 {servicer} 接入会话（state=3）。此时 send_msg 会被拒绝（95018），wxkf 不会发送。\n"
            f"   servicer {servicer} took over (state 3): wxkf respects the human and stays silent.",
            highlight=False,
        )
        self.last_msgid = str(event.get("msgid", ""))
        self.show_new(self.settled(self.last_msgid))

    def bot(self) -> None:
        state, _ = self.session_state()
        if state in (0, 1, 4):
            self.console.print(
                f"🤖 没有人工在接待（state={state}），机器人正在接待 / no servicer is serving: the bot answers",
                highlight=False,
            )
            return
        if state == 2:  # waiting in the pool: a servicer picks it up to end it
            self.control.take(self.customer, self.sim.servicers[0])
        event = self.control.end(self.customer)
        self.console.print(
            "🔚 接待人员结束了会话（state=4）。客户再发消息即开启新会话，由 wxkf 接待。\n"
            "   the servicer ended the session; the customer's next message opens a new one.",
            highlight=False,
        )
        self.last_msgid = str(event.get("msgid", ""))
        self.show_new(self.settled(self.last_msgid))

    def forty_eight_hours(self) -> None:
        self.control.advance(48 * 3600 + 60)
        self.console.print(
            "⏩ 时间前进 48 小时：窗口已关闭，WeCom 只允许在客户再次发消息后回复。\n"
            "   48 hours later: the window is closed until the customer writes again.",
            highlight=False,
        )

    def six(self) -> None:
        from wxkf.kf.outbox import enqueue_texts
        from wxkf.kf.responder import Conversation

        conversation = Conversation(self.sim.open_kfid, self.customer)
        texts = [f"通知 {i}/6：您关注的商品有新动态 / notice {i} of 6" for i in range(1, 7)]

        async def enqueue() -> list[str]:
            async with await psycopg.AsyncConnection.connect(self.conninfo) as conn:
                msgids = await enqueue_texts(
                    conn, conversation, texts, kind="push", source=f"demo-six-{time.time_ns()}"
                )
                await conn.commit()
            await _defer_converse(self.conninfo, conversation)
            return msgids

        granted = asyncio.run(enqueue())
        self.console.print(
            f"📨 wxkf 想连发 6 条；本窗口只剩 {len(granted)} 条额度（客户每次发消息后 48 小时内最多 5 条），"
            f"其余的不发送。\n   wxkf wanted to send 6; this window had {len(granted)} left "
            f"(5 per customer message within 48 h), so the rest is never sent.",
            highlight=False,
        )
        self.show_new(self.settled())

    def media(self, kind: str) -> None:
        from wxkf.simulator.samples import sample_amr, sample_png

        if kind == "image":
            self.console.print(
                "📷 你发送了一张包裹破损的照片 / you send a photo of a damaged parcel", highlight=False
            )
            item = self.control.send_media(
                self.customer, "image", sample_png(96, 64), "parcel.png", "image/png"
            )
        else:
            self.console.print(
                "🎤 你发送了一条 2 秒的语音 / you send a 2-second voice note (AMR)", highlight=False
            )
            item = self.control.send_media(self.customer, "voice", sample_amr(2.0), "voice.amr", "audio/amr")
        self.last_msgid = str(item["msgid"])
        self.show_new(self.settled(self.last_msgid))

    def push(self) -> None:
        """An intent, a profile that matches it by day, another at night that waits for the morning."""
        if self.api is None:
            return
        self.api.post(
            "/api/intents",
            {
                "open_kfid": self.sim.open_kfid,
                "external_userid": self.customer,
                "name": "寻找AI合作伙伴",
                "description": "想找北京做 AI 的创业伙伴",
                "conditions": {
                    "required": [{"field": "city", "op": "eq", "value": "北京"}],
                    "keywords": ["AI", "创业"],
                },
                "threshold": 0.5,
            },
        )
        self.console.print(
            "🎯 客户的意图：寻找AI合作伙伴（必须在北京，关键词 AI、创业）。有大模型时，客户说「帮我找…」，"
            "create_intent 工具在客户确认后创建它。\n   the customer's intent (with an LLM, the create_intent tool "
            "makes it after the customer confirms).",
            highlight=False,
        )
        self.at_local(14)
        before = len(self.received())
        self.api.post("/api/profiles", PROFILES[0])
        self.console.print(
            "👤 14:00 新资料：张三，北京，AI 创业公司 CTO / a matching profile is added", highlight=False
        )
        self.show_new(lambda: len(self.received()) > before)
        self.at_local(23)
        self.api.post("/api/profiles", PROFILES[1])
        self.console.print("👤 23:00 又一份匹配的资料：李四 / another match, at night", highlight=False)
        waiting = self.api.wait_for_history(self.sim.open_kfid, self.customer, "scheduled")
        self.console.print(f"🌙 wxkf: {waiting}", highlight=False)
        self.at_local(8)
        self.console.print("⏩ 08:00 静默时段结束 / quiet hours are over", highlight=False)
        self.show_new(lambda: len(self.received()) > before + 1)

    def at_local(self, hour: int) -> None:
        """Advance the simulated clock to the next `hour`:00 in Asia/Shanghai."""
        from datetime import UTC, datetime, timedelta
        from zoneinfo import ZoneInfo

        now = datetime.fromtimestamp(float(self.control.clock()["now"]), UTC).astimezone(
            ZoneInfo("Asia/Shanghai")
        )
        target = now.replace(hour=hour, minute=0, second=0, microsecond=0)
        if target <= now:
            target += timedelta(days=1)
        self.control.advance((target - now).total_seconds())

    def run(self, lines: Iterator[str]) -> None:
        self.console.print(HELP, highlight=False)
        self.control.enter(self.customer)
        self.show_new(lambda: len(self.received()) > 0)
        commands: dict[str, Callable[[], None]] = {
            "/human": self.human,
            "/bot": self.bot,
            "/48h": self.forty_eight_hours,
            "/six": self.six,
            "/image": lambda: self.media("image"),
            "/voice": lambda: self.media("voice"),
            "/push": self.push,
            "/state": self.state,
            "/help": lambda: self.console.print(HELP, highlight=False),
        }
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line in {"/quit", "/exit"}:
                break
            try:
                action = commands.get(line)
                if action is not None:
                    action()
                elif line.startswith("/"):
                    self.console.print(f"未知命令 / unknown command {line}. {HELP}", highlight=False)
                else:
                    self.say(line)
            except SimulatorControlError as exc:  # a rule of WeCom's: say which, and go on
                self.console.print(
                    f"⚠️ 企业微信拒绝了这一步 / WeCom refused this step: errcode {exc.errcode} {exc.errmsg}",
                    highlight=False,
                    markup=False,
                )
        self.wait = True  # what is still on its way is shown before the demo ends
        self.show_new(self.settled(self.last_msgid))


async def _defer_converse(conninfo: str, conversation: Any) -> None:
    import procrastinate

    from wxkf.kf import jobs

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    jobs.register_tasks(app)
    async with app.open_async():
        await jobs.defer_converse(app, conversation)


PROFILES = [
    {
        "name": "张三",
        "city": "北京",
        "company": "智元科技",
        "position": "CTO",
        "tags": ["AI", "连续创业"],
        "description": "在北京做 AI 大模型应用的连续创业者，正在找合伙人",
    },
    {
        "name": "李四",
        "city": "北京",
        "company": "深瞳智能",
        "position": "创始人",
        "tags": ["AI", "创业"],
        "description": "计算机视觉创业者，关注 AI 落地",
    },
]


class PushApi:
    """The demo's client of wxkf's REST API (/api/, with the demo's own key)."""

    def __init__(self, base_url: str, key: str) -> None:
        import httpx

        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._http.post(path, json=body)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def wait_for_history(self, open_kfid: str, external_userid: str, status: str) -> str:
        """The explanation of the customer's first history entry with `status` (once it exists)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            entries = self._http.get(
                "/api/history",
                params={"open_kfid": open_kfid, "external_userid": external_userid, "status": status},
            ).json()
            if entries:
                return str(entries[0]["explanation"])
            time.sleep(0.1)
        return ""

    def close(self) -> None:
        self._http.close()


def _render(item: dict[str, Any]) -> str:
    msgtype = item.get("msgtype", "text")
    body = item.get(msgtype) or {}
    text = body.get("content") if isinstance(body, dict) else None
    return str(text) if text else f"[{msgtype}] {body}"


def _typed_lines(console: Console) -> Iterator[str]:
    while True:
        try:
            yield console.input("[bold cyan]你 / you[/bold cyan] ▸ ")
        except (EOFError, KeyboardInterrupt):
            return


def _scripted_lines(console: Console) -> Iterator[str]:
    for line in TOUR:
        console.print(f"[bold cyan]你 / you[/bold cyan] ▸ {line}", highlight=False)
        yield line


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The demo's screen is the conversation; wxkf's logs still go to WXKF_DATA_DIR/logs."""
    import logging

    root = logging.getLogger()
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler]
    for handler in consoles:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in consoles:
            root.addHandler(handler)


def run_demo(
    base: Settings,
    console: Console,
    *,
    interactive: bool | None = None,
    lines: Iterator[str] | None = None,
) -> None:
    """The demo; `lines` are typed as at the terminal (default: the terminal's, or the scripted tour)."""
    from wxkf.db.engine import resolve_conninfo, start_embedded
    from wxkf.ops.logging import configure_logging
    from wxkf.simulator.testing import run_simulator
    from wxkf.web.app import create_app
    from wxkf.web.console.cli import demo_login

    interactive = sys.stdin.isatty() if interactive is None else interactive
    console.print(
        "[bold]wxkf demo[/bold] — 内置 WeCom 模拟器 + 内置 PostgreSQL，无需任何配置 / "
        "built-in WeCom simulator and embedded PostgreSQL, nothing configured",
        highlight=False,
    )
    simulator = run_simulator(customers=2)
    with simulator as sim:
        # Its own database, empty at each start like the simulator: the simulator's ids repeat from one
        # run to the next, and a second tour on the first one's data found every message already seen.
        # DATABASE_URL, if set, is left alone.
        api_key = secrets.token_urlsafe(16)
        settings = load_settings(
            **sim.settings_overrides(),
            wxkf_data_dir=base.wxkf_data_dir,
            database_url=start_embedded(base.wxkf_data_dir, DEMO_DBNAME, fresh=True),
            kf_debounce_seconds=0.3,
            kf_pause_minutes=0,  # /bot hands the customer back at once, not 30 minutes after /human's greeting
            wxkf_api_key=api_key,
            push_tick_cron="* * * * * *",  # the demo's clock jumps: check scheduled pushes every second
        )
        configure_logging(settings)
        with _quiet_logs():
            _load_sample_kb(settings, console)
            app = create_app(settings, run_worker=True, clock=simulator.world.clock.utcnow)
            with BackgroundServer(app) as server:
                sim.control.set_callback_url(f"{server.url}/wecom/callback")
                console.print(
                    f"✅ wxkf 已启动 {server.url}，模拟器 {sim.base_url}，客服账号 {sim.open_kfid}",
                    highlight=False,
                )
                console.print(demo_login(resolve_conninfo(settings), server.url) + "\n", highlight=False)
                typing = lines is not None or interactive
                api = PushApi(server.url, api_key)
                demo = Demo(sim, resolve_conninfo(settings), console, wait=not typing, api=api)
                if typing:
                    demo.start_printer()
                try:
                    if lines is None:
                        lines = _typed_lines(console) if interactive else _scripted_lines(console)
                    demo.run(lines)
                finally:
                    demo.stop_printer()
                    api.close()
    console.print("👋 演示结束 / demo finished", highlight=False)


def _load_sample_kb(settings: Settings, console: Console) -> None:
    from wxkf.agent.kb import KnowledgeBase, load_sample
    from wxkf.db.engine import Database

    async def load() -> int:
        database = await Database.open(settings)
        try:
            results = await load_sample(KnowledgeBase.from_settings(database, settings))
        finally:
            await database.close()
        return len(results)

    count = asyncio.run(load())
    console.print(
        f"📚 示例知识库已加载：{count} 个文档 / sample knowledge base loaded: {count} document(s)",
        highlight=False,
    )
