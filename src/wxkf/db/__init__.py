"""Storage: PostgreSQL (+ pgvector) everywhere, embedded by default; migrations; the ORM base."""
