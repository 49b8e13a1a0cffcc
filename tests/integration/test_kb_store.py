from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from wxkf.agent.kb import Embedder, HashingEmbedder, KnowledgeBase, UnsupportedDocument, load_sample, store
from wxkf.agent.kb.text import TERMS_VERSION
from wxkf.config import Settings
from wxkf.db.engine import Database

from ..unit.kb_pdf import minimal_pdf

FAQ = """# 小店常见问题
## 退换货
### 可以退货吗？
签收后七天内，商品完好可以无理由退货。定制商品不支持退货。
### 退货运费谁出？
质量问题由我们承担运费，无理由退货的运费由买家承担。
## 发票
### 能开发票吗？
可以开电子普通发票，确认收货后在订单详情申请。
"""


@pytest.fixture
def kb(database: Database) -> KnowledgeBase:
    return KnowledgeBase(database, HashingEmbedder())


async def scalar(database: Database, sql: str) -> object:
    async with database.pool.connection() as conn:
        row = await (await conn.execute(sql)).fetchone()
    return None if row is None else row[0]


async def test_markdown_is_chunked_by_heading_and_searchable(kb: KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    [result] = await kb.add_documents([path])
    assert (result.status, result.chunks) == ("added", 3)
    [doc] = await kb.list_documents()
    assert (doc.source, doc.format, doc.chunks) == (str(path.resolve()), "markdown", 3)
    passages = await kb.search("退回来的运费要我付吗", k=3)
    assert passages[0].heading == "小店常见问题 > 退换货 > 退货运费谁出？"
    assert passages[0].source == str(path.resolve())
    assert "买家承担" in passages[0].text
    assert passages[0].score > 0


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("notes.txt", "会员每月8号积分双倍。\n积分可以抵现金。".encode(), "积分双倍"),
        (
            "page.html",
            "<h1>门店</h1><p>杭州门店每天&nbsp;10点营业</p><script>var secret=1</script>".encode(),
            "杭州门店",
        ),
        ("manual.pdf", minimal_pdf(["Warranty lasts three years."]), "Warranty lasts three years."),
    ],
)
async def test_each_format_is_ingested(
    kb: KnowledgeBase, tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    [result] = await kb.add_documents([path])
    assert result.status == "added"
    stored = await scalar(kb.database, "SELECT string_agg(text, ' ') FROM kb_chunks")
    assert isinstance(stored, str)
    assert expected in stored
    assert "secret" not in stored


async def test_re_adding_is_idempotent_and_a_changed_file_replaces_its_chunks(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    await kb.add_documents([path])
    generation = await scalar(kb.database, "SELECT generation FROM kb_state")

    [again] = await kb.add_documents([path])
    assert again.status == "unchanged"
    assert await scalar(kb.database, "SELECT count(*) FROM kb_chunks") == 3
    assert await scalar(kb.database, "SELECT generation FROM kb_state") == generation

    copy = tmp_path / "copy.md"
    copy.write_text(FAQ, encoding="utf-8")
    [duplicate] = await kb.add_documents([copy])
    assert duplicate.status == "duplicate"
    assert len(await kb.list_documents()) == 1

    path.write_text(FAQ + "## 门店\n杭州有一家体验店。\n", encoding="utf-8")
    [updated] = await kb.add_documents([path])
    assert (updated.status, updated.chunks) == ("updated", 4)
    assert await scalar(kb.database, "SELECT count(*) FROM kb_chunks") == 4
    assert (await kb.search("杭州体验店在哪"))[0].heading == "小店常见问题 > 门店"


async def test_an_unreadable_file_changes_nothing(kb: KnowledgeBase, tmp_path: Path) -> None:
    good = tmp_path / "faq.md"
    good.write_text(FAQ, encoding="utf-8")
    bad = tmp_path / "faq.docx"
    bad.write_bytes(b"PK")
    with pytest.raises(UnsupportedDocument):
        await kb.add_documents([good, bad])
    assert await kb.list_documents() == []


async def test_remove_by_id_or_path_drops_chunks_and_their_terms(kb: KnowledgeBase, tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text(FAQ, encoding="utf-8")
    shop = tmp_path / "shop.txt"
    shop.write_text("杭州体验店每天十点开门。", encoding="utf-8")
    await kb.add_documents([faq, shop])

    removed = await kb.remove(str(shop))
    assert removed is not None
    assert removed.source == str(shop.resolve())
    assert await scalar(kb.database, "SELECT count(*) FROM kb_terms WHERE term = '杭州'") == 0
    assert await kb.search("杭州体验店几点开门") == []

    [doc] = await kb.list_documents()
    assert await kb.remove(doc.id) is not None
    assert await kb.remove(doc.id) is None
    assert await scalar(kb.database, "SELECT count(*) FROM kb_chunks") == 0
    assert await kb.search("退货") == []


async def test_the_sample_faq_answers_paraphrases(kb: KnowledgeBase) -> None:
    results = await load_sample(kb)
    assert [r.status for r in results] == ["added"]
    assert results[0].chunks >= 40
    assert [r.status for r in await load_sample(kb)] == ["unchanged"]
    cases = {
        "邮费怎么收，买多少免运费": "运费怎么算？",
        "发票开错抬头了": "发票抬头写错了能重开吗？",
        "密码忘了登不进去": "忘记密码怎么办？",
        "退款一般几天能收到": "退款多久能到账？",
    }
    for question, entry in cases.items():
        passages = await kb.search(question, k=3)
        assert entry in [p.heading.rsplit(" > ", 1)[-1] for p in passages], question
        assert passages[0].source == "sample/shop_faq.md"


@pytest.mark.parametrize("question", ["今天天气怎么样", "帮我写一首关于大海的诗", "量子计算机的原理是什么"])
async def test_unrelated_questions_find_nothing(kb: KnowledgeBase, question: str) -> None:
    await load_sample(kb)
    assert await kb.search(question) == []


async def test_a_new_embedder_version_re_embeds_every_chunk(database: Database, tmp_path: Path) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    old = KnowledgeBase(database, HashingEmbedder(dim=256))
    await old.add_documents([path])
    assert await scalar(database, "SELECT DISTINCT vector_dims(embedding) FROM kb_chunks") == 256

    new = KnowledgeBase(database, HashingEmbedder(dim=1024))
    passages = await new.search("退货运费谁出", k=1)
    assert passages[0].heading.endswith("退货运费谁出？")
    assert await scalar(database, "SELECT DISTINCT vector_dims(embedding) FROM kb_chunks") == 1024
    versions = await scalar(database, "SELECT count(DISTINCT embedder_version) FROM kb_chunks")
    assert versions == 1
    state_version = await scalar(database, "SELECT embedder_version FROM kb_state")
    assert isinstance(state_version, str)
    assert state_version.startswith("hashing-3:d1024:")
    assert await scalar(database, "SELECT to_regclass('ix_kb_chunks_hnsw_256')") is not None


async def test_vector_search_uses_the_hnsw_index(kb: KnowledgeBase) -> None:
    await load_sample(kb)
    async with kb.database.pool.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        cur = await conn.execute(
            "EXPLAIN SELECT id FROM kb_chunks WHERE vector_dims(embedding) = 1024 "
            "ORDER BY embedding::vector(1024) <=> CAST(%s AS vector(1024)) LIMIT 5",
            ("[" + ",".join(["0.03125"] * 1024) + "]",),
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "ix_kb_chunks_hnsw_1024" in plan


async def test_chunks_termed_by_an_older_version_are_re_termed_before_searching(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    path = tmp_path / "faq.md"
    path.write_text(FAQ + "## 门店\n### 有线下门店吗？\n杭州有一家体验店。\n", encoding="utf-8")
    await kb.add_documents([path])
    # As a knowledge base written before synonym concepts existed would look.
    async with kb.database.pool.connection() as conn:
        await conn.execute(
            "UPDATE kb_chunks SET terms = array_remove(terms, '≈门店'); UPDATE kb_state SET terms_version = NULL"
        )
    assert await scalar(kb.database, "SELECT count(*) FROM kb_chunks WHERE '≈门店' = ANY(terms)") == 0
    passages = await kb.search("有实体店吗", k=1)
    assert passages[0].heading.endswith("有线下门店吗？")
    assert await scalar(kb.database, "SELECT count(*) FROM kb_chunks WHERE '≈门店' = ANY(terms)") == 1
    assert await scalar(kb.database, "SELECT terms_version FROM kb_state") == TERMS_VERSION


async def test_capped_lexical_candidates_rank_and_weigh_as_the_full_scoring_does(
    kb: KnowledgeBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a budget of 2 every term is "common": candidates must hold the two rarest (alpha, beta),
    # whose weight is then counted once rather than checked per chunk; gamma is checked per chunk.
    # Chunk 0 is long and holds gamma, chunk 1 is short without it: by BM25 chunk 1 ranks first.
    filler = " ".join(f"word{i}" for i in range(60))
    bodies = [f"alpha beta gamma {filler}", "alpha beta", "alpha beta gamma", "beta gamma", "gamma", "gamma"]
    path = tmp_path / "faq.md"
    path.write_text("".join(f"## 条目{i}\n{body}\n" for i, body in enumerate(bodies)), encoding="utf-8")
    await kb.add_documents([path])
    question = "alpha beta gamma"
    full, full_details = await kb.search_detailed(question, k=6, halves=(False, True), threshold=False)
    assert len(full_details["lexical"]) == 6
    monkeypatch.setattr(store, "LEXICAL_CANDIDATE_BUDGET", 2)
    capped, capped_details = await kb.search_detailed(question, k=6, halves=(False, True), threshold=False)
    assert len(capped_details["lexical"]) == 2
    order = full_details["lexical"]
    assert capped_details["lexical"] == sorted(capped_details["lexical"], key=order.index)
    coverage = {p.chunk_id: p.coverage for p in full}
    assert all(p.coverage == coverage[p.chunk_id] for p in capped)


# The offline default embedder (e5), loaded once per test session.

BILLING_FAQ = """# 青山银行
## 交易
### 同一笔消费被扣款两次怎么办？
重复扣款一般在 3 到 7 个工作日内由商户冲正退回。
### 卡丢了怎么办？
请立即在 App 挂失，挂失即时生效。
## 网点
### 网点几点营业？
工作日九点到下午五点。
"""


@pytest.mark.parametrize("embedder_name", ["default", "e5"])
async def test_the_default_embedder_answers_what_shares_no_characters_and_refuses_the_off_topic(
    database: Database,
    tmp_path: Path,
    default_embedder: Embedder,
    e5_embedder: Embedder,
    embedder_name: str,
) -> None:
    path = tmp_path / "bank.md"
    path.write_text(BILLING_FAQ, encoding="utf-8")
    kb = KnowledgeBase(database, default_embedder if embedder_name == "default" else e5_embedder)
    steps: list[tuple[str, int, int]] = []
    await kb.add_documents([path], progress=lambda stage, done, total: steps.append((stage, done, total)))
    assert ("embed", 3, 3) in steps
    [best, *_] = await kb.search("我被扣了两次钱")  # no character in common with its entry
    assert best.heading.endswith("同一笔消费被扣款两次怎么办？")
    assert best.relevant
    for question in ("明天会下雨吗", "帮我推荐几只股票", "写一首关于春天的诗"):
        assert await kb.search(question) == [], question


async def test_a_document_added_later_is_embedded_too(
    database: Database, tmp_path: Path, e5_embedder: Embedder
) -> None:
    """`wxkf kb add` run twice, and a console re-index (remove, add again): every chunk gets a vector,
    not only those of the first add."""
    kb = KnowledgeBase(database, e5_embedder)
    first, second = tmp_path / "bank.md", tmp_path / "returns.md"
    first.write_text(BILLING_FAQ, encoding="utf-8")
    second.write_text("# 退货\n\n收到商品 7 天内可无理由退货。\n", encoding="utf-8")
    await kb.add_documents([first])
    await kb.add_documents([second])
    assert await scalar(database, "SELECT count(*) FROM kb_chunks WHERE embedding IS NULL") == 0
    [best, *_] = await kb.search("买的东西不想要了怎么办")
    assert best.source.endswith("returns.md")
    assert best.similarity > 0.8
    await kb.remove(str(second))
    await kb.add_documents([second])
    assert await scalar(database, "SELECT count(*) FROM kb_chunks WHERE embedding IS NULL") == 0


async def test_changing_the_model_needs_a_reindex_and_never_mixes_vectors(
    database: Database, tmp_path: Path, e5_embedder: Embedder
) -> None:
    path = tmp_path / "bank.md"
    path.write_text(BILLING_FAQ, encoding="utf-8")
    await KnowledgeBase(database, HashingEmbedder()).add_documents([path])
    kb = KnowledgeBase(database, e5_embedder)
    status = await kb.status()
    assert status.stale
    assert (status.documents, status.chunks) == (1, 3)
    with pytest.raises(store.KnowledgeBaseStale, match="wxkf kb reindex"):
        await kb.search("卡丢了")
    steps: list[tuple[str, int, int]] = []
    assert await kb.reindex(lambda stage, done, total: steps.append((stage, done, total))) == 3
    assert steps[-1] == ("embed", 3, 3)
    assert not (await kb.status()).stale
    assert await scalar(database, "SELECT count(DISTINCT embedder_version) FROM kb_chunks") == 1
    assert await scalar(database, "SELECT DISTINCT vector_dims(embedding) FROM kb_chunks") == 384
    assert (await kb.search("银行卡找不到了"))[0].heading.endswith("卡丢了怎么办？")
    assert await kb.reindex() == 0


async def test_from_settings_takes_the_embedder_and_kb_min_relevance(
    database: Database, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    """The one constructor every surface uses: KB_MIN_RELEVANCE set moves the threshold, unset keeps
    the calibrated default."""
    default = KnowledgeBase.from_settings(database, settings_factory(kb_embedder="hashing"))
    assert default.embedder.name == HashingEmbedder().name
    assert default.min_relevance == store.MIN_RELEVANCE
    path = tmp_path / "faq.md"
    path.write_text(FAQ, encoding="utf-8")
    await default.add_documents([path])
    assert await default.search("能开发票吗？")
    assert await default.search("今天天气怎么样") == []
    lenient = KnowledgeBase.from_settings(
        database, settings_factory(kb_embedder="hashing", kb_min_relevance=0)
    )
    assert lenient.min_relevance == 0
    assert await lenient.search("今天天气怎么样")


async def test_adding_a_large_document_leaves_the_event_loop_free(kb: KnowledgeBase) -> None:
    """Reading, chunking and terming run off the loop: a server adding a big upload still answers."""
    line = "会员积分每满一百元可以抵扣一元现金，积分在确认收货后七天到账，退货时按比例扣回。\n"
    document = store.SourceDocument("积分规则.txt", (line * 24_000).encode(), "text")  # about 2.8 MB
    gaps: list[float] = []
    adding = asyncio.create_task(kb.add_documents([document]))
    clock = asyncio.get_running_loop().time
    while not adding.done():
        before = clock()
        await asyncio.sleep(0.01)
        gaps.append(clock() - before)
    [result] = await adding
    assert result.status == "added"
    # A blocked loop misses its 10 ms wake-ups by as long as the blocking lasts: 0.84 s with the work on
    # the loop on an idle machine, 0.07 s off it (0.31 s seen under a full suite on two cores).
    assert max(gaps) < 0.5, f"the event loop was blocked for {max(gaps):.2f} s"


def _attachment_folder(tmp_path: Path) -> Path:
    """A document's folder with one image in it, and a secret beside (outside) the folder."""
    from wxkf.simulator.samples import sample_png

    folder = tmp_path / "docs"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "size.png").write_bytes(sample_png(rgb=(10, 20, 30)))
    (tmp_path / "secret.txt").write_text("root:x:0:0\n", encoding="utf-8")
    (folder / "outside.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "good.md").write_text(FAQ, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "link",
    [
        "[账户表](/etc/passwd)",
        "[x](../../../../etc/passwd)",
        "[x](../secret.txt)",
        "[链接](outside.txt)",  # a symlink in the folder to a file outside it
        "[目录](images)",  # not a regular file
        "![保修卡](images/missing_card.png)",
    ],
)
async def test_a_link_to_anything_but_a_file_in_the_documents_folder_refuses_it(
    database: Database, tmp_path: Path, link: str
) -> None:
    from wxkf.media.storage import PostgresMediaStore

    folder = _attachment_folder(tmp_path)
    (folder / "bad.md").write_text(f"# 保修\n## 保修卡\n详见：{link}。\n", encoding="utf-8")
    kb = KnowledgeBase(database, HashingEmbedder(), media_store=PostgresMediaStore(database.pool))
    with pytest.raises(UnsupportedDocument) as refused:
        await kb.add_documents([folder / "good.md", folder / "bad.md"])
    target = link.split("](")[1].rstrip(")")
    assert target in str(refused.value)  # the link is named
    # Chinese first, with the document as it was given
    assert str(refused.value).startswith(f"文档 {folder / 'bad.md'} 中的链接")
    assert await kb.list_documents() == []  # nothing added, the good document neither
    assert await scalar(database, "SELECT count(*) FROM media_blobs") == 0


async def test_an_attachment_reaches_the_passage_but_not_its_text(database: Database, tmp_path: Path) -> None:
    from wxkf.media.storage import PostgresMediaStore
    from wxkf.simulator.samples import sample_png

    folder = _attachment_folder(tmp_path)
    doc = folder / "size.md"
    doc.write_text(
        "# 尺码\n## 尺码怎么选\n请对照尺码表选择：![尺码表](images/size.png)。\n", encoding="utf-8"
    )
    kb = KnowledgeBase(database, HashingEmbedder(), media_store=PostgresMediaStore(database.pool))
    [added] = await kb.add_documents([doc])
    assert added.status == "added"
    [passage] = await kb.search("尺码怎么选", k=1)
    assert passage.text == "请对照尺码表选择：【图片：尺码表】。"  # no path, no hash, no comment
    assert [kind for kind, _body in passage.attachments] == ["image"]
    # The attachment's bytes still count in the document's content: a new image is a new version.
    [again] = await kb.add_documents([doc])
    assert again.status == "unchanged"
    (folder / "images" / "size.png").write_bytes(sample_png(rgb=(200, 20, 30)))
    [changed] = await kb.add_documents([doc])
    assert changed.status == "updated"


async def test_every_unreadable_document_is_named_and_nothing_is_added(
    kb: KnowledgeBase, tmp_path: Path
) -> None:
    good = tmp_path / "faq.md"
    good.write_text(FAQ, encoding="utf-8")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    upload = store.SourceDocument.of("上传的.pdf", b"%PDF-1.4 not really", "pdf")  # a console upload
    with pytest.raises(UnsupportedDocument) as refused:
        await kb.add_documents([good, binary, upload])
    lines = str(refused.value).splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"无法识别文件 {binary} 的编码")
    assert lines[1].startswith("无法读取 PDF 上传的.pdf / cannot read the PDF")
    assert await kb.list_documents() == []
