"""What a global stage and the shards exchange, as files: each kept record's signature goes out,
filed under its record key; each record's ``Decision`` comes back.

A record key is ``"SHARD:POSITION"``: the shard's index and the record's position among the
shard's kept records, which the next segment reads in the same order. ``order_of`` makes it one
integer that sorts in input order (the dedup arrays hold that); ``key_of`` turns it back.

The runners write the signatures (``write_signatures``) and the decisions
(``write_decisions``) and read them back; the dedup library reads signatures files in its
tasks. None of them spells the key or the files' shape itself.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recaption.io.jsonl import write_jsonl
from recaption.io.run_folder import read_json, write_json

POSITION_BITS = 32  # a shard holds fewer records than this; the shard index takes the bits above


def record_key(shard_index: int, position: int) -> str:
    """The key a global stage files a record's signature and decision under."""
    return f"{shard_index}:{position}"


def order_of(key: str) -> int:
    """A record key as one integer that sorts in input order."""
    shard, pos = key.split(":", 1)
    return (int(shard) << POSITION_BITS) | int(pos)


def key_of(order: int) -> str:
    return record_key(order >> POSITION_BITS, order & ((1 << POSITION_BITS) - 1))


def shard_of(key: str) -> int:
    return int(key.split(":", 1)[0])


def write_signatures(path: Path, rows: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """A shard's (record key, signature) rows, in input order, one JSON line each."""
    write_jsonl(path, ([key, sig] for key, sig in rows))  # type: ignore[misc]


def read_signatures(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A shard's (record key, signature) pairs, in input order, as ``write_signatures`` wrote them."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            key, sig = json.loads(line)
            yield key, sig


@dataclass(slots=True)
class Decision:
    """What a global stage decided for one record: reject it, and/or add scores or meta."""

    reject: tuple[str, str] | None = None  # (reason, detail)
    scores: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # For the report only, never written with the record: the record is shown in a group the
    # stage names (a duplicate cluster: {"cluster", "role", "rule", "distance"}).
    show: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        """The fields that say something, as the decisions file holds them."""
        every = {"reject": self.reject, "scores": self.scores, "meta": self.meta, "show": self.show}
        return {k: v for k, v in every.items() if v}


class Decisions(Mapping[str, Decision], ABC):
    """A global stage's decisions by record key, handed to the driver shard by shard
    (``for_shard``): it writes one shard's file at a time, so the whole run's decisions need
    never be held as objects. Read as a mapping, they are made when asked."""

    @abstractmethod
    def for_shard(self, shard_index: int) -> dict[str, Decision]:
        """The decisions (by record key) for the records of one shard; each shard is asked once."""


class DecisionsByKey(Decisions):
    """Decisions made as one dict of record key to ``Decision``: filed by shard as they are
    taken from it, so that the two never both hold everything."""

    def __init__(self, decisions: dict[str, Decision]) -> None:
        self.by_shard: dict[int, dict[str, Decision]] = {}
        while decisions:
            key, decision = decisions.popitem()
            self.by_shard.setdefault(shard_of(key), {})[key] = decision

    def for_shard(self, shard_index: int) -> dict[str, Decision]:
        return self.by_shard.pop(shard_index, {})

    def __getitem__(self, key: str) -> Decision:
        return self.by_shard.get(shard_of(key), {})[key]

    def __iter__(self) -> Iterator[str]:
        return (key for shard in self.by_shard.values() for key in shard)

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.by_shard.values())


def write_decisions(path: Path, decisions: dict[str, Decision]) -> None:
    write_json(path, {k: d.fields() for k, d in decisions.items()})


def read_decisions(path: Path) -> dict[str, Decision]:
    return {k: Decision(**d) for k, d in read_json(path).items()}
