"""`wxkf kb …`: add documents to the knowledge base, list, search and remove them.

`wxkf kb add` is all or nothing: every file is read first, and if any cannot be (its type, its
size, its encoding, a broken PDF, a bad link), each such file is named, one line each, nothing is
added and the exit code is 1. On a terminal the stages show as progress bars; into a pipe or a log
file, as a plain line on stderr at a stage's start, about every 10 % or 30 s, and at its end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from wxkf.agent.kb.loaders import FORMATS, UnsupportedDocument, check_size, detect_format

# The store (psycopg and its pool) loads when a command opens the database: `wxkf --help` and the
# other commands start without it.
if TYPE_CHECKING:
    from wxkf.agent.kb.store import AddResult, KnowledgeBase

kb_app = typer.Typer(help="知识库 / the knowledge base", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")
_STATUS = {
    "added": "✅ 已添加 / added",
    "updated": "🔄 已更新 / updated",
    "unchanged": "➖ 未变化 / unchanged",
    "duplicate": "➖ 内容重复，已跳过 / duplicate, skipped",
    "empty": "⚠️ 没有文字 / no text",
}


def _run(action: Callable[[KnowledgeBase], Awaitable[T]]) -> T:
    """Open the database and the configured embedder, run `action`, and turn failures into exit 1."""
    from wxkf.agent.kb.embedders import EmbeddingError
    from wxkf.agent.kb.store import KnowledgeBase, KnowledgeBaseError
    from wxkf.cli import settings_or_exit  # the surface's settings loader; imported late (it imports us)
    from wxkf.db.engine import Database, DatabaseError

    settings = settings_or_exit()

    async def go() -> T:
        from psycopg_pool import AsyncConnectionPool

        from wxkf.media.storage import media_store

        database = await Database.open(settings)
        # Documents' images and files go to the media store the service sends them from.
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            database.conninfo, min_size=1, max_size=2, open=False
        )
        await pool.open()
        store = media_store(settings, pool)
        kb = KnowledgeBase.from_settings(database, settings, media_store=store)
        try:
            return await action(kb)
        finally:
            await kb.aclose()
            await store.aclose()
            await pool.close()
            await database.close()

    try:
        return asyncio.run(go())
    except (DatabaseError, UnsupportedDocument, EmbeddingError, KnowledgeBaseError) as exc:
        err_console.print(str(exc), highlight=False, markup=False, soft_wrap=True)  # paths stay whole
        raise typer.Exit(1) from None


_NOTHING_ADDED = (
    "未添加任何文件：请修正或去掉以上文件后重试 / nothing was added: fix or leave out the file(s) above"
)


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given, and the supported files inside given directories; a missing, unsupported or
    too large file given by name refuses them all, before anything is read or written, each named."""
    files: list[Path] = []
    refused: list[str] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS))
        elif path.exists():
            try:
                check_size(path, detect_format(path))
            except UnsupportedDocument as exc:
                refused.append(str(exc))
            files.append(path)
        else:
            refused.append(f"文件不存在 / no such file: {path}")
    if refused:
        err_console.print(
            "\n".join([*refused, _NOTHING_ADDED]), highlight=False, markup=False, soft_wrap=True
        )
        raise typer.Exit(1)
    return files


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


