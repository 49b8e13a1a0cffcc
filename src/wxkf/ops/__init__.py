"""Operations: structured logs, doctor, health, readiness and metrics."""
