"""The stage contract.

A stage takes a batch of Pairs and returns it with captions, scores or rejects filled in.
The base class owns everything that is the same for every stage: it skips records that an
earlier stage rejected, isolates a record that makes it fail, times itself, and checks its
declared needs (packages, GPU) when it is built, not half way through a job. What it saw,
kept and rejected is counted from the records themselves, once per shard, by the runner.
A subclass only answers its own question.

Two kinds of stage:

- ``Stage``: looks at one batch at a time. ``Filter`` is the thin version that only
  answers "keep?" and "why not".
- ``GlobalStage``: needs to see the whole dataset before it can decide (dedup). The runner
  collects a small ``signature`` of every record, calls ``decide`` once (or, where it has a
  task pool, ``decide_in_tasks``), and then applies the decisions batch by batch.
"""

from __future__ import annotations

import importlib.util
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from recaption.errors import RecaptionError
from recaption.io.signatures import Decision, Decisions, read_signatures
from recaption.record import Pair

if TYPE_CHECKING:
    from recaption.dedup.sharded import TaskPool

STAGES: dict[str, type[Stage]] = {}
# Any stage that writes captions: what the caption checks and scorers read.
CAPTION_FACTS = ("captions:alt-text", "captions:rules", "captions:vlm", "captions:altogether")


class StageError(RecaptionError):
    """A stage cannot be built or run as configured; the message says what to do."""


DEFAULT_STOP_AFTER_FAILURES = 8


class SystematicFailure(StageError):
    """A stage failed on every record it has tried, the same way: the cause is the setup, not the data."""


@dataclass(frozen=True)
class Needs:
    # module name -> pip requirement that provides it
    packages: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    memory_gb: float = 0.0


@dataclass(frozen=True)
class Resources:
    """What one copy of a stage takes where it runs, after NeMo Curator's ``Resources``: CPUs,
    GPUs (taken where the cluster has them: on one without, the stage runs on the CPU), memory,
    and whether it holds a model costly to load (the Ray executor gives such stages actor pools,
    so the model loads once per actor). A recipe's ``ray:`` section overrides them. ``Needs``,
    by contrast, is what a stage cannot run without."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 0.0
    loads_model: bool = False


# A model stage: it holds a network, and it decodes the images the image check let through.
MODEL_ON_CPU = Resources(loads_model=True)
MODEL_ON_GPU = Resources(gpus=1, loads_model=True)
CHECKED_IMAGES = ("image:checked",)  # the requires group of a stage that decodes images


def model_on(device: str) -> Resources:
    """A model stage's resources for its ``device`` argument: a GPU unless told the CPU."""
    return MODEL_ON_CPU if device == "cpu" else MODEL_ON_GPU

# Facts a record may bring from its input rather than from a stage: human captions come from a
# review round's export (``recaption audit export``), never from a stage of a recipe.
INPUT_FACTS = ("captions:human",)

# What every stage that runs a Hugging Face model needs (CLIP scorers, captioners).
HF_MODEL_NEEDS = Needs(packages={"torch": "torch==2.13.0", "transformers": "transformers>=4.45"})


