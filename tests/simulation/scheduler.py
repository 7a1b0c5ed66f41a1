"""A seeded, single-threaded scheduler of coroutines: the only source of interleaving in the simulation.

The real use cases are `async def`; the simulated ports `await checkpoint()` before (and, for the PSP, after) doing
anything. A checkpoint hands control back to the scheduler, which then picks, with the seeded random, which task
runs next, whether time moves, or whether a process dies (its suspended tasks are closed where they stand: a
crash at that await). Nothing else awaits, so one seed always gives one run.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

Condition = Callable[[], bool]


class SimulationFailed(AssertionError):
    """A seed broke an invariant, or a simulated process could not go on."""


class _Checkpoint:
    def __init__(self, until: Condition | None = None) -> None:
        self.until = until

    def __await__(self) -> Generator[Condition | None, None, None]:
        yield self.until


async def checkpoint() -> None:
    """Suspend here; the scheduler decides what happens next (another task, time, a crash)."""
    await _Checkpoint()


async def wait_for(condition: Condition) -> None:
    """Suspend until `condition` holds; the scheduler does not step the task before (it may still kill it)."""
    while not condition():
        await _Checkpoint(condition)


Done = Callable[[Any, BaseException | None], None]


@dataclass(eq=False)
class Task:
    name: str
    process: str
    coro: Coroutine[None, None, Any]
    on_done: Done
    steps: int = 0
    until: Condition | None = None  # what the task waits for at its checkpoint (None: nothing)

    @property
    def runnable(self) -> bool:
        return self.until is None or self.until()


@dataclass
class Scheduler:
    tasks: list[Task] = field(default_factory=list)

    def spawn(self, name: str, process: str, coro: Coroutine[None, None, Any], on_done: Done) -> Task:
        task = Task(name, process, coro, on_done)
        self.tasks.append(task)
        return task

    def step(self, task: Task) -> None:
        """Run `task` to its next checkpoint, or to its end (then its `on_done` gets the value or the error)."""
        task.steps += 1
        try:
            task.until = task.coro.send(None)
        except StopIteration as stop:
            self.tasks.remove(task)
            task.on_done(stop.value, None)
        except Exception as error:
            self.tasks.remove(task)
            task.on_done(None, error)

    def kill(self, process: str) -> list[Task]:
        """Close every task of `process` at the checkpoint where it waits; their `on_done` is not called."""
        return self._close([t for t in self.tasks if t.process == process])

    def kill_named(self, name: str) -> list[Task]:
        """Close the tasks called `name` (one part of a process) where they wait, as `kill` does."""
        return self._close([t for t in self.tasks if t.name == name])

    def _close(self, killed: list[Task]) -> list[Task]:
        for task in killed:
            self.tasks.remove(task)
            task.coro.close()
        return killed

    def running(self, name: str) -> bool:
        return any(t.name == name for t in self.tasks)


class Checkpointed:
    """A port whose every async method first hands control to the scheduler (a place to interleave or crash)."""

    def __init__(self, inner: Any, before: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._before = before

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name == "transaction":
            return self._transaction(attribute)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            await checkpoint()
            if self._before is not None:
                self._before()
            return await attribute(*args, **kwargs)

        return call

    def _transaction(self, open_transaction: Callable[[], Any]) -> Callable[[], Any]:
        # A transaction runs whole (no checkpoint inside: row locks serialise the real ones); it may die before it.
        outer = self

        class _Transaction:
            async def __aenter__(self) -> Any:
                await checkpoint()
                if outer._before is not None:
                    outer._before()
                self._context = open_transaction()
                return await self._context.__aenter__()

            async def __aexit__(self, *exc: Any) -> Any:
                return await self._context.__aexit__(*exc)

        return _Transaction
