"""Persistence: one Store interface, implemented with SQLAlchemy (SQLite or PostgreSQL)."""
