"""Alembic migrations of the profile store, driven from ``profiles.database``."""
