from __future__ import annotations

import itertools

from wxkf.agent.kb.chunking import Section, chunk_section, chunk_sections, split_sentences
from wxkf.agent.kb.loaders import markdown_sections


def test_sentences_end_at_chinese_punctuation_and_newlines() -> None:
    text = "签收后七天内可以退货。定制商品除外！需要发票吗？请写抬头；谢谢\n第二行"
    assert split_sentences(text) == [
        "签收后七天内可以退货。",
        "定制商品除外！",
        "需要发票吗？",
        "请写抬头；",
        "谢谢",
        "第二行",
    ]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_sentences("他说：“可以退。”然后走了。") == ["他说：“可以退。”", "然后走了。"]


def test_chunks_respect_the_cap_and_cut_only_at_sentence_ends() -> None:
    sentence = "退货请在签收后七天内申请。"  # 13 characters
    chunks = chunk_section(Section(("退换货",), sentence * 20), max_chars=60, overlap_chars=20)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk.text) <= 60
        assert chunk.text.endswith("。")
        assert chunk.heading == "退换货"


def test_each_chunk_after_the_first_repeats_the_previous_last_sentence() -> None:
    body = "".join(f"第{i}句话在这里。" for i in range(12))
    chunks = chunk_section(Section((), body), max_chars=40, overlap_chars=10)
    for before, after in itertools.pairwise(chunks):
        last = split_sentences(before.text)[-1]
        assert after.text.startswith(last)


def test_a_sentence_longer_than_the_cap_is_cut_hard_with_overlap() -> None:
    chunks = chunk_section(Section((), "长" * 100 + "。"), max_chars=40, overlap_chars=10)
    assert all(len(c.text) <= 40 for c in chunks)
    assert "".join(c.text for c in chunks).count("长") >= 100


def test_no_chunk_crosses_a_heading_and_the_heading_path_is_kept() -> None:
    markdown = """# 商城常见问题
## 退换货
### 可以退货吗？
七天无理由退货。
### 运费谁出？
质量问题我们承担。
## 发票
可以开电子发票。
```
# 这不是标题
```
"""
    chunks = chunk_sections(markdown_sections(markdown))
    assert [(c.heading, c.text.splitlines()[0]) for c in chunks] == [
        ("商城常见问题 > 退换货 > 可以退货吗？", "七天无理由退货。"),
        ("商城常见问题 > 退换货 > 运费谁出？", "质量问题我们承担。"),
        ("商城常见问题 > 发票", "可以开电子发票。"),
    ]
    assert "# 这不是标题" in chunks[-1].text
    assert chunks[0].indexed_text.startswith("商城常见问题 > 退换货 > 可以退货吗？\n")


def test_a_skipped_heading_level_does_not_shift_the_path() -> None:
    sections = markdown_sections("# A\n### C\ntext\n## B\nmore")
    assert [s.headings for s in sections] == [("A", "", "C"), ("A", "B")]
    assert chunk_sections(sections)[0].heading == "A > C"


def test_lines_stay_lines_and_the_cap_counts_the_line_breaks() -> None:
    body = "\n".join(["满99元包邮"] * 30)
    chunks = chunk_section(Section((), body), max_chars=50, overlap_chars=10)
    assert all(len(c.text) <= 50 for c in chunks)
    assert chunks[0].text.startswith("满99元包邮\n满99元包邮\n")
