"""The WeCom protocol layer: callback crypto, the async API client, errors. No database, no LLM."""
