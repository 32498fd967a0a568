"""The run itself, whichever executor runs its shards: prepare (or resume) the run, the segment
loop with its progress bar and interrupts, the decision between segments at a global stage, and
finish (stats, report).

An ``Executor`` only runs a segment's (segment, shard) tasks (``runners.local``: this process
or a pool of worker processes; ``runners.ray_data``: Ray Data pipelines), each through a
``ShardSink`` that writes the shard's files and done marker; a new executor is one module that
implements the three methods below. A global stage's decision is made here, from the
signatures the shards wrote: streamed into the stage's ``decide`` in this process (it keeps
only what it needs of each), or, where the runner gives the driver a task pool (``tasks``),
through the stage's ``decide_in_tasks`` (dedup runs its map and reduce as tasks, this process
keeping only what is duplicated). Either way the decisions are written shard by shard.
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from recaption.io import default_output_format, open_reader
from recaption.io.base import InputShard
from recaption.io.run_folder import RunFolder, read_json, write_json
from recaption.io.signatures import read_signatures, write_decisions
from recaption.report.html import write_report
from recaption.report.sample import SampleMerger
from recaption.runners.shards import RunConfig, RunError, RunInterrupted, Segment, cut_segments, describe, output_writer
from recaption.stages.base import StageCounters, StageError

if TYPE_CHECKING:
    from recaption.dedup.sharded import TaskPool

RESUME_MAY_CHANGE = ("stop_after_failures",)  # settings a resumed run takes from its own command


@dataclass
class RunContext:
    """What an executor is given when a run starts."""

    config: RunConfig
    settings: dict[str, Any]  # the run's saved settings (what its workers build their recipe and reader from)
    layout: RunFolder
    n_shards: int
    show_progress: bool


class Executor(ABC):
    """Runs the (segment, shard) tasks of a run somewhere. Each task reads its records
    (``shards.read_segment_source``), runs the segment's stages and puts every record into a
    ``shards.ShardSink``, whose ``finish`` writes the done marker; the driver does the rest."""

    name = "executor"

    def start(self, run: RunContext) -> TaskPool | None:
        """Get ready (start workers, join a cluster); return a task pool for a global stage's
        decision (``GlobalStage.decide_in_tasks``), or None to decide in this process."""
        return None

    @abstractmethod
    def run_segment(self, seg: Segment, todo: list[InputShard], progress: Callable[[int], None]) -> None:
        """Run ``seg`` on the shards ``todo`` (those without a done marker), calling ``progress``
        with the number of records each time some are done; return once every one has its marker."""

    def stop(self, failed: bool) -> None:
        """Release what ``start`` took; ``failed``: the run is stopping on an error or Ctrl-C,
        so work in flight is abandoned (its shards are redone on resume)."""

    def finished(self, keep_work: bool) -> None:
        """The run's stats and report are written: remove what only this executor needed."""


