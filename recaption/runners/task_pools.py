"""The task pools a global stage's decision runs its tasks on (``dedup.sharded.TaskPool``): in
this process, one task after another, or on the Ray cluster this process is connected to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class InProcessTasks:
    """Tasks run one after another in this process."""

    def map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> Iterator[Any]:
        for args in calls:
            yield fn(*args)


class RayTasks:
    """Tasks run on the Ray cluster this process is connected to, results taken as they finish."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray

    def map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> Iterator[Any]:
        remote = self.ray.remote(num_cpus=1)(fn)
        pending = [remote.remote(*args) for args in calls]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])
