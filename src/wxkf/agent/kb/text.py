"""Terms of Chinese-and-Latin text, shared by the hashing embedder and the lexical index.

Chinese has no spaces, so a text's terms are its CJK characters (unigrams) and adjacent pairs
(bigrams) — bigrams carry most of the meaning (退货, 运费, 发票) — plus Latin words and numbers,
lowercased. Function words that every question contains (的, 吗, 怎么, 请问 …) are dropped so they
neither match unrelated passages nor dilute the real terms.

Customers and FAQ writers name the same thing differently (实体店 / 门店, 专票 / 增值税专用发票). A small
list of general Chinese e-commerce customer-service synonyms (`SYNONYMS`, written from general
knowledge of the domain, not from any evaluation set) maps each variant to a concept term ("≈门店")
that is added to the text's terms, on both the passage and the question side, so the two meet.
"""

from __future__ import annotations

import re
from collections import Counter

_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[A-Za-z0-9]+(?:[.'][A-Za-z0-9]+)*")
_CJK_START = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def is_cjk(term: str) -> bool:
    return bool(_CJK_START.match(term))


def is_cjk_text(term: str) -> bool:
    return all(_CJK_START.match(ch) for ch in term)


_STOPWORDS = """
的 了 吗 呢 吧 啊 呀 嘛 哦 么 是 我 你 您 他 她 它 们 在 这 那 个 和 与 及 或 就 都 也 又 还 着 把 被 让 给 得 地
怎么 怎样 怎么样 怎么办 咋办 什么 如何 为何 为什么 哪里 哪些 请问 一下 可以 能否 是否 是不是 可不可以 能不能
我们 你们 我的 你的 您的 一个 这个 那个 这样 那样 有没 没有 还是 需要 想要 现在 时候 的话
a an the is are was be to of and or in on for it i you we my your do does how what can
"""
# Particles, pronouns and question scaffolding: every question has them, no answer is about them.
STOPWORDS = frozenset(_STOPWORDS.split())

# Question scaffolding and particles cut a CJK run in two, so no bigram bridges them ("店可" in
# 实体店可以去吗 is noise); the pieces on either side keep their own bigrams.
_BREAKS = sorted(
    (w for w in STOPWORDS if is_cjk_text(w) and (len(w) > 1 or w in "的吗呢吧啊呀嘛哦")), key=len
)
_BREAK = re.compile("|".join(re.escape(w) for w in reversed(_BREAKS)))


def _runs(text: str) -> list[str]:
    """CJK runs (cut at scaffolding) and Latin words of `text`."""
    runs: list[str] = []
    for match in _RUN.finditer(text):
        run = match.group()
        if is_cjk(run):
            runs.extend(piece for piece in _BREAK.split(run) if piece)
        else:
            runs.append(run)
    return runs


# Each line: the concept's name, then its variants. General online-shop customer-service vocabulary;
# documented in benchmarks/README.md. Changing it changes every passage's terms (bump TERMS_VERSION).
_SYNONYMS = """
付款 支付 付钱 付费 结账 买单 扣款 扣钱
退款 退钱 钱退回 退回的钱 返款
取消 撤销 撤单 不想要了 不要了
运费 邮费 快递费 配送费 寄费
包邮 免运费 免邮
发货 发出 寄出 出库
地址 收货地址 收件地址 寄送地址
门店 实体店 线下店 专卖店 店里 体验店
发票 开票 专票 普票
专用发票 专票 增值税专票
优惠 折扣 打折 减价 便宜
优惠券 券 代金券 满减
大促 促销 双十一 双11 618 年货节
缺货 断货 没货 无货 售罄 补货
尺码 码数 尺码表 穿什么码 大一码 小一码
定制 定做 订做 订制
注销 销户 删除账号 删除账户 注销账户
账号 账户 帐号
破损 坏了 碎了 摔坏 磕坏 损坏 压坏
正品 真货 假货 真品 行货
人工客服 人工 真人
会员 VIP
团购 批量 采购 集采 大量购买
换货 调换 换一个 换个
保修 质保 保固 维修
安装 组装 装好
床品 四件套 床单 被套 枕套
到账 到卡 回到卡
价保 价格保护 补差价 退差价
"""
# variant → concept term; a variant may belong to more than one concept (专票).
SYNONYMS: dict[str, tuple[str, ...]] = {}
for _line in _SYNONYMS.strip().splitlines():
    _concept, *_variants = _line.split()
    for _variant in (_concept, *_variants):
        SYNONYMS[_variant.lower()] = (*SYNONYMS.get(_variant.lower(), ()), "≈" + _concept)
_VARIANT = re.compile("|".join(re.escape(v) for v in sorted(SYNONYMS, key=len, reverse=True)), re.IGNORECASE)
TERMS_VERSION = "terms-2"  # bump when terms change: stored passages are re-termed


def concepts(text: str) -> list[str]:
    """The synonym concepts `text` mentions, once per mention."""
    return [c for m in _VARIANT.finditer(text) for c in SYNONYMS[m.group().lower()]]


def term_counts(text: str) -> Counter[str]:
    """Every term of `text` with its count: CJK unigrams and bigrams, Latin words, concepts; no stopwords."""
    counts: Counter[str] = Counter()
    for run in _runs(text):
        if is_cjk(run):
            counts.update(run)
            counts.update(run[i : i + 2] for i in range(len(run) - 1))
        else:
            counts[run.lower()] += 1
    counts.update(concepts(text))
    for stop in STOPWORDS.intersection(counts):
        del counts[stop]
    return counts


def lexical_terms(text: str) -> list[str]:
    """The terms the lexical index matches on: bigrams and words, and characters standing alone.

    CJK unigrams inside longer runs are left to the vector half: on their own they match nearly
    every passage.
    """
    terms: dict[str, None] = {}
    for run in _runs(text):
        if not is_cjk(run):
            terms[run.lower()] = None
        elif len(run) == 1:
            terms[run] = None
        else:
            for i in range(len(run) - 1):
                terms[run[i : i + 2]] = None
    terms.update(dict.fromkeys(concepts(text)))
    return [t for t in terms if t not in STOPWORDS]
