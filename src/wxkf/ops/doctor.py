"""`wxkf doctor`: check a deployment the way an operator would, and say what to click when it is wrong.

Each check returns a `CheckResult` with a status (`ok` / `warn` / `fail` / `skip`), what was seen,
and the fix (Chinese first, English beside it). Checks that need an earlier one (the kf accounts need
the kf secret's token) are skipped with the reason when it failed. `run_doctor` runs them all and
never raises: a broken deployment is the normal input here.

The checks, in order:
  settings      complete and well-formed
  database      reachable; pgvector available and recent enough
  connections   every process's pool and its two other connections fit in max_connections
  wecom_token   `gettoken` for each configured secret (40013 / 40001 / 60020 with the IP WeCom saw)
  kf_accounts   `kf/account/list` with the kf secret (48002 / 95000 / 95004)
  kf_routing    95018 risk: recent sessions that 接待方式 handed to a human (see `check_kf_routing`)
  callback_url  `WXKF_PUBLIC_URL/wecom/callback` answers a signed URL verification (spec §1.4)
  llm           the LLM endpoint accepts the key (401) and the model
  clock         the server's clock agrees with the HTTP Date of the WeCom API
"""

from __future__ import annotations

import asyncio
import email.utils
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
import psycopg
from pydantic import SecretStr

from wxkf.config import Settings, SettingsError, load_settings
from wxkf.db.budget import BESIDE_THE_POOL, ConnectionBudget, read_budget
from wxkf.db.engine import DatabaseError, describe, ensure_pgvector, resolve_conninfo
from wxkf.wecom.catalog import entry_for
from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.crypto import CallbackCrypto, signature
from wxkf.wecom.errors import APIError, WeComError
from wxkf.wecom.tokens import MemoryTokenStore

Status = Literal["ok", "warn", "fail", "skip"]
# The titles of the checks that read wxkf's tables, also shown when those tables do not exist yet.
# The titles of checks whose table says "not migrated" (a check that runs gives its own).
TITLES = {
    "kf_accounts": "客服账号 / kf accounts",
    "kf_routing": "接待方式 / kf routing (95018)",
    "wecom_tokens": "企业微信凭据 / WeCom credentials",
    "connections": "连接数预算 / connection budget",
    "callback_url": "回调地址 / callback URL",
    "knowledge_base": "知识库 / knowledge base",
    "llm": "大模型 / LLM",
    "clock": "服务器时间 / clock",
}
ICONS: dict[Status, str] = {"ok": "✅", "warn": "⚠️", "fail": "❌", "skip": "➖"}

CALLBACK_PATH = "/wecom/callback"
CLOCK_FAIL_SECONDS = 60.0  # token expiry and the 48 h window are computed on this clock
CLOCK_WARN_SECONDS = 5.0
HTTP_TIMEOUT = 10.0


@dataclass(frozen=True)
class CheckResult:
    """One row of the doctor's table."""

    check: str
    title: str
    status: Status
    detail: str
    fix: str = ""
    see: str = ""  # the section of docs/troubleshooting.md, e.g. docs/troubleshooting.md#errcode-95018
    errcode: int | None = None

    @property
    def icon(self) -> str:
        return ICONS[self.status]


@dataclass
class DoctorReport:
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    def by_check(self, check: str) -> list[CheckResult]:
        return [r for r in self.results if r.check == check]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(r) for r in self.results]}


@dataclass
class DoctorContext:
    """What the checks share: the settings, one HTTP client, and what earlier checks learned."""

    settings: Settings
    http: httpx.AsyncClient
    conninfo: str | None = None
    token_ok: dict[str, bool] = field(default_factory=dict)
    open_kfids: list[str] = field(default_factory=list)


Check = Callable[[DoctorContext], Awaitable[list[CheckResult]]]


# Settings -----------------------------------------------------------------------------------------