class RunDriver:
    def __init__(self, config: RunConfig, executor: Executor, show_progress: bool = True) -> None:
        self.config = config
        self.executor = executor
        self.layout = RunFolder(Path(config.output))
        self.show_progress = show_progress
        self.tasks: TaskPool | None = None  # the executor's task pool, for decisions made in tasks

    def run(self) -> dict[str, Any]:
        """The whole run (or what an interrupted one left); returns its stats."""
        settings, plan = self.prepare()
        segments = cut_segments(self.config.recipe.build())
        failed = True
        try:
            self.tasks = self.executor.start(RunContext(self.config, settings, self.layout, len(plan), self.show_progress))
            for seg in segments:
                if seg.entry is not None:
                    self.decide(seg, plan)
                self._run_segment(seg, segments, plan)
            failed = False
        except KeyboardInterrupt:
            raise RunInterrupted(f"interrupted. Finished shards are kept; run the same command again to resume ({self.layout.root}).") from None
        except StageError as exc:
            raise RunError(str(exc)) from None
        finally:
            self.executor.stop(failed)
        try:
            stats = self.finish(settings, plan, segments)
        except KeyboardInterrupt:
            raise RunInterrupted(f"interrupted while writing the report; run the same command again to finish ({self.layout.root}).") from None
        self.executor.finished(self.config.keep_work)
        return stats

    def _run_segment(self, seg: Segment, segments: list[Segment], plan: list[InputShard]) -> None:
        todo = [s for s in plan if not self.layout.done(seg.index, s.name).exists()]
        if not todo:
            return
        if seg.index > 0:
            total = sum(read_json(self.layout.done(seg.index - 1, s.name))["kept"] for s in todo)
        else:  # known up front for line, row and file lists; a tar's count is not (no ETA then)
            sizes = [s.spec.get("records") for s in todo]
            total = None if None in sizes else sum(sizes)
        bar = tqdm(total=total, desc=describe(seg, segments), unit="pair", disable=not self.show_progress, dynamic_ncols=True)
        try:
            self.executor.run_segment(seg, todo, bar.update)
        finally:
            bar.close()
        missing = [s.name for s in todo if not self.layout.done(seg.index, s.name).exists()]
        if missing:
            raise RunError(f"the {self.executor.name} executor finished segment {seg.index + 1} without shards {', '.join(missing[:5])}; please report this")

    def prepare(self) -> tuple[dict[str, Any], list[InputShard]]:
        settings = self.config.settings()
        layout = self.layout
        if layout.settings.exists():
            saved = read_json(layout.settings)
            changed = sorted(k for k in settings if saved.get(k) != settings[k] and k not in RESUME_MAY_CHANGE)
            if changed:
                raise RunError(
                    f"{layout.root} already holds a run with other settings ({', '.join(changed)} differ). "
                    "Re-run with the same command to resume, choose a new OUTPUT, or pass --overwrite."
                )
            saved.update({k: settings[k] for k in RESUME_MAY_CHANGE})
            plan = [InputShard(**s) for s in read_json(layout.plan)]
            removed = layout.remove_unfinished()
            if removed and self.show_progress:
                print(f"resuming: removed {removed} unfinished file(s) of the interrupted run", file=sys.stderr)
            return saved, plan
        layout.refuse_a_file()
        if layout.only_unplanned_work():  # nothing of a run stopped before its plan was saved is worth keeping
            layout.discard(layout.work)
        elif layout.leftovers():
            raise RunError(f"{layout.root} exists and is not empty, and holds no recaption run; choose a new OUTPUT")
        reader = open_reader(self.config.input, self.config.input_format, self.config.reader)
        plan = reader.plan()
        settings["resolved_input_format"] = reader.format
        settings["image_roots"] = reader.tree.to_list()  # where this run's untouched images live: a reader of its output trusts them
        settings["resolved_output_format"] = settings["output_format"] or default_output_format(reader)
        output_writer(settings, layout)  # an output option the format cannot honour stops the run here
        layout.work.mkdir(parents=True, exist_ok=True)
        write_json(layout.plan, [s.to_dict() for s in plan])
        write_json(layout.settings, settings)  # written last: it marks the plan as complete
        return settings, plan

    def decide(self, seg: Segment, plan: list[InputShard]) -> None:
        assert seg.entry is not None
        if self.layout.decided(seg.index).exists():
            return
        start = time.perf_counter()
        counted = [0]

        def signatures() -> Any:  # streamed: the stage keeps only what it needs of each
            for shard in plan:
                for item in read_signatures(self.layout.signatures(seg.index - 1, shard.name)):
                    counted[0] += 1
                    yield item

        if self.tasks is not None:
            counted[0] = sum(read_json(self.layout.done(seg.index - 1, s.name))["kept"] for s in plan)
            shards = [(s.index, str(self.layout.signatures(seg.index - 1, s.name))) for s in plan]
            decisions = seg.entry.decide_in_tasks(self.tasks, shards, str(self.layout.decision_work(seg.index)), counted[0])
        else:
            decisions = seg.entry.decide(signatures())
        for shard in plan:
            write_decisions(self.layout.decisions(seg.index, shard.name), decisions.for_shard(shard.index))
        write_json(self.layout.decided(seg.index), {
            "records": counted[0], "seconds": time.perf_counter() - start,
            "metrics": seg.entry.take_metrics(), "findings": seg.entry.findings,
        })

    def finish(self, settings: dict[str, Any], plan: list[InputShard], segments: list[Segment]) -> dict[str, Any]:
        report = self.config.recipe.report
        # The done markers are read one at a time and folded in: the end of a run holds one
        # marker and the totals, whatever the number of shards.
        merger = SampleMerger(report.get("gallery", 48), report.get("examples_per_reason", 3))
        rejects_by_reason: Counter[str] = Counter()
        stage_totals: dict[str, StageCounters] = {}
        last = len(segments) - 1
        n_in = n_out = 0
        shard_seconds = 0.0
        for seg in segments:
            for s in plan:
                m = read_json(self.layout.done(seg.index, s.name))
                rejects_by_reason.update(m["rejected"])
                for name, counts in m["stages"].items():
                    stage_totals.setdefault(name, StageCounters()).add(counts)
                n_in += m["input"]
                n_out += m["kept"] if m["segment"] == last else 0
                shard_seconds += m["seconds"]
                merger.add(m["report"])
        n_rej = sum(rejects_by_reason.values())
        decide_seconds: dict[str, float] = {}
        findings: dict[str, Any] = {}
        for seg in segments:
            if seg.entry is not None:
                decided = read_json(self.layout.decided(seg.index))
                name = seg.entry.name
                decide_seconds[name] = decided["seconds"]
                stage_totals[name].seconds += decided["seconds"]
                stage_totals[name].metrics.update(decided.get("metrics", {}))
                if decided.get("findings"):
                    findings[name] = decided["findings"]
        stats = {
            "input": n_in,
            "output": n_out,
            "rejected": n_rej,
            "rejects_by_reason": dict(sorted(rejects_by_reason.items())),
            "stages": {name: c.to_dict() for name, c in stage_totals.items()},
            "shards": len(plan),
            "seconds": shard_seconds + sum(decide_seconds.values()),
            "recipe": settings["recipe"]["name"],
            "input_path": settings["input"],
            "image_roots": settings.get("image_roots", []),
            "input_format": settings["resolved_input_format"],
            "output_format": settings["resolved_output_format"],
        }
        if findings:
            stats["findings"] = findings
        if n_in != n_out + n_rej:
            raise RunError(f"accounting does not add up: {n_in} read, {n_out} written + {n_rej} rejected; please report this")
        stats["output_notes"] = output_writer(settings, self.layout).finish_dataset()
        write_json(self.layout.stats, stats)
        sample = merger.result()
        write_report(self.layout.report, stats, sample, settings)
        if not self.config.keep_work:
            for seg in segments[:-1]:
                self.layout.discard(self.layout.intermediate(seg.index))
        return stats


