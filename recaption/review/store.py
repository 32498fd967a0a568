"""Review decisions, saved at once and durably: an append-only SQLite table.

Every decision is a new row (nothing is updated in place), committed before the server
answers; a reviewer's current decision on a pair in a round is their latest row. Rows are
keyed by reviewer, so two people reviewing at once never overwrite each other, and a closed
browser or a restarted server resumes from what is on disk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ACTIONS = ("accept", "edit", "reject")
BUSY_SECONDS = 5


@dataclass(frozen=True)
class Decision:
    image_id: str
    reviewer: str
    round: int
    action: str  # accept | edit | reject
    caption_index: int | None  # the candidate accepted or edited
    text: str  # the caption as accepted or edited ("" for a reject)
    reason: str  # why a pair was rejected
    at: float


_INSERT = "INSERT INTO decision (image_id, reviewer, round, action, caption_index, text, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _decision(image_id: str, reviewer: str, round_: int, action: str, caption_index: int | None, text: str, reason: str) -> Decision:
    """A checked decision: known action, the text an accept or edit needs, the reason a reject needs."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}")
    if action in ("accept", "edit") and not text.strip():
        raise ValueError(f"an {action} needs the caption's text")
    if action == "reject" and not reason.strip():
        raise ValueError("a reject needs a reason")
    return Decision(image_id, reviewer, round_, action, caption_index, text.strip(), reason.strip(), time.time())


def _row(d: Decision) -> tuple:
    return (d.image_id, d.reviewer, d.round, d.action, d.caption_index, d.text, d.reason, d.at)


class DecisionStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # one connection, shared by the server's threads
        # A lock held elsewhere (another tool on the file) is waited for BUSY_SECONDS, then the
        # request is answered "busy, try again" instead of blocking every reviewer for a minute.
        self.db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a decision the page saw saved survives a power cut
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS decision (id INTEGER PRIMARY KEY AUTOINCREMENT, image_id TEXT NOT NULL, reviewer TEXT NOT NULL, "
            "round INTEGER NOT NULL, action TEXT NOT NULL, caption_index INTEGER, text TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)"
        )

    def add(self, image_id: str, reviewer: str, round_: int, action: str, caption_index: int | None = None, text: str = "", reason: str = "") -> Decision:
        decision = _decision(image_id, reviewer, round_, action, caption_index, text, reason)
        with self.lock:
            self.db.execute(_INSERT, _row(decision))
        return decision

    def add_many(self, round_: int, rows: list[tuple[str, str, str, int | None, str, str]]) -> list[Decision]:
        """(image_id, reviewer, action, caption_index, text, reason) rows, stored all or none."""
        decisions = [_decision(i, who, round_, action, index, text, reason) for i, who, action, index, text, reason in rows]
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(_INSERT, [_row(d) for d in decisions])
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return decisions

    def current(self, round_: int, reviewer: str | None = None) -> dict[tuple[str, str], Decision]:
        """(image_id, reviewer) -> that reviewer's latest decision in ``round_``."""
        query = "SELECT image_id, reviewer, round, action, caption_index, text, reason, at FROM decision WHERE round = ?"
        args: list = [round_]
        if reviewer is not None:
            query += " AND reviewer = ?"
            args.append(reviewer)
        with self.lock:
            rows = self.db.execute(query + " ORDER BY id", args).fetchall()
        return {(r[0], r[1]): Decision(*r) for r in rows}

    def close(self) -> None:
        with self.lock:
            self.db.close()
