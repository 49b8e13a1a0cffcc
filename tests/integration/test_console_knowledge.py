"""The console's knowledge-base forms over HTTP, and the change notifications behind the live pages."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from tests.integration.console_client import ConsoleClient, create_staff
from tests.integration.kf_harness import RunningPipeline, ScriptedResponder, running_pipeline
from wxkf.agent.kb.loaders import MAX_PDF_BYTES, MAX_TEXT_BYTES
from wxkf.agent.kb.store import MIN_RELEVANCE
from wxkf.web.console.live import CHANNEL

FAQ = "# 营业时间\n\n每天 9:00–21:00 在线，节假日照常。\n"


@pytest.fixture
async def run(settings_factory: Any) -> AsyncIterator[RunningPipeline]:
    async with running_pipeline(settings_factory, ScriptedResponder()) as running:
        await create_staff(running.conninfo, "admin")
        yield running


async def _documents(run: RunningPipeline) -> list[tuple[Any, ...]]:
    return await run.query(
        "SELECT d.source, f.document_id IS NOT NULL FROM console_kb_files f "
        "LEFT JOIN kb_documents d ON d.id = f.document_id ORDER BY f.id"
    )


async def test_upload_reindex_and_delete_keep_the_file_and_the_document_together(
    run: RunningPipeline,
) -> None:
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("admin")
        await staff.get("/console/kb")
        files = {"files": ("营业时间.md", FAQ.encode(), "text/markdown")}
        # The page's script asks for progress lines; the last one is the outcome.
        streamed = await staff.http.post(
            "/console/kb/upload",
            files=files,
            headers={"X-CSRF-Token": staff.csrf, "Accept": "application/x-ndjson"},
        )
        lines = [json.loads(line) for line in streamed.text.splitlines()]
        assert any(line.get("stage") == "add" for line in lines)
        assert lines[-1]["done_all"] is True
        assert "营业时间.md: 已添加" in lines[-1]["summary"]
        assert await _documents(run) == [("营业时间.md", True)]
        # Without the script: a plain form post, and the outcome as a message on the page.
        again = await staff.post("/console/kb/upload", files=files)
        assert "未变化" in html.unescape(await staff.flash(again))
        refused = await staff.post(
            "/console/kb/upload", files={"files": ("价目表.xlsx", b"PK..", "application/zip")}
        )
        assert "不支持的文件类型 .xlsx" in html.unescape(await staff.flash(refused))
        (file_id,) = (await run.query("SELECT id FROM console_kb_files"))[0]
        (before,) = (await run.query("SELECT id FROM kb_documents"))[0]
        reindexed = await staff.post("/console/kb/reindex", {"file_id": str(file_id)})
        assert "已重新索引" in html.unescape(await staff.flash(reindexed))
        (after,) = (await run.query("SELECT id FROM kb_documents"))[0]
        assert after != before  # chunked and embedded again, from the kept bytes
        assert await _documents(run) == [("营业时间.md", True)]
        preview = html.unescape((await staff.get("/console/kb", params={"q": "几点营业"})).text)
        assert "判定：相关" in preview
        assert "每天 9:00–21:00 在线" in preview
        deleted = await staff.post("/console/kb/delete", {"document_id": str(after)})
        assert "已删除" in html.unescape(await staff.flash(deleted))
        assert await run.query("SELECT * FROM kb_documents") == []
        assert await run.query("SELECT * FROM console_kb_files") == []
        missing = await staff.post("/console/kb/delete", {"document_id": str(after)})
        assert "没有这个文档" in html.unescape(await staff.flash(missing))
    actions = [
        r[0] for r in await run.query("SELECT action FROM console_audit WHERE target = 'kb' ORDER BY id")
    ]
    assert actions == ["kb_upload", "kb_upload", "kb_reindex", "kb_delete"]


async def test_an_over_limit_upload_is_refused_at_once_with_the_limit_the_page_states(
    run: RunningPipeline,
) -> None:
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("admin")
        page = html.unescape((await staff.get("/console/kb")).text)
        stated = re.search(r'<span class="hint" id="kb-limits">(.*?)</span>', page)
        assert stated is not None
        assert f"文本、HTML 每个不超过 {MAX_TEXT_BYTES >> 20} MiB" in stated.group(1)
        assert f"PDF 不超过 {MAX_PDF_BYTES >> 20} MiB" in stated.group(1)
        big = {"files": ("菜单.txt", "拿铁 22 元。\n".encode() * ((8 << 20) // 17), "text/plain")}
        refused = html.unescape(await staff.flash(await staff.post("/console/kb/upload", files=big)))
        assert f"text 文档最多 {MAX_TEXT_BYTES >> 20} MiB" in refused  # the words `wxkf kb add` uses
        streamed = await staff.http.post(
            "/console/kb/upload",
            files=big,
            headers={"X-CSRF-Token": staff.csrf, "Accept": "application/x-ndjson"},
        )
        (line,) = [json.loads(line) for line in streamed.text.splitlines()]
        assert f"最多 {MAX_TEXT_BYTES >> 20} MiB" in line["error"]
    assert await run.query("SELECT * FROM console_kb_files") == []
    assert await run.query("SELECT * FROM kb_documents") == []


@pytest.mark.parametrize("link", ["[账户表](/etc/passwd)", "![保修卡](images/missing_card.png)"])
async def test_an_upload_linking_a_local_file_is_refused_with_the_link_named(
    run: RunningPipeline, link: str
) -> None:
    """An upload has no folder of its own: a link to a local file can name nothing it may send."""
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("admin")
        upload = {"files": ("保修.md", f"# 保修\n## 保修卡\n详见：{link}。\n".encode(), "text/markdown")}
        refused = html.unescape(await staff.flash(await staff.post("/console/kb/upload", files=upload)))
        assert link.split("](")[1].rstrip(")") in refused
        assert refused.startswith("文档 保修.md 中的链接")
    assert await run.query("SELECT * FROM console_kb_files") == []
    assert await run.query("SELECT * FROM kb_documents") == []


async def test_an_upload_that_cannot_be_read_is_refused_by_name_and_the_others_wait(
    run: RunningPipeline,
) -> None:
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("admin")
        files = [
            ("files", ("营业.md", FAQ.encode(), "text/markdown")),
            ("files", ("说明书.pdf", b"%PDF-1.4 not really", "application/pdf")),
        ]
        refused = html.unescape(await staff.flash(await staff.post("/console/kb/upload", files=files)))
        assert refused.startswith("无法读取 PDF 说明书.pdf / cannot read the PDF"), refused
        assert "营业.md" not in refused
    assert await run.query("SELECT * FROM console_kb_files") == []
    assert await run.query("SELECT * FROM kb_documents") == []


CAFE = """# 小鹿咖啡 常见问题
## 营业时间
每天早上 8 点开门，晚上 10 点关门，节假日照常营业。
## 会员
消费满 100 元可以办会员卡，会员每杯立减 3 元。
## 外卖
美团和饿了么都可以点外卖，3 公里内 30 分钟送达。
## 发票
可以开电子普通发票，在小程序订单里申请。
## 停车
店门口有 5 个免费车位，停车不超过 2 小时。
## 宠物
欢迎带宠物进店，请牵好绳子。
"""


async def test_the_preview_marks_used_only_the_passages_the_bot_answers_from(run: RunningPipeline) -> None:
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("admin")
        await staff.get("/console/kb")
        added = await staff.post(
            "/console/kb/upload", files={"files": ("cafe.md", CAFE.encode(), "text/markdown")}
        )
        assert "已添加" in html.unescape(await staff.flash(added))
        page = html.unescape((await staff.get("/console/kb", params={"q": "你们晚上几点关门"})).text)
    assert "判定：相关" in page
    rows = re.findall(
        r'<tr class="(used|)">.*?<code>score=([0-9.]+)</code>.*?<td>([^<]*)</td>\s*</tr>', page, re.S
    )
    assert len(rows) == 5
    for used, score, decision in rows:
        # The bot's relevance decision, in the words `wxkf kb search` prints for it.
        assert (used == "used") == (float(score) >= MIN_RELEVANCE), rows
        assert decision.strip() == ("✔ 相关 / relevant" if used else "弱相关 / weak"), rows
    assert [used for used, _score, _decision in rows][::4] == ["used", ""]  # the best used, the last not


async def _notifications(run: RunningPipeline, change: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(run.conninfo, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        async with await psycopg.AsyncConnection.connect(run.conninfo, autocommit=True) as writer:
            await writer.execute(change)
        return [n.payload async for n in listener.notifies(timeout=0.5)]


async def test_changes_notify_only_while_a_console_watches(run: RunningPipeline) -> None:
    insert = "INSERT INTO kf_conversations (open_kfid, external_userid) VALUES ('wkA', 'wm{}')"
    await run.query("UPDATE console_watch SET until = NULL RETURNING 1")
    assert await _notifications(run, insert.format(1)) == []  # nobody watches: the pipeline pays nothing
    await run.query("UPDATE console_watch SET until = now() + interval '1 minute' RETURNING 1")
    assert await _notifications(run, insert.format(2)) == ["wkA wm2"]


async def test_the_event_stream_carries_a_change_made_elsewhere(run: RunningPipeline) -> None:
    async with ConsoleClient(run.base_url) as staff:
        await staff.login("admin")
        async with staff.http.stream("GET", "/console/events") as stream:
            lines = stream.aiter_lines()
            assert await anext(lines) == "retry: 1500"  # sent once the process LISTENs
            await run.query(
                "INSERT INTO kf_conversations (open_kfid, external_userid) VALUES ('wkB', 'wmX') RETURNING 1"
            )
            received = [await asyncio.wait_for(anext(lines), 10) for _ in range(3)]
    assert received[1:] == ["event: change", 'data: ["wkB wmX"]']