# What a user most likely got wrong when every record fails the same way.
_LIKELY_CAUSE = {
    "image_check/missing_file": "images missing: is --image-root right (image paths are relative to the JSONL's folder)?",
    "image_check/no_image": "records name no image: is --image-field right?",
    "image_check/not_downloaded": "images are URLs: download them first (img2dataset)",
    "read/missing_field": "a field is missing: are --text-field / --id-field / --image-field right?",
    "clean_text/no_text": "records hold no text: is --text-field right?",
    "read/malformed_json": "lines are not JSON: is --format right?",
}


def why_nothing_kept(stats: dict[str, Any]) -> str:
    """One line on why a run kept nothing, naming the likely cause when one reason dominates."""
    if not stats["input"]:
        return f"nothing kept: the input {stats.get('input_path', '')} holds no records"
    reasons = sorted(stats["rejects_by_reason"].items(), key=lambda kv: -kv[1])
    top, n = reasons[0]
    share = "all" if n == stats["input"] else f"{n} of"
    cause = _LIKELY_CAUSE.get(top)
    if cause:
        return f"nothing kept: {share} {stats['input']} pairs rejected as {top}; {cause}"
    return f"nothing kept: {share} {stats['input']} pairs rejected as {top}; see the rejects/ folder and report.html"
