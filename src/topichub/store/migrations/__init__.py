"""Versioned schema migrations (Alembic), run on every start by :mod:`topichub.store.sql`."""
