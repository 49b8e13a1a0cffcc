"""The conversation pipeline: callback → sync → ledger → state policy → budget → responder → outbox."""
