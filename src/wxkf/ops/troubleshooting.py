"""Render `docs/troubleshooting.md` from the error catalog, the guide's one source of truth.

    python -m wxkf.ops.troubleshooting > docs/troubleshooting.md     (or: make docs)

Each entry gets an explicit `<a id>` anchor (its `doc_anchor`), so links from `wxkf explain` and
`wxkf doctor` survive edits to the headings. A test regenerates the guide in memory and fails when the
committed file has drifted from the catalog.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from wxkf.wecom.catalog import ENTRIES, SECTIONS, CatalogEntry, official_codes

_HEADER = """\
# 故障排查指南 / Troubleshooting guide

<!-- 本文件由错误目录生成，请勿手工修改：改 src/wxkf/wecom/catalog.py 后运行 `make docs`。
     Generated from the error catalog; edit src/wxkf/wecom/catalog.py and run `make docs`. -->

先运行 `wxkf doctor`：它逐项检查配置、数据库、企业微信凭证、回调和大模型接口，并链接到本文对应的小节。
遇到错误码或下面的情况时，`wxkf explain <错误码|关键字>`（例如 `wxkf explain 95018`、
`wxkf explain pgvector-missing`）在终端里显示同样的原因和解决方法。

Run `wxkf doctor` first: it checks settings, database, WeCom credentials, the callback and the LLM endpoint,
and links to the sections below. For an errcode or a situation listed here, `wxkf explain <errcode|key>`
prints the same cause and fix in the terminal.
"""

_DEBUGGING = """\
## 调试技巧 / Debugging tips

- 详细日志 / verbose logs：在 `.env` 中设置 `LOG_LEVEL=DEBUG` 后重启 / set `LOG_LEVEL=DEBUG` in `.env` and restart.
- 日志文件 / log files：在数据目录（`WXKF_DATA_DIR`，默认 `./var`）中，按天切分，另有只含错误的日志 /
  in the data directory (`WXKF_DATA_DIR`, default `./var`), rotated daily, with a separate error log.
- 测试企业微信接口 / test the WeCom API：
  `curl "https://qyapi.weixin.qq.com/cgi-bin/gettoken?corpid=YOUR_CORP_ID&corpsecret=YOUR_SECRET&debug=1"`
  （`debug=1` 每分钟限 5 次 / limited to 5 calls a minute）。
- 测试本地服务 / test the local server：`curl http://localhost:8000/health`、`curl http://localhost:8000/ready`。
- 错误码查询 / errcode lookup：`wxkf explain <errcode>`，或企业微信官方
  https://open.work.weixin.qq.com/devtool/query?e=<errcode>。
"""


def _steps(steps: Iterable[str]) -> list[str]:
    return [f"{n}. {step}" for n, step in enumerate(steps, start=1)]


def _heading(entry: CatalogEntry) -> str:
    code = f"{entry.errcode} " if entry.errcode is not None else ""
    return f"### {code}{entry.title_zh} / {entry.title_en}"


def render_entry(entry: CatalogEntry) -> list[str]:
    """One guide section: anchor, heading, official text (for API errcodes), cause and fix in both languages."""
    lines = [f'<a id="{entry.doc_anchor}"></a>', "", _heading(entry), ""]
    lines += [f"`wxkf explain {entry.key}`", ""]
    official = entry.official
    if official is not None:
        check = f"（{official.check_zh}）" if official.check_zh else ""
        lines += [f"**官方说明 / Official**：{official.description_zh}{check}", ""]
    lines += [f"**原因**：{entry.cause_zh}", "", f"*Cause*: {entry.cause_en}", ""]
    lines += ["**解决方法**：", "", *_steps(entry.fix_zh), ""]
    lines += ["*Fix*:", "", *_steps(entry.fix_en), ""]
    return lines


_PAGE_LINK = re.compile(r"\]\(#[^)]*\)")


def _cell(text: str) -> str:
    # The official page's in-page links point at anchors that do not exist here; keep the label only.
    return _PAGE_LINK.sub("]", text).replace("|", "\\|").replace("\n", " ") or "—"


def render_official_table() -> list[str]:
    lines = [
        '<a id="official-errcodes"></a>',
        "",
        "## 附录：官方错误码表 / Appendix: official errcodes",
        "",
        "企业微信全局错误码（官方文档 90313）。上面有详细说明的错误码在表中链接到对应小节。",
        "WeCom's global errcode table (official doc 90313); codes with a section above link to it.",
        "",
        "| errcode | 错误说明 / description | 排查方法 / what to check |",
        "|---|---|---|",
    ]
    detailed = {entry.errcode: entry for entry in ENTRIES if entry.errcode is not None}
    for code, official in sorted(official_codes().items()):
        entry = detailed.get(code)
        label = f"[{code}](#{entry.doc_anchor})" if entry else str(code)
        lines.append(f"| {label} | {_cell(official.description_zh)} | {_cell(official.check_zh)} |")
    lines.append("")
    return lines


def render_guide() -> str:
    """The whole guide as Markdown; deterministic, so the committed copy can be compared byte for byte."""
    lines = [_HEADER, "## 目录 / Contents", ""]
    for number, (section, (zh, en)) in enumerate(SECTIONS.items(), start=1):
        lines.append(f"{number}. [{zh} / {en}](#section-{section})")
        for entry in ENTRIES:
            if entry.section == section:
                code = f"{entry.errcode} " if entry.errcode is not None else ""
                lines.append(f"   - [{code}{entry.title_zh}](#{entry.doc_anchor})")
    lines += ["- [调试技巧 / Debugging tips](#debugging)", "- [附录：官方错误码表](#official-errcodes)", ""]
    for number, (section, (zh, en)) in enumerate(SECTIONS.items(), start=1):
        lines += [f'<a id="section-{section}"></a>', "", f"## {number}. {zh} / {en}", ""]
        for entry in ENTRIES:
            if entry.section == section:
                lines += render_entry(entry)
    lines += ['<a id="debugging"></a>', "", _DEBUGGING]
    lines += render_official_table()
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    sys.stdout.write(render_guide())


if __name__ == "__main__":
    main()
