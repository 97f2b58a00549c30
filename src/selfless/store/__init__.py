"""Metadata stores: the protocol (base.py) and the embedded SQLite implementation (sqlite.py)."""
