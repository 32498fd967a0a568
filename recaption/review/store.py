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


class DecisionStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # one connection, shared by the server's threads
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a decision the page saw saved survives a power cut
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS decision (id INTEGER PRIMARY KEY AUTOINCREMENT, image_id TEXT NOT NULL, reviewer TEXT NOT NULL, "
            "round INTEGER NOT NULL, action TEXT NOT NULL, caption_index INTEGER, text TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)"
        )

    def add(self, image_id: str, reviewer: str, round_: int, action: str, caption_index: int | None = None, text: str = "", reason: str = "") -> Decision:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        if action in ("accept", "edit") and not text.strip():
            raise ValueError(f"an {action} needs the caption's text")
        if action == "reject" and not reason.strip():
            raise ValueError("a reject needs a reason")
        decision = Decision(image_id, reviewer, round_, action, caption_index, text.strip(), reason.strip(), time.time())
        with self.lock:
            self.db.execute(
                "INSERT INTO decision (image_id, reviewer, round, action, caption_index, text, reason, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (decision.image_id, decision.reviewer, decision.round, decision.action, decision.caption_index, decision.text, decision.reason, decision.at),
            )
        return decision

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
