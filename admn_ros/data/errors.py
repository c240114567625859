"""Errors raised for bad recordings and bags."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A recording or bag is unreadable or does not match the expected layout.

    The message names the file, the timestamp (when one applies) and what was wrong.
    """

    def __init__(self, path: str | Path, what: str, stamp: int | str | None = None) -> None:
        self.path = str(path)
        self.stamp = stamp
        self.what = what
        where = f"{self.path}" if stamp is None else f"{self.path} at t={stamp}"
        super().__init__(f"{where}: {what}")
