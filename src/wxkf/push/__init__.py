"""Push notifications: a customer's intents matched against the company's profiles, pushed within WeCom's window.

    intents, profiles        models.py (validated records), conditions.py (what a profile must meet)
    matching                 matching.py (jobs: candidates by vector and keyword, scored), scoring.py,
                             rerank.py (the LLM's JSON verdict), vectors.py (embedder identity, HNSW)
    eligibility, sending     eligibility.py (the decision table), delivery.py (one transaction with the
                             conversation's budget, through the outbox), quiet.py (quiet hours by time zone)
    messages, replies        templates.py (placeholders checked on save, cards), replies.py (查看1, 退订 …)
    history, schedules       store.py (the tables in SQL), service.py (the jobs: tick, digest, spread)
    surfaces                 service.py (`PushService`), cli.py (`wxkf push …`), tools.py (agent tools),
                             importing.py (CSV / JSON Lines), extraction.py (a profile from free text)

docs/push.md describes the model, the rules and each reason a push was not sent.
"""