_STAGES = {  # stage → (Chinese, English, what it counts in each)
    "add": ("读取切分", "reading", "个文档", "documents"),
    "embed": ("向量化", "embedding", "个片段", "chunks"),
}


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PlainProgress:
    """Progress as plain lines, for a pipe or a log file where a progress bar shows nothing until
    the end: a stage's start with its count, then about every `step` of it or every `every` seconds,
    whichever comes first, and its end; Chinese first, English beside."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        step: float = 0.1,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write, self.step, self.every, self.clock = write, step, every, clock
        self.started: dict[str, float] = {}  # stage → when its first report came
        self.last: dict[str, tuple[float, int]] = {}  # stage → when and at what the last line was

    def __call__(self, stage: str, done: int, total: int) -> None:
        zh, en, zh_unit, en_unit = _STAGES.get(stage, (stage, stage, "", ""))
        now = self.clock()
        if stage not in self.started:
            self.started[stage] = now
            self.last[stage] = (now, done)
            if done < total:
                self.write(f"{zh}开始：共 {total} {zh_unit} / {en}: {total} {en_unit}")
                return
        elif not self._due(stage, now, done, total):
            return
        self.last[stage] = (now, done)
        elapsed = _clock(now - self.started[stage])
        share = f"{done}/{total}"
        if done >= total:
            self.write(f"{zh}完成 {share}，用时 {elapsed} / {en} done: {share} in {elapsed}")
            return
        share += f" ({done / total:.0%})"
        if not done:
            self.write(f"{zh} {share}，已用 {elapsed} / {en} {share}, {elapsed} elapsed")
            return
        left = _clock((now - self.started[stage]) / done * (total - done))
        self.write(
            f"{zh} {share}，已用 {elapsed}，预计还需 {left} / {en} {share}, {elapsed} elapsed, about {left} left"
        )

    def _due(self, stage: str, now: float, done: int, total: int) -> bool:
        last_time, last_done = self.last[stage]
        if done >= total:
            return last_done < total  # the end, once
        return done - last_done >= self.step * total or now - last_time >= self.every


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _with_progress(action: Callable[[KnowledgeBase, Callable[[str, int, int], None]], Awaitable[T]]) -> T:
    """Run `action` with a progress bar per stage (reading files, then embedding chunks) on a
    terminal, and with `PlainProgress` lines on stderr otherwise."""
    if not console.is_terminal:
        return _run(lambda kb: action(kb, PlainProgress(_stderr_line)))
    with _progress() as progress:
        tasks = {
            "add": progress.add_task("读取切分 / reading", total=None, visible=False),
            "embed": progress.add_task("向量化 / embedding", total=None, visible=False),
        }

        def report(stage: str, done: int, total: int) -> None:
            progress.update(tasks[stage], completed=done, total=total, visible=True)

        return _run(lambda kb: action(kb, report))


@kb_app.command("add")
def add(
    paths: Annotated[list[Path], typer.Argument(help="Markdown / text / HTML / PDF files or directories")],
    collection: Annotated[
        str,
        typer.Option(
            help="知识库分区：某个客服账号专用（见 wxkf accounts set … kb_collections=…）；默认共享 / "
            "a collection for one account's KB; default: the shared one"
        ),
    ] = "",
) -> None:
    """添加文档（同一文件重复添加不会重复入库）/ add documents (re-adding the same file changes nothing).

    Markdown 中引用的本地图片和文件（如 ![尺码表](size.png)）会随答案发送 / local images and files a
    Markdown file references are sent with the answer."""
    files = _expand(paths)

    async def adding(kb: KnowledgeBase, report: Callable[[str, int, int], None]) -> list[AddResult]:
        if files:
            report("add", 0, len(files))  # at once: reading and chunking a large file takes a while
        try:
            return await kb.add_documents(files, progress=report, collection=collection)
        except UnsupportedDocument as exc:
            raise UnsupportedDocument(f"{exc}\n{_NOTHING_ADDED}") from None

    results = _with_progress(adding)
    table = Table("文档 / document", "结果 / result", "片段 / chunks")
    for result in results:
        table.add_row(result.source, _STATUS[result.status], str(result.chunks))
    console.print(table)


@kb_app.command("reindex")
def reindex() -> None:
    """用当前配置的向量模型重新向量化（更换模型后运行）/ re-embed with the configured embedder (after changing it)."""
    count = _with_progress(lambda kb, report: kb.reindex(progress=report))
    if count:
        console.print(f"✅ 已重新向量化 {count} 个片段 / re-embedded {count} chunks", highlight=False)
    else:
        console.print(
            "➖ 所有片段已是当前模型的向量 / every chunk is already embedded by the configured model"
        )


@kb_app.command("sample")
def sample() -> None:
    """载入内置示例知识库（虚构商店的常见问题）/ load the bundled sample FAQ of a fictional shop."""
    from wxkf.agent.kb.bundled import load_sample

    results = _run(load_sample)
    for result in results:
        console.print(f"{_STATUS[result.status]}: {result.source} ({result.chunks})", highlight=False)


@kb_app.command("list")
def list_documents() -> None:
    """列出文档及片段数 / list documents with their chunk counts."""
    documents = _run(lambda kb: kb.list_documents())
    if not documents:
        console.print("知识库为空：用 wxkf kb add 文件 添加 / the knowledge base is empty: wxkf kb add FILE")
        return
    from wxkf.cli import display_times  # the surface's settings loader; imported late (it imports us)

    when, caption = display_times()
    table = Table(
        "ID",
        "来源 / source",
        "分区 / collection",
        "格式 / format",
        "片段 / chunks",
        "添加时间 / added",
        caption=caption,
    )
    for doc in documents:
        table.add_row(
            str(doc.id),
            doc.source,
            doc.collection or "（共享 shared）",
            doc.format,
            str(doc.chunks),
            when(doc.added_at),
        )
    console.print(table)


@kb_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="问题 / the question")],
    k: Annotated[int, typer.Option("-k", help="最多返回几条 / at most this many results", min=1, max=50)] = 5,
) -> None:
    """检索知识库 / search the knowledge base (hybrid: vector + terms)."""
    if not query.strip():
        err_console.print("❌ 问题不能为空 / the question is empty", highlight=False, markup=False)
        raise typer.Exit(2)
    passages = _run(lambda kb: kb.search(query, k))
    if not passages:
        console.print("没有足够相关的内容 / nothing relevant enough in the knowledge base")
        return
    for rank, passage in enumerate(passages, start=1):
        console.print(
            f"[bold]{rank}. {passage.heading or '（无标题）'}[/bold]  "
            f"score={passage.score:.3f} {passage.relevance} "
            f"(similarity={passage.similarity:.3f} coverage={passage.coverage:.2f})",
            highlight=False,
        )
        console.print(f"   来源 / source: {passage.source}", highlight=False, markup=False)
        console.print(f"   {passage.text}", highlight=False, markup=False)


@kb_app.command("remove")
def remove(
    target: Annotated[str, typer.Argument(help="文档 ID 或来源路径 / document id or source path")],
) -> None:
    """删除文档 / remove a document by id or path."""
    removed = _run(lambda kb: kb.remove(target))
    if removed is None:
        err_console.print(
            f"没有这个文档：{target}（用 wxkf kb list 查看）/ no such document: see wxkf kb list",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(1)
    console.print(f"🗑️ 已删除 / removed: {removed.source} ({removed.chunks})", highlight=False)
