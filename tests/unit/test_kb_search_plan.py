from __future__ import annotations

from wxkf.agent.kb.embedders import CorpusStats
from wxkf.agent.kb.store import LEXICAL_CANDIDATE_BUDGET, _candidate_terms


def test_rare_terms_choose_the_lexical_candidates_within_the_budget() -> None:
    stats = CorpusStats(
        n_chunks=100_000, df={"发票": 40, "抬头": 90, "开具": LEXICAL_CANDIDATE_BUDGET, "订单": 30_000}
    )
    terms = [(t, stats.idf(t)) for t in ("订单", "发票", "开具", "抬头")]
    assert _candidate_terms(terms, stats) == (["发票", "抬头"], [])


def test_when_every_term_is_common_chunks_must_hold_the_two_rarest() -> None:
    budget = LEXICAL_CANDIDATE_BUDGET
    stats = CorpusStats(n_chunks=100_000, df={"退款": budget * 20, "到账": budget * 7, "几天": budget * 2})
    terms = [(t, stats.idf(t)) for t in ("退款", "几天", "到账")]
    assert _candidate_terms(terms, stats) == ([], ["几天", "到账"])
