"""`wxkf doctor`: check a deployment the way an operator would, and say what to click when it is wrong.

Each check returns a `CheckResult` with a status (`ok` / `warn` / `fail` / `skip`), what was seen,
and the fix (Chinese first, English beside it). Checks that need an earlier one (the kf accounts need
the kf secret's token) are skipped with the reason when it failed. `run_doctor` runs them all and
never raises: a broken deployment is the normal input here.

The checks, in order:
  settings      complete and well-formed
  database      reachable; pgvector available and recent enough
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

from wxkf.config import Settings, SettingsError, load_settings
from wxkf.db.engine import DatabaseError, describe, ensure_pgvector, resolve_conninfo

Status = Literal["ok", "warn", "fail", "skip"]
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
    errcode: int | None = None
    see: str = ""  # an anchor in docs/troubleshooting.md

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
                "检查 .env 中的 DATABASE_URL、PostgreSQL 服务是否运行、用户名密码与权限；不设 DATABASE_URL "
                "则使用内置数据库 / check DATABASE_URL, that PostgreSQL is running, and the user's rights; "
                "unset it to use the embedded database",
                see="数据库连接失败",
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
                "在数据库服务器上安装 pgvector（如 sudo apt install postgresql-16-pgvector），再执行 "
                "CREATE EXTENSION vector; 或去掉 DATABASE_URL 使用自带 pgvector 的内置数据库 / install "
                "pgvector on the server and CREATE EXTENSION vector, or unset DATABASE_URL",
                see="pgvector-扩展未安装",
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
                see="pgvector-扩展未安装",
            )
        )
    else:
        results.append(CheckResult("pgvector", "pgvector 扩展 / pgvector", "ok", f"pgvector {installed}"))
    return results


def _server_version(conninfo: str) -> str:
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


# Callback URL -------------------------------------------------------------------------------------


async def check_callback_url(ctx: DoctorContext) -> list[CheckResult]:
    """Send what WeCom sends when the admin saves the callback URL (spec §1.4) and check the echo."""
    from wxkf.wecom.crypto import CallbackCrypto, signature

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
                see="消息无法接收",
            )
        ]
    elapsed = time.monotonic() - started
    body = response.text
    if response.status_code != 200 or body != plaintext:
        return [
            CheckResult(
                "callback_url",
                title,
                "fail",
                f"{url} 返回 HTTP {response.status_code}，内容与解密后的 echostr 不符 / "
                "did not echo the decrypted echostr",
                "确认 WECOM_TOKEN、WECOM_AES_KEY、WECOM_CORP_ID 与企业微信后台「回调配置」一致，且该地址"
                "指向本服务的 /wecom/callback / make Token, EncodingAESKey and CorpID match the console "
                "and point the URL at this service's /wecom/callback",
                see="消息无法接收",
            )
        ]
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


# LLM ----------------------------------------------------------------------------------------------


async def check_llm(ctx: DoctorContext) -> list[CheckResult]:
    """One tiny chat call through the agent's own client, so the diagnosis is the one replies get."""
    from wxkf.agent.llm import LLMAuthError, LLMClient, LLMError

    settings = ctx.settings
    title = "大模型 / LLM"
    key = settings.llm_key
    if key is None or not key.get_secret_value():
        return [_skipped("llm", title, "未配置 LLM_API_KEY / DEEPSEEK_API_KEY")]
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
                exc.message,
                errcode=exc.status_code,
                see="deepseek-api-认证失败",
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
                "检查网络与防火墙：curl https://qyapi.weixin.qq.com / check the network and firewall",
                see="连接超时",
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
    text = f"与企业微信相差约 {offset:+.0f} 秒 / about {offset:+.0f} s from WeCom"
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


CHECKS: list[Check] = [check_database, check_callback_url, check_llm, check_clock]


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
            except Exception as exc:  # a check's own bug must not hide the other checks
                report.results.append(
                    CheckResult(
                        check.__name__.removeprefix("check_"),
                        check.__name__,
                        "fail",
                        f"检查出错 / the check itself failed: {type(exc).__name__}",
                        "请带上此输出提交 issue / please report this output",
                    )
                )
    return report