def check_settings_load() -> tuple[Settings | None, CheckResult]:
    """Load settings from the environment/.env; a refusal becomes a failed row, not an exit."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return None, CheckResult(
            "settings",
            "配置 / settings",
            "fail",
            "；".join(exc.problems),
            "按提示修改 .env 或环境变量后重试 / fix the variables named above in .env or the environment",
        )
    return settings, settings_result(settings)


def settings_result(settings: Settings) -> CheckResult:
    """Completeness: what is missing for the bot to receive, answer and reason."""
    missing: list[str] = []
    if not settings.wecom_corp_id:
        missing.append("WECOM_CORP_ID（我的企业 → 企业ID）")
    if not _present(settings.wecom_kf_secret):
        missing.append("WECOM_KF_SECRET（微信客服 → API → Secret）")
    if not _present(settings.wecom_token) or not _present(settings.wecom_aes_key):
        missing.append("WECOM_TOKEN / WECOM_AES_KEY（微信客服 → API → 回调配置）")
    if missing:
        return CheckResult(
            "settings",
            "配置 / settings",
            "fail",
            "缺少 / missing: " + "；".join(missing),
            "在 .env 中填写以上变量（值从企业微信管理后台复制）/ set these in .env, copied from the WeCom admin console",
        )
    notes = []
    if settings.llm_key is None or not settings.llm_key.get_secret_value():
        notes.append("未配置 LLM_API_KEY：只用离线知识库回答 / no LLM key: offline answers only")
    if not settings.wxkf_public_url:
        notes.append("未配置 WXKF_PUBLIC_URL：不检查回调地址 / no public URL: callback not checked")
    return CheckResult(
        "settings",
        "配置 / settings",
        "warn" if notes else "ok",
        "；".join(notes)
        if notes
        else "企业微信、回调与大模型配置齐全 / WeCom, callback and LLM settings complete",
    )


def _present(value: Any) -> bool:
    return value is not None and bool(value.get_secret_value())


# Database -----------------------------------------------------------------------------------------


async def check_database(ctx: DoctorContext) -> list[CheckResult]:
    """Reachable, then pgvector — the same `ensure_pgvector` start-up runs, so the verdicts agree."""
    try:
        conninfo = await asyncio.to_thread(resolve_conninfo, ctx.settings)
        version = await asyncio.to_thread(_server_version, conninfo)
    except (DatabaseError, psycopg.Error, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [
            CheckResult(
                "database",
                "数据库连接 / database",
                "fail",
                f"无法连接数据库 / cannot connect: {first_line}",
                *_catalog("database-connection"),
            ),
            _skipped("pgvector", "pgvector 扩展 / pgvector", "数据库不可用 / database unavailable"),
        ]
    ctx.conninfo = conninfo
    results = [CheckResult("database", "数据库连接 / database", "ok", f"{describe(conninfo)} · {version}")]
    try:
        installed = await asyncio.to_thread(ensure_pgvector, conninfo)
    except DatabaseError as exc:
        results.append(
            CheckResult(
                "pgvector",
                "pgvector 扩展 / pgvector",
                "fail",
                str(exc),
                *_catalog("pgvector-missing"),
            )
        )
    except psycopg.Error as exc:
        results.append(
            CheckResult(
                "pgvector",
                "pgvector 扩展 / pgvector",
                "fail",
                f"无法创建 vector 扩展 / cannot create the vector extension: {str(exc).strip().splitlines()[0]}",
                "请数据库管理员（超级用户）在该数据库执行 CREATE EXTENSION vector; / ask a superuser to run "
                "CREATE EXTENSION vector; in this database",
                see=_catalog("pgvector-missing")[1],
            )
        )
    else:
        results.append(CheckResult("pgvector", "pgvector 扩展 / pgvector", "ok", f"pgvector {installed}"))
    return results


async def check_connections(ctx: DoctorContext) -> list[CheckResult]:
    """The connection budget (`wxkf.db.budget`): processes × (pool + 2) against max_connections."""
    title = "连接数预算 / connection budget"
    if ctx.conninfo is None:
        return [_skipped("connections", title, "数据库不可用 / database unavailable")]
    budget = await asyncio.to_thread(_read_budget, ctx.conninfo, ctx.settings)
    plan = "WXKF_PROCESSES" if ctx.settings.wxkf_processes else "当前已连接 / connected now"
    detail = (
        f"{budget.processes} 个进程（{plan}）× ({ctx.settings.database_pool_size} + {BESIDE_THE_POOL}) = "
        f"{budget.needed}，可用 {budget.available}（max_connections {budget.max_connections}，保留 "
        f"{budget.reserved}，其他连接 {budget.others}）；现有 {len(budget.connected)} 个 wxkf 进程共 "
        f"{sum(budget.connected.values())} 个连接 / {budget.processes} processes × (pool "
        f"{ctx.settings.database_pool_size} + {BESIDE_THE_POOL}) = {budget.needed} of {budget.available} available"
    )
    fix = (
        f"把 DATABASE_POOL_SIZE 降到 {budget.largest_pool()} 以下，或调高 PostgreSQL 的 max_connections，"
        f"或在前面加 PgBouncer（session 模式，见 docs/scaling.md）/ lower DATABASE_POOL_SIZE to at most "
        f"{budget.largest_pool()}, raise max_connections, or put PgBouncer (session mode) in front"
    )
    if not budget.fits:
        return [CheckResult("connections", title, "fail", detail, fix, see="docs/operations.md#connections")]
    if budget.tight:
        return [CheckResult("connections", title, "warn", detail, fix, see="docs/operations.md#connections")]
    return [CheckResult("connections", title, "ok", detail)]


def _read_budget(conninfo: str, settings: Settings) -> ConnectionBudget:
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        return read_budget(conn, settings)


def _server_version(conninfo: str) -> str:
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


# WeCom ----------------------------------------------------------------------------------------------

# (check id suffix, variable, where the secret lives in the admin console)
SECRETS: tuple[tuple[str, str, str], ...] = (
    ("kf", "WECOM_KF_SECRET", "微信客服"),
    ("contact", "WECOM_CONTACT_SECRET", "客户联系"),
    ("agent", "WECOM_AGENT_SECRET", "自建应用"),
)
RECENT_SESSIONS = 10  # customers whose session state the routing check reads


def _wecom_client(settings: Settings, secret: SecretStr) -> WeComClient:
    # A fresh gettoken each run (no shared store), one attempt: the doctor reports, it does not retry.
    return WeComClient(
        settings.wecom_api_base,
        settings.wecom_corp_id,
        secret,
        token_store=MemoryTokenStore(),
        retry=RetryPolicy(attempts=1),
        timeout=HTTP_TIMEOUT,
    )


def _secret(settings: Settings, variable: str) -> SecretStr | None:
    value = getattr(settings, variable.lower())
    return value if isinstance(value, SecretStr) and value.get_secret_value() else None


def _api_failure(check: str, title: str, exc: WeComError, *, subject: str = "") -> CheckResult:
    """A WeCom error as a row: the errcode's diagnosis, the catalog's fix (60020 with WeCom's IP)."""
    if not isinstance(exc, APIError):
        return CheckResult(
            check,
            title,
            "fail",
            f"无法访问企业微信 API / cannot reach the WeCom API: {exc}",
            *_catalog("connection-timeout"),
        )
    prefix = f"{subject}：" if subject else ""
    diagnosis = {
        40013: "企业ID 不正确（40013 不合法的CorpID）/ WECOM_CORP_ID is wrong",
        40001: "secret 不正确（40001 不合法的secret参数）/ the secret is wrong",
        60020: f"企业微信拒绝了来自 {exc.from_ip or '未知 IP'} 的访问（60020 不安全的访问IP）/ "
        f"WeCom refused calls from {exc.from_ip or 'this server'}: not a trusted IP",
        48002: "该 secret 所属应用无权调用此接口（48002 API接口无权限调用）/ this app may not call the API",
        95000: "open_kfid 不合法（95000）/ invalid open_kfid",
        95004: "open_kfid 不存在：已删除或属于其他企业（95004）/ the kf account does not exist here",
    }.get(exc.errcode, f"errcode {exc.errcode}：{exc.errmsg.split(',')[0]}")
    fix, see = _catalog(exc.errcode)
    if exc.errcode == 60020 and exc.from_ip:
        fix = f"把 {exc.from_ip} 加入企业可信IP。{fix}"
    return CheckResult(check, title, "fail", prefix + diagnosis, fix, see, exc.errcode)


async def check_wecom_tokens(ctx: DoctorContext) -> list[CheckResult]:
    """gettoken for each configured secret: the first thing every API call needs (spec §7.4)."""
    settings = ctx.settings
    results = []
    for name, variable, app in SECRETS:
        secret = _secret(settings, variable)
        check, title = f"wecom_token:{name}", f"{app} secret / {variable}"
        if secret is None:
            results.append(_skipped(check, title, f"未配置 {variable} / not set"))
            continue
        if not settings.wecom_corp_id:
            results.append(_skipped(check, title, "未配置 WECOM_CORP_ID / not set"))
            continue
        client = _wecom_client(settings, secret)
        try:
            await client.access_token()
        except WeComError as exc:
            results.append(_api_failure(check, title, exc, subject=variable))
            ctx.token_ok[name] = False
        else:
            results.append(
                CheckResult(check, title, "ok", f"gettoken 成功 / access_token issued ({variable})")
            )
            ctx.token_ok[name] = True
        finally:
            await client.aclose()
    return results


async def check_kf_accounts(ctx: DoctorContext) -> list[CheckResult]:
    """kf/account/list with the kf secret, and every account wxkf has seen still answers (95000/95004)."""
    title = TITLES["kf_accounts"]
    secret = _secret(ctx.settings, "WECOM_KF_SECRET")
    if secret is None or not ctx.token_ok.get("kf"):
        return [_skipped("kf_accounts", title, "微信客服 secret 不可用 / the kf secret did not work")]
    client = _wecom_client(ctx.settings, secret)
    try:
        try:
            listed = await client.list_accounts()
        except WeComError as exc:
            return [_api_failure("kf_accounts", title, exc, subject="kf/account/list")]
        ctx.open_kfids = [a.open_kfid for a in listed.account_list]
        if not ctx.open_kfids:
            return [
                CheckResult(
                    "kf_accounts",
                    title,
                    "fail",
                    "kf/account/list 没有返回任何客服账号 / no kf account is visible to this secret",
                    "管理后台 → 应用管理 → 微信客服：创建客服账号，并在 API 中把账号交给调用接口的应用管理 / "
                    "create a kf account and give this app API management of it",
                    see=_catalog(48002)[1],
                )
            ]
        results = [
            CheckResult(
                "kf_accounts",
                title,
                "ok",
                "可用账号 / accounts: "
                + "，".join(f"{a.name or '?'}（{a.open_kfid}）" for a in listed.account_list),
            )
        ]
        # Accounts wxkf received callbacks for must still be usable; servicer/list is the cheapest
        # call that names an open_kfid, so WeCom itself answers 95000/95004 for a stale one.
        for open_kfid in await _seen_accounts(ctx):
            if open_kfid in ctx.open_kfids:
                continue
            try:
                await client.list_servicers(open_kfid)
            except WeComError as exc:
                results.append(_api_failure("kf_accounts", title, exc, subject=open_kfid))
            else:
                results.append(
                    CheckResult(
                        "kf_accounts",
                        title,
                        "warn",
                        f"{open_kfid} 收到过回调，但不在 kf/account/list 中 / seen in callbacks, not listed",
                        *_catalog(95004),
                    )
                )
        return results
    finally:
        await client.aclose()


async def _seen_accounts(ctx: DoctorContext) -> list[str]:
    if ctx.conninfo is None:
        return []
    async with await psycopg.AsyncConnection.connect(ctx.conninfo) as conn:
        cur = await conn.execute(
            "SELECT open_kfid FROM kf_sync_cursors UNION "
            "SELECT DISTINCT open_kfid FROM kf_callback_events WHERE known_account ORDER BY 1"
        )
        return [row[0] for row in await cur.fetchall()]


async def check_kf_routing(ctx: DoctorContext) -> list[CheckResult]:
    """95018 risk: does 接待设置 hand new sessions to a human before wxkf can answer?

    WeCom has no API that reads 接待方式. What it does show is its effect: kf/service_state/get of
    recent customers. A recent session in state 2 (待接入池) or 3 (由人工接待) to which wxkf never
    sent a message was routed to people by the console, so every reply to such customers fails with
    95018 (wecom-api §4, §6). Sessions wxkf answered and then handed over are normal. 95018 errors
    the outbox recorded in the last 48 h count as direct evidence.
    """
    title = TITLES["kf_routing"]
    secret = _secret(ctx.settings, "WECOM_KF_SECRET")
    if secret is None or not ctx.token_ok.get("kf"):
        return [_skipped("kf_routing", title, "微信客服 secret 不可用 / the kf secret did not work")]
    if ctx.conninfo is None:
        return [_skipped("kf_routing", title, "数据库不可用 / database unavailable")]
    async with await psycopg.AsyncConnection.connect(ctx.conninfo) as conn:
        cur = await conn.execute(
            """
            SELECT i.open_kfid, i.external_userid,
                   EXISTS (SELECT 1 FROM kf_outbox o WHERE o.open_kfid = i.open_kfid
                           AND o.external_userid = i.external_userid AND o.status = 'sent') AS answered
            FROM kf_inbound i
            WHERE i.origin = 3 AND i.send_time > now() - interval '48 hours'
            GROUP BY i.open_kfid, i.external_userid
            ORDER BY max(i.send_time) DESC
            LIMIT %s
            """,
            (RECENT_SESSIONS,),
        )
        recent = [(str(a), str(b), bool(c)) for a, b, c in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT count(*) FROM kf_outbox WHERE errcode = 95018 AND created_at > now() - interval '48 hours'"
        )
        refused = int((await cur.fetchone() or (0,))[0])
    fix, see = _catalog(95018)
    if not recent:
        if refused:
            return [
                CheckResult(
                    "kf_routing",
                    title,
                    "fail",
                    f"近 48 小时有 {refused} 条回复被拒（95018）/ {refused} replies refused with 95018",
                    fix,
                    see,
                    95018,
                )
            ]
        return [
            _skipped(
                "kf_routing",
                title,
                "近 48 小时没有客户消息可检查；用微信给客服账号发一条消息后再运行 / no recent customer "
                "message to inspect: send one from WeChat and run doctor again",
            )
        ]
    client = _wecom_client(ctx.settings, secret)
    routed_to_humans: list[str] = []
    try:
        for open_kfid, external_userid, answered in recent:
            try:
                state, _servicer = await client.get_service_state(open_kfid, external_userid)
            except WeComError as exc:
                return [_api_failure("kf_routing", title, exc, subject="kf/service_state/get")]
            if state in (2, 3) and not answered:
                routed_to_humans.append(f"{external_userid}（state={state}）")
    finally:
        await client.aclose()
    if routed_to_humans or refused:
        seen = "，".join(routed_to_humans[:3]) + ("…" if len(routed_to_humans) > 3 else "")
        detail = (
            f"{len(routed_to_humans)}/{len(recent)} 个近期会话未经 wxkf 回复就进入了人工接待或排队：{seen}"
            f" / sessions went to humans before wxkf could answer; replies fail with 95018"
            if routed_to_humans
            else f"近 48 小时有 {refused} 条回复被拒（95018）/ {refused} replies refused with 95018"
        )
        return [CheckResult("kf_routing", title, "fail", detail, fix, see, 95018)]
    return [
        CheckResult(
            "kf_routing",
            title,
            "ok",
            f"{len(recent)} 个近期会话均可由 API 回复 / recent sessions are answerable by the API",
        )
    ]


# Callback URL -------------------------------------------------------------------------------------


async def check_callback_url(ctx: DoctorContext) -> list[CheckResult]:
    """Send what WeCom sends when the admin saves the callback URL (spec §1.4) and check the echo."""
    settings = ctx.settings
    title = "回调地址 / callback URL"
    if not settings.wxkf_public_url:
        return [_skipped("callback_url", title, "未配置 WXKF_PUBLIC_URL / WXKF_PUBLIC_URL not set")]
    if not settings.callback_configured:
        return [_skipped("callback_url", title, "未配置 WECOM_TOKEN / WECOM_AES_KEY")]
    assert settings.wecom_token is not None
    assert settings.wecom_aes_key is not None
    token = settings.wecom_token.get_secret_value()
    crypto = CallbackCrypto(token, settings.wecom_aes_key.get_secret_value(), settings.wecom_corp_id)
    plaintext = str(secrets.randbelow(10**19 - 10**18) + 10**18)  # WeCom's echostr is a numeric string
    echostr = crypto.encrypt(plaintext)
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    url = settings.wxkf_public_url + CALLBACK_PATH
    params = {
        "msg_signature": signature(token, timestamp, nonce, echostr),
        "timestamp": timestamp,
        "nonce": nonce,
        "echostr": echostr,
    }
    started = time.monotonic()
    try:
        response = await ctx.http.get(url, params=params)
    except httpx.HTTPError as exc:
        return [
            CheckResult(
                "callback_url",
                title,
                "fail",
                f"{url} 无法访问 / unreachable: {type(exc).__name__}",
                "确认服务已启动（wxkf serve）、域名解析与 HTTPS 证书正确、防火墙放行 443 端口 / make sure "
                "wxkf serve is running and the URL is reachable from the internet",
                see=_catalog("messages-not-received")[1],
            )
        ]
    elapsed = time.monotonic() - started
    body = response.text
    if response.status_code != 200 or body != plaintext:
        return [_callback_mismatch(url, response.status_code, body)]
    # wecom-api §1.4: WeCom wants the echo within 1 second.
    if elapsed > 1.0:
        return [
            CheckResult(
                "callback_url",
                title,
                "warn",
                f"{url} 验证通过但用时 {elapsed:.1f} 秒（企业微信要求 1 秒内）/ verified but slow",
                "检查服务器负载与网络延迟 / check server load and network latency",
            )
        ]
    return [
        CheckResult("callback_url", title, "ok", f"{url} 通过签名验证 / answered the signed verification")
    ]


def _callback_mismatch(url: str, status: int, body: str) -> CheckResult:
    """Why the URL did not echo the plaintext, told apart by what it answered (wecom-api §1.4)."""
    title = "回调地址 / callback URL"
    see = _catalog("messages-not-received")[1]
    # The body is the server's own answer (wxkf's refusal reason, a proxy's page): shown short, on one line.
    excerpt = " ".join(body.split())[:120]
    if status == 403:
        # wxkf's /wecom/callback answers 403 when the signature or the corp id does not match.
        return CheckResult(
            "callback_url",
            title,
            "fail",
            f"{url} 拒绝了签名验证（HTTP 403，签名或企业ID不匹配）/ refused the signed verification "
            f"(signature or corp id mismatch): {excerpt}",
            "服务端与本机的 WECOM_TOKEN、WECOM_AES_KEY、WECOM_CORP_ID 不一致：三者都须与企业微信后台「回调配置」"
            "相同；修改 .env 后重启 wxkf serve / WECOM_TOKEN, WECOM_AES_KEY and WECOM_CORP_ID differ between "
            "the server and this machine: make all three match the console's callback settings and restart "
            "wxkf serve",
            see=see,
        )
    if status == 200:
        return CheckResult(
            "callback_url",
            title,
            "fail",
            f"{url} 返回了其他内容，而不是解密后的 echostr / answered something else than the decrypted "
            f"echostr: {excerpt!r}",
            "该地址没有指向 wxkf 的 /wecom/callback（检查反向代理的转发路径），或响应被加了引号、BOM、换行；"
            "企业微信要求原样返回明文 / the URL does not reach wxkf's /wecom/callback (check the reverse "
            "proxy's path), or the answer was wrapped in quotes, a BOM or a newline: WeCom wants the bare "
            "plaintext",
            see=see,
        )
    return CheckResult(
        "callback_url",
        title,
        "fail",
        f"{url} 返回 HTTP {status}，内容与解密后的 echostr 不符 / did not echo the decrypted echostr: {excerpt}",
        "确认 WECOM_TOKEN、WECOM_AES_KEY、WECOM_CORP_ID 与企业微信后台「回调配置」一致，且该地址"
        "指向本服务的 /wecom/callback / make Token, EncodingAESKey and CorpID match the console "
        "and point the URL at this service's /wecom/callback",
        see=see,
    )


# LLM ----------------------------------------------------------------------------------------------


async def check_knowledge_base(ctx: DoctorContext) -> list[CheckResult]:
    """Documents and chunks, embedded by the configured model: what the bot can answer from."""
    from wxkf.agent.health import knowledge_problem, read_knowledge_status
    from wxkf.agent.kb.embedders import make_embedder
    from wxkf.agent.kb.store import KnowledgeBaseStatus

    title = "知识库 / knowledge base"
    if ctx.conninfo is None:
        return [_skipped("knowledge_base", title, "数据库不可用 / database unavailable")]
    embedder = make_embedder(ctx.settings)
    try:
        async with await psycopg.AsyncConnection.connect(ctx.conninfo, connect_timeout=5) as conn:
            try:
                status = await read_knowledge_status(conn, embedder)
            except psycopg.errors.UndefinedTable:
                # Not migrated yet: nothing was ever added, so it is empty (`wxkf kb add` migrates).
                status = KnowledgeBaseStatus(0, 0, embedder.name, None, embedder.version)
    finally:
        await embedder.aclose()
    problem = knowledge_problem(status)
    if problem is not None:
        return [CheckResult("knowledge_base", title, "fail", problem[0], problem[1])]
    return [
        CheckResult(
            "knowledge_base",
            title,
            "ok",
            f"{status.documents} 个文档，{status.chunks} 个片段，向量模型 {status.embedder} / "
            f"{status.documents} documents, {status.chunks} chunks",
        )
    ]


async def _llm_failures(ctx: DoctorContext) -> list[CheckResult]:
    """Failures the service recorded lately: what customers met, beside what the doctor's call meets."""
    from wxkf.agent.health import LLM_FAILURE_WINDOW_MINUTES, recent_llm_failure

    if ctx.conninfo is None:
        return []
    async with await psycopg.AsyncConnection.connect(ctx.conninfo, connect_timeout=5) as conn:
        failure = await recent_llm_failure(conn)
    if failure is None:
        return []
    return [
        CheckResult(
            "llm_failures",
            "大模型调用记录 / LLM calls",
            "warn",
            f"最近 {LLM_FAILURE_WINDOW_MINUTES} 分钟内失败 {failure.recent} 次，最近一次 {failure.kind}"
            f"（{failure.failed_at:%H:%M:%S}）；其间客户由知识库离线回答 / {failure.recent} failures lately: "
            "customers got the offline knowledge-base answer",
            failure.detail[:300],
            errcode=failure.status_code,
        )
    ]


async def check_llm(ctx: DoctorContext) -> list[CheckResult]:
    """One tiny chat call through the agent's own client, so the diagnosis is the one replies get."""
    settings = ctx.settings
    title = "大模型 / LLM"
    key = settings.llm_key
    if key is None or not key.get_secret_value():
        return [_skipped("llm", title, "未配置 LLM_API_KEY / DEEPSEEK_API_KEY")]
    return [*await _llm_call(ctx), *await _llm_failures(ctx)]


async def _llm_call(ctx: DoctorContext) -> list[CheckResult]:
    from wxkf.agent.llm import LLMAuthError, LLMClient, LLMError

    settings = ctx.settings
    title = "大模型 / LLM"
    key = settings.llm_key
    assert key is not None
    client = LLMClient(
        base_url=settings.llm_base_url,
        api_key=key,
        model=settings.llm_model,
        timeout_seconds=min(settings.llm_timeout_seconds, HTTP_TIMEOUT),
        max_retries=0,
        max_tokens=1,
    )
    try:
        await client.complete([{"role": "user", "content": "ping"}])
    except LLMAuthError as exc:
        return [
            CheckResult(
                "llm",
                title,
                "fail",
                f"{settings.llm_base_url} 拒绝了 API Key（HTTP {exc.status_code}）/ the key was refused",
                *_catalog("llm-auth-401"),
                errcode=exc.status_code,
            )
        ]
    except LLMError as exc:
        return [
            CheckResult(
                "llm",
                title,
                "fail",
                f"{settings.llm_base_url}（{settings.llm_model}）调用失败 / call failed",
                exc.message,
                errcode=exc.status_code,
            )
        ]
    finally:
        await client.aclose()
    return [
        CheckResult(
            "llm",
            title,
            "ok",
            f"{settings.llm_base_url} · {settings.llm_model} 可用 / accepted key and model",
        )
    ]


# Clock --------------------------------------------------------------------------------------------


async def check_clock(ctx: DoctorContext) -> list[CheckResult]:
    """Compare our clock with the Date header of the WeCom API (1 s resolution, half a round trip)."""
    title = "服务器时间 / clock"
    base = ctx.settings.wecom_api_base.rstrip("/")
    started = time.time()
    try:
        response = await ctx.http.head(base + "/")
    except httpx.HTTPError as exc:
        return [
            CheckResult(
                "clock",
                title,
                "fail",
                f"无法访问 {base} / cannot reach the WeCom API: {type(exc).__name__}",
                *_catalog("connection-timeout"),
            )
        ]
    finished = time.time()
    date = response.headers.get("date")
    parsed = email.utils.parsedate_to_datetime(date) if date else None
    if parsed is None:
        return [_skipped("clock", title, f"{base} 没有返回 Date 头 / no Date header")]
    offset = parsed.timestamp() - (started + finished) / 2
    # The header is truncated to whole seconds: anything within a second (plus the round trip) agrees.
    slack = 1.0 + (finished - started) / 2
    skew = max(0.0, abs(offset) - slack)
    behind = offset > 0
    text = (
        f"本机比企业微信{'慢' if behind else '快'}约 {abs(offset):.0f} 秒 / this server is about "
        f"{abs(offset):.0f} s {'behind' if behind else 'ahead of'} WeCom"
    )
    if skew > CLOCK_FAIL_SECONDS:
        return [
            CheckResult(
                "clock",
                title,
                "fail",
                text,
                "开启时间同步（如 timedatectl set-ntp true 或 chrony），access_token 过期与 48 小时窗口都按"
                "本机时间计算 / enable NTP time sync: token expiry and the 48 h window use this clock",
            )
        ]
    if skew > CLOCK_WARN_SECONDS:
        return [CheckResult("clock", title, "warn", text, "建议开启时间同步（NTP）/ enable NTP time sync")]
    return [CheckResult("clock", title, "ok", text)]


# Running ------------------------------------------------------------------------------------------


def _skipped(check: str, title: str, why: str) -> CheckResult:
    return CheckResult(check, title, "skip", f"跳过 / skipped: {why}")


def _catalog(code: int | str) -> tuple[str, str]:
    """(fix, guide link) from the error catalog, the one source of fixes shared with `wxkf explain`."""
    entry = entry_for(code)
    if entry is None:
        return "", ""
    return "；".join(entry.fix_zh) + " / " + " ".join(entry.fix_en), entry.guide_link


CHECKS: list[Check] = [
    check_database,
    check_connections,
    check_wecom_tokens,
    check_kf_accounts,
    check_kf_routing,
    check_callback_url,
    check_knowledge_base,
    check_llm,
    check_clock,
]


async def run_doctor(settings: Settings | None = None, *, checks: list[Check] | None = None) -> DoctorReport:
    """Run every check; with `settings=None` they are loaded (and a refusal is the first failure)."""
    report = DoctorReport()
    if settings is None:
        settings, first = check_settings_load()
        report.results.append(first)
        if settings is None:
            return report
    else:
        report.results.append(settings_result(settings))
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        ctx = DoctorContext(settings=settings, http=http)
        for check in checks if checks is not None else CHECKS:
            try:
                report.results.extend(await check(ctx))
            except psycopg.errors.UndefinedTable:
                # Not a failure: `wxkf serve` migrates at start. But the check could not run.
                name = check.__name__.removeprefix("check_")
                report.results.append(
                    CheckResult(
                        name,
                        TITLES.get(name, name),
                        "warn",
                        "数据库尚未迁移，无法检查 / the database is not migrated yet: not checked",
                        "运行 wxkf db upgrade（wxkf serve 启动时也会迁移）后再运行 wxkf doctor / "
                        "run wxkf db upgrade (wxkf serve also migrates at start), then wxkf doctor again",
                    )
                )
            except Exception as exc:  # a check's own bug must not hide the other checks
                name = check.__name__.removeprefix("check_")
                report.results.append(
                    CheckResult(
                        name,
                        TITLES.get(name, name),
                        "fail",
                        f"检查出错 / the check itself failed: {type(exc).__name__}",
                        "请带上此输出提交 issue / please report this output",
                    )
                )
    return report
