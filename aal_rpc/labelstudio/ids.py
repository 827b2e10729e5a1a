"""Ids of Label Studio's tasks, annotations, projects and webhooks, as the bridge takes them from Label Studio, from
a webhook or from its own state file: each goes into SQLite, whose INTEGER is 64 bits, so anything else names
nothing of the bridge's. No Label Studio SDK here: the command's options use it too."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # the largest id the state file (SQLite's INTEGER) can hold


def valid_id(value) -> int | None:
    """`value` as an id: a positive int that fits SQLite's int64; None for anything else (a bool, a numeric
    string, 0, 2**63)."""
    return value if type(value) is int and 0 < value <= MAX_ID else None


def stored_id(text: str | None) -> int | None:
    """An id the state file holds as text (meta), or None when there is none or it is no valid id."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    return valid_id(int(text))
