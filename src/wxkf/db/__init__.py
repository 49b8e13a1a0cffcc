"""Storage: PostgreSQL (+ pgvector) everywhere, embedded by default; the process's pool; migrations."""