def available_memory_gb() -> float | None:
    """Memory the kernel says is available now, or None where it does not say (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def register(cls: type[Stage]) -> type[Stage]:
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no stage name")
    STAGES[cls.name] = cls
    return cls


@dataclass
class StageCounters:
    """One stage's counts, as the done markers hold them and the run's stats add them up."""

    seen: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    metrics: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        out = {"seen": self.seen, "kept": self.kept, "rejected": dict(self.rejected), "seconds": self.seconds}
        if self.metrics:
            out["metrics"] = dict(self.metrics)
        return out

    def add(self, other: dict[str, Any]) -> None:
        self.seen += other["seen"]
        self.kept += other["kept"]
        self.rejected.update(other["rejected"])
        self.seconds += other["seconds"]
        self.metrics.update(other.get("metrics", {}))


class Stage(ABC):
    name: ClassVar[str] = ""
    needs: ClassVar[Needs] = Needs()
    batch_size: ClassVar[int] = 64
    # Where it runs: CPUs, GPUs, memory, whether it holds a model (``wants`` where it depends
    # on the stage's arguments).
    resources: ClassVar[Resources] = Resources()
    # What the stage writes and reads, as facts ("score:nsfw", "captions:alt-text", "tags:ocr"),
    # so that the recipe check refuses a stage placed before the one that makes what it reads.
    # Each group of ``requires`` is met by any one of its facts.
    provides: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def __init__(self) -> None:
        # Only time is kept here: what a stage saw, kept and rejected follows from where each
        # record ended, and is counted once, per shard (runners.shards.ShardCounts).
        self.seconds = 0.0
        self.metrics: Counter[str] = Counter()  # what the stage counts of its own (``stat``)
        self._ready = False
        self.stop_after_failures = DEFAULT_STOP_AFTER_FAILURES  # the recipe sets its own
        self._succeeded = False  # has any record ever passed through without an error?
        self._streak: tuple[str, int] = ("", 0)  # the same error, how many records in a row
        self.check_needs()

    # -- hooks for subclasses ------------------------------------------------------------
    def setup(self) -> None:
        """Load models or tables. Runs once per worker process, before the first batch."""

    @abstractmethod
    def process(self, batch: list[Pair]) -> None:
        """Fill in captions / scores, or call ``pair.reject_with(self.name, ...)``."""

    def wants(self) -> Resources:
        """The resources this stage, as configured, takes (``resources`` unless they depend on
        arguments: a captioner that calls a server needs no GPU)."""
        return self.resources

    @property
    def loads_model(self) -> bool:
        return self.wants().loads_model

    def facts_made(self) -> set[str]:
        """What this stage, as configured, writes (``provides`` unless it depends on arguments)."""
        return set(self.provides)

    def facts_needed(self) -> list[set[str]]:
        """What it reads, as groups of which any one fact will do."""
        return [set(group) for group in self.requires]

    # -- the part every stage shares ------------------------------------------------------
    def check_needs(self) -> None:
        missing = [req for mod, req in self.needs.packages.items() if importlib.util.find_spec(mod) is None]
        if missing:
            raise StageError(f"stage '{self.name}' needs {', '.join(missing)}: pip install {' '.join(missing)}")
        if self.needs.memory_gb:
            available = available_memory_gb()
            if available is not None and available < self.needs.memory_gb:
                raise StageError(f"stage '{self.name}' needs {self.needs.memory_gb:.1f} GB of memory; {available:.1f} GB is available")
        if self.needs.gpu:
            try:
                import torch  # noqa: PLC0415 - only stages that ask for a GPU pay for importing torch
            except ImportError as exc:
                raise StageError(f"stage '{self.name}' needs a GPU and PyTorch is not installed") from exc
            if not torch.cuda.is_available():
                raise StageError(f"stage '{self.name}' needs a GPU and none is visible (CUDA unavailable)")

    def __call__(self, batch: list[Pair]) -> list[Pair]:
        """Run the stage over ``batch``, in runs of its own ``batch_size`` (whatever size of
        batch the runner reads in, a model sees the batches it was tuned for)."""
        for start in range(0, len(batch), self.batch_size):
            self._run(batch[start : start + self.batch_size], self.process)
        return batch

    def prepare(self) -> None:
        """Set the stage up once (``setup``), before its first batch or when its host sets up."""
        if not self._ready:
            self.setup()
            self._ready = True

    def run_for(self, host: Stage, batch: list[Pair]) -> None:
        """Run this stage inside ``host`` (a caption writer runs the sensitive check on what it
        wrote): a record that makes it fail is isolated here and rejected as ``host``'s, and what
        it counts of its own (``stat``) is added to ``host``'s."""
        for start in range(0, len(batch), self.batch_size):
            self._run(batch[start : start + self.batch_size], self.process, rejected_as=host.name)
        for name, value in self.take_metrics().items():
            host.stat(name, value)

    def _run(self, batch: list[Pair], work: Callable[[list[Pair]], None], rejected_as: str | None = None) -> list[Pair]:
        self.prepare()
        live = [p for p in batch if p.reject is None]
        start = time.perf_counter()
        if live:
            # Cheap shallow snapshot so that a failed batch can be retried from a clean state.
            saved = [(list(p.captions), dict(p.scores), dict(p.meta), p.image, p.image_ext) for p in live]
            try:
                work(live)
                self._succeeded = True
            except SystematicFailure:
                raise  # the stage's setup or service, not a record: nothing to isolate
            except Exception:  # noqa: BLE001 - isolate the record that broke the stage, keep the rest
                for pair, (captions, scores, meta, image, ext) in zip(live, saved):
                    pair.captions, pair.scores, pair.meta, pair.image, pair.image_ext = captions, scores, meta, image, ext
                    pair.reject = None
                self._isolate_failure(live, work, rejected_as or self.name)
        self.seconds += time.perf_counter() - start
        return batch

    def _isolate_failure(self, live: list[Pair], work: Callable[[list[Pair]], None], rejected_as: str) -> None:
        """Re-run a failed batch one record at a time; reject only the records that fail.

        A stage bug or an input nobody foresaw must not stop a billion-pair job; the records
        land in rejects with the error, so the report shows it and nothing is lost.
        """
        for pair in live:
            try:
                work([pair])
            except Exception as exc:  # noqa: BLE001
                pair.reject_with(rejected_as, "error", f"{type(exc).__name__}: {exc}"[:300])
                self._count_failure(exc)
            else:
                self._succeeded = True

    def _count_failure(self, exc: Exception) -> None:
        """Stop the run when the first records all fail alike: a wrong model, path or setting
        would otherwise turn a whole dataset into rejects and exit as if all were well."""
        if self._succeeded or not self.stop_after_failures:
            return
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200] if str(exc) else type(exc).__name__
        same, n = self._streak
        self._streak = (error, n + 1 if error == same else 1)
        if self._streak[1] >= self.stop_after_failures:
            raise SystematicFailure(
                f"stage '{self.name}' failed on its first {self._streak[1]} records with the same error ({error}); "
                "this is the stage's setup (model, path or arguments), not the data "
                "(finished shards are kept; --stop-after-failures 0 rejects such records instead)"
            ) from exc

    def take_seconds(self) -> float:
        """The time spent since the last call (a runner reads it once per shard)."""
        done, self.seconds = self.seconds, 0.0
        return done

    def stat(self, name: str, value: int | float = 1) -> None:
        """Count something of the stage's own (captions edited, alt-texts contradicted...): it
        is summed per shard into the done marker and over the run into stats.json and the report."""
        self.metrics[name] += value

    def take_metrics(self) -> dict[str, int | float]:
        done, self.metrics = dict(self.metrics), Counter()
        return done


