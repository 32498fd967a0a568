"""The folder a `recaption run` writes: the one module that knows its layout. Every reader and
writer of a run folder (the runners, `--overwrite`, the readers that take a run folder as input,
audit sampling, eval, the reference index) names its parts through ``RunFolder``::

    data/part-NNNNN.*        kept pairs, in the input's format unless asked otherwise
    rejects/part-NNNNN[.STAGE].jsonl   every rejected record with its stage and reason
    stats.json, report.html
    .recaption.lock          held by the run writing here, with who holds it inside
    _work/                   run.json (the settings; written last, it marks the plan complete),
                             plan.json, done/ markers, seg*/ intermediates and signatures,
                             decisions*/, the Ray runner's parts, a decision's task files

The run's bookkeeping files (settings, plan, markers, decisions) are written atomically
(``write_json``) and read with ``read_json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recaption.errors import RecaptionError, UsageError
from recaption.io.atomic import atomic_path, remove_stale_temporaries

DATA, REJECTS, WORK = "data", "rejects", "_work"
STATS, REPORT = "stats.json", "report.html"
SETTINGS, PLAN = "run.json", "plan.json"
LOCK_NAME = ".recaption.lock"
BOOKKEEPING = {REJECTS, WORK}  # a run's own folders, never input to a reader


class RunFolderError(RecaptionError):
    """OUTPUT cannot be used for this run; the message says why and what to do."""


def is_run_folder(path: str | Path) -> bool:
    """A `recaption run` output folder: its kept pairs are in ``data/``, its report beside."""
    p = Path(path)
    return p.is_dir() and (p / REPORT).exists() and (p / DATA).is_dir()


def kept_data(path: str | Path) -> Path:
    """What a reader reads of ``path``: a run folder's ``data/``, any other path as it is."""
    return Path(path) / DATA if is_run_folder(path) else Path(path)


def enclosing_run(path: Path) -> RunFolder | None:
    """The run folder ``path`` is, or whose ``data/`` it is (one with its stats written), or None."""
    for candidate in (path, path.parent):
        if (candidate / STATS).is_file() and (candidate / DATA).is_dir():
            return RunFolder(candidate)
    return None


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


class RunFolder:
    """The paths of one run folder, and what may be done to it as a whole (lock, overwrite)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / DATA
        self.rejects = root / REJECTS
        self.work = root / WORK
        self.settings = self.work / SETTINGS
        self.plan = self.work / PLAN
        self.stats = root / STATS
        self.report = root / REPORT
        self.lock = root / LOCK_NAME

    # -- the parts a run writes ---------------------------------------------------------------

    def done(self, seg: int, shard: str) -> Path:
        return self.work / "done" / f"seg{seg}-{shard}.json"

    def intermediate(self, seg: int) -> Path:
        return self.work / f"seg{seg}"

    def signatures(self, seg: int, shard: str) -> Path:
        return self.work / f"seg{seg}" / f"{shard}.signatures.jsonl"

    def decisions(self, seg: int, shard: str) -> Path:
        return self.work / f"decisions{seg}" / f"{shard}.json"

    def decided(self, seg: int) -> Path:
        return self.work / f"decisions{seg}" / "_DONE"

    def decision_work(self, seg: int) -> Path:
        """A folder of its own for a decision made in tasks (removed by the decision)."""
        return self.work / f"sharded{seg}"

    def rejects_file(self, shard: str, entry: str | None) -> Path:
        """A shard's rejects of the segment opened by the global stage ``entry`` (None: the first)."""
        return self.rejects / (f"{shard}.jsonl" if entry is None else f"{shard}.{entry}.jsonl")

    def executor_parts(self, executor: str, seg: int | None = None) -> Path:
        """Where an executor keeps what it writes between its stages and the sink (the Ray runner's parts)."""
        folder = self.work / executor
        return folder if seg is None else folder / f"seg{seg}"

    def discard(self, part: Path) -> None:
        """Remove a part of this run (a folder or file inside it) that nothing needs any more."""
        if self.root not in part.parents:
            raise ValueError(f"{part} is not inside the run folder {self.root}")
        if part.is_dir():
            shutil.rmtree(part, ignore_errors=True)
        else:
            part.unlink(missing_ok=True)

    def remove_unfinished(self) -> int:
        """Remove the temporaries an interrupted run left (files never renamed into place); how many."""
        return remove_stale_temporaries(self.root)

    # -- the folder as a whole ----------------------------------------------------------------

    def holds_run(self) -> bool:
        """A run's settings are here: the folder may be resumed or overwritten."""
        return self.settings.exists()

    def refuse_a_file(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise RunFolderError(f"{self.root} is a file; OUTPUT must be a folder (new or from an earlier run)")

    def refuse_overwrite_of_other_data(self) -> None:
        """``--overwrite`` deletes only a folder that holds a recaption run."""
        if self.root.exists() and not self.holds_run():
            raise UsageError(f"--overwrite refuses to delete {self.root}: it holds no recaption run")

    def clear(self) -> None:
        """Everything but the lock (held by the caller: ``locked``)."""
        for child in self.root.iterdir():
            if child.name != LOCK_NAME:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def leftovers(self) -> set[str]:
        """What the folder holds besides its lock."""
        return {p.name for p in self.root.iterdir()} - {LOCK_NAME} if self.root.exists() else set()

    def only_unplanned_work(self) -> bool:
        """Only ``_work/`` is here: a run stopped before its plan was saved (run.json is written
        last), so nothing of it can be resumed."""
        return self.leftovers() == {WORK}

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder for one run at a time: a second run on it (or an --overwrite of it) is
        told who holds it, instead of deleting the first run's temporaries from under it."""
        self.refuse_a_file()
        root = self.root
        created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunFolderError(f"cannot write to {root}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 300, 0).decode("utf-8", "replace").strip() or "another process"
                raise RunFolderError(f"{root} is in use by another recaption run ({holder}); wait for it to end or choose another OUTPUT") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
            yield
        finally:
            # A run refused before it wrote anything leaves no folder behind.
            if created and not self.leftovers():
                shutil.rmtree(root, ignore_errors=True)
            os.close(fd)  # closing releases the lock; the file stays (removing it would race a waiting run)
