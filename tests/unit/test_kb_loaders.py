from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wxkf.agent.kb.loaders import (
    UnsupportedDocument,
    decode_text,
    detect_format,
    html_sections,
    read_sections,
)
from wxkf.agent.kb.text import lexical_terms, term_counts

from .kb_pdf import minimal_pdf


def test_html_keeps_text_and_headings_and_drops_scripts_and_styles() -> None:
    html = """<html><head><title>不要</title><style>p{color:red}</style></head><body>
    <h1>售后</h1><p>退货&amp;换货请在<b>七天</b>内申请。</p>
    <script>alert("steal")</script><h2>运费</h2><ul><li>满 99 元包邮</li></ul>
    <img src=x onerror="alert(1)"></body></html>"""
    sections = html_sections(html)
    assert [s.headings for s in sections] == [("售后",), ("售后", "运费")]
    assert "退货&换货请在七天内申请。" in sections[0].body
    text = " ".join(s.body for s in sections)
    for leaked in ("alert", "steal", "color", "不要", "onerror"):
        assert leaked not in text


def test_unknown_extensions_are_refused_with_a_readable_message() -> None:
    with pytest.raises(UnsupportedDocument) as info:
        detect_format(Path("faq.docx"))
    assert ".docx" in str(info.value)
    assert "Markdown" in str(info.value)


def test_text_in_gb18030_is_decoded() -> None:
    assert decode_text("七天无理由退货".encode("gb18030")) == "七天无理由退货"
    assert decode_text("\ufeff发票".encode()) == "发票"


def test_pdf_pages_become_sections() -> None:
    sections = read_sections(minimal_pdf(["Return within 7 days.", "Invoices by email."]), "pdf")
    assert [s.headings for s in sections] == [("第 1 页",), ("第 2 页",)]
    assert "Return within 7 days." in sections[0].body


def test_a_broken_pdf_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedDocument):
        read_sections(b"%PDF-1.4 not really", "pdf")


def test_terms_are_cjk_unigrams_bigrams_and_lowercased_words_without_stopwords() -> None:
    counts = term_counts("请问退货运费怎么算？iPhone 退货")
    assert counts["退货"] == 2
    assert {"退", "货", "运费", "货运", "iphone"} <= set(counts)
    assert "怎么" not in counts
    assert "请问" not in counts
    assert lexical_terms("退货运费 iPhone") == ["退货", "货运", "运费", "iphone", "≈运费"]


def test_synonyms_meet_at_a_concept_term_and_scaffolding_makes_no_bigram() -> None:
    assert lexical_terms("退货运费 iPhone")[:4] == ["退货", "货运", "运费", "iphone"]
    # 实体店 and 门店 name one thing: both texts carry the concept term, so they match lexically.
    assert "≈门店" in lexical_terms("有实体店可以去看看吗")
    assert "≈门店" in term_counts("线下门店地址")
    # 专票 is both an invoice and a special VAT invoice.
    assert {"≈发票", "≈专用发票"} <= set(lexical_terms("公司报销需要专票"))
    # 可以 is cut out of the run, so no "店可" bigram bridges it.
    assert "店可" not in lexical_terms("实体店可以去吗")


def test_a_broken_pdf_leaves_no_parser_warnings_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(UnsupportedDocument):
        read_sections(b"this is not a pdf at all\n", "pdf")
    assert [r.getMessage() for r in caplog.records] == []


def test_a_refusal_names_the_document_it_is_given() -> None:
    binary = bytes(range(256)) * 4  # neither UTF-8 nor GB18030
    for fmt in ("markdown", "text", "html"):
        with pytest.raises(UnsupportedDocument) as undecodable:
            read_sections(binary, fmt, "docs/sub/bad.md")
        assert str(undecodable.value).startswith("无法识别文件 docs/sub/bad.md 的编码"), undecodable.value
    with pytest.raises(UnsupportedDocument) as broken:
        read_sections(b"%PDF-1.4 not really", "pdf", "docs/manual.pdf")
    assert str(broken.value).startswith("无法读取 PDF docs/manual.pdf / cannot read the PDF"), broken.value
    with pytest.raises(UnsupportedDocument) as unsupported:
        detect_format(Path("docs/sub/faq.docx"))
    assert "docs/sub/faq.docx" in str(unsupported.value)