class Filter(Stage):
    """A stage that only decides: ``check`` returns None to keep, or (reason, detail)."""

    @abstractmethod
    def check(self, pair: Pair) -> tuple[str, str] | None:
        """None to keep the pair, or (reason, detail) to reject it."""

    def process(self, batch: list[Pair]) -> None:
        for pair in batch:
            verdict = self.check(pair)
            if verdict is not None:
                pair.reject_with(self.name, *verdict)


# The meta key that carries a Decision's ``show`` from the stage to the shard's report sampler,
# which takes it out before the record is written (it travels in meta, which every runner carries).
REPORT_MARK = "_recaption_report_mark"


class GlobalStage(Stage):
    """A stage that must see every record's signature before deciding about any of them.

    What ``decide`` counts (``stat``) joins the stage's counts; what it finds worth listing
    (``findings``: evaluation images copied, what-if tables) goes into stats.json and the report.
    """

    def __init__(self) -> None:
        super().__init__()
        self.findings: dict[str, Any] = {}

    @abstractmethod
    def signature(self, pair: Pair) -> dict[str, Any]:
        """A small, JSON-serialisable summary of what ``decide`` needs from this record."""

    @abstractmethod
    def decide(self, signatures: Iterable[tuple[str, dict[str, Any]]]) -> Decisions:
        """``signatures`` streams (record key, signature) in input order; return the decisions.

        Keep only what the decision needs of each signature: there is one per record.
        """

    def decide_in_tasks(self, tasks: TaskPool, shards: list[tuple[int, str]], work: str, records: int) -> Decisions:
        """The same decisions, where the runner has a task pool: ``shards`` are (shard index,
        signatures file) in input order, ``work`` a folder the decision may use, ``records``
        how many signatures there are. By default the signatures stream into ``decide`` here; a
        stage whose decision would not fit one process does its heavy part as tasks (dedup)."""

        def streamed() -> Iterable[tuple[str, dict[str, Any]]]:
            for _, path in shards:
                yield from read_signatures(path)

        return self.decide(streamed())

    def process(self, batch: list[Pair]) -> None:
        raise StageError(f"global stage '{self.name}' runs through the runner's collect/decide/apply")

    def apply(self, batch: list[Pair], keys: list[str], decisions: Mapping[str, Decision]) -> list[Pair]:
        """Apply the decisions for this batch, with the same counting as any stage."""
        key_of = {id(p): k for p, k in zip(batch, keys)}

        def work(live: list[Pair]) -> None:
            for pair in live:
                decision = decisions.get(key_of[id(pair)])
                if decision is None:
                    continue
                pair.scores.update(decision.scores)
                pair.meta.update(decision.meta)
                if decision.show:
                    pair.meta[REPORT_MARK] = decision.show
                if decision.reject:
                    pair.reject_with(self.name, *decision.reject)

        return self._run(batch, work)
