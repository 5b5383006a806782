"""Timeouts, task groups and task stops that behave the same on every CPython the agent supports.

Why this module exists: asyncio's cancellation bookkeeping (``Task.cancelling()``, the count of cancellation
requests a task has not yet absorbed) changed between patch releases, and two defects in the interpreters that
gateways actually ship combine into a loop that stops retrying:

1. A ``TaskGroup`` whose child fails *after* the ``async with`` body has finished (the usual shape: create the
   tasks, then wait) cancels its parent task and never takes that request back (CPython gh-116720, fixed in
   3.13). The parent's ``cancelling()`` stays at 1 for the rest of its life.
2. On CPython before 3.11.3 (Debian 12 ships 3.11.2), ``asyncio.timeout`` that expires in a task whose
   ``cancelling()`` is already above zero raises ``CancelledError`` instead of ``TimeoutError`` (gh-102780).

Every session loop of the agent has the shape "run a TaskGroup until the link fails, then wait out a backoff
with a timeout": after the first failed session, the backoff's timeout ends the loop with ``CancelledError``
and the remote configuration channel or the OPC UA watchdog is silently gone. Libraries the agent calls
(aiomqtt, pymodbus, asyncua) use ``asyncio.timeout`` internally, so fixing only our own timeouts is not
enough: the leftover request itself must go.

What this module gives, and every module of the agent uses instead of the asyncio originals:

- :class:`TaskGroup`: ``asyncio.TaskGroup`` that takes back its own cancellation request wherever it made it,
  as 3.13 does; a cancellation from outside still propagates.
- :func:`timeout`: ``asyncio.timeout`` with the 3.11.3+ rule (a timeout is ours when no *new* request arrived
  while it ran), whatever the interpreter.
- :func:`stop_task`: cancel a task and wait for it within a bound, without swallowing a cancellation of the
  caller (``with suppress(CancelledError): await task`` does swallow it).
- :func:`cancellable`: await a library call (pymodbus, asyncua, aiomqtt) so that a cancellation arriving just
  as its reply does is not lost. On 3.11 ``asyncio.wait_for``, which those libraries use, returns the reply
  and drops the cancellation when both land in the same loop iteration (bpo-42130, fixed in 3.12 when
  ``wait_for`` was rebuilt on ``timeout``): a driver polling every 100 ms then ignored SIGTERM about one
  stop in ten and the agent did not exit.

Rejected: requiring Python >= 3.11.3 (gateways run their distribution's own interpreter, and 3.12 has
defect 1 too); treating ``CancelledError`` as a timeout at each call site (it would also swallow a real
shutdown).
"""

from __future__ import annotations

__all__ = ["TaskGroup", "cancellable", "stop_task", "timeout"]

import asyncio
import threading
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, TypeVar

_T = TypeVar("_T")


class _Probe(Exception):
    pass


def _taskgroup_leaves_its_cancel() -> bool:
    """Whether this interpreter's TaskGroup has defect 1, found by running it rather than by version number
    (fixes are backported to some patch releases and not others). Runs once, at import, on a private event
    loop in a short-lived thread, so it works whether or not the importer is inside a running loop."""

    async def fail() -> None:
        raise _Probe

    async def group_then_count() -> int:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fail())
        except* _Probe:
            pass
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    counts: list[int] = []
    thread = threading.Thread(target=lambda: counts.append(asyncio.run(group_then_count())), name="taskgroup-probe")
    thread.start()
    thread.join()
    return counts == [1]


_TASKGROUP_LEAVES_ITS_CANCEL = _taskgroup_leaves_its_cancel()


class TaskGroup(asyncio.TaskGroup):
    """``asyncio.TaskGroup`` that leaves its parent task's cancellation count as it found it.

    On interpreters before 3.13 the group cancels its parent when a child fails while ``__aexit__`` is
    already waiting, but takes the request back only if it was made before ``__aexit__`` started. This
    subclass takes back a request made later, exactly as the fixed ``__aexit__`` does.
    """

    _parent_cancel_requested: bool  # asyncio's own flag (private): whether the group cancelled its parent

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not _TASKGROUP_LEAVES_ITS_CANCEL:
            await super().__aexit__(et, exc, tb)
            return
        # The fixed __aexit__ decides by the same flag; it is read here and nowhere else in the agent.
        requested_before: bool = self._parent_cancel_requested
        parent: asyncio.Task[Any] = self._parent_task  # type: ignore[attr-defined]  # private, see above
        try:
            await super().__aexit__(et, exc, tb)
        except BaseExceptionGroup:
            self._take_back(parent, requested_before)
            # As 3.13 does: a cancellation from outside that arrived while the group was aborting was
            # absorbed by the group's wait; re-arm it so it still reaches the parent.
            if parent.cancelling():
                parent.uncancel()
                parent.cancel()
            raise
        finally:
            self._take_back(parent, requested_before)

    def _take_back(self, parent: asyncio.Task[Any], requested_before: bool) -> None:
        if self._parent_cancel_requested and not requested_before:
            parent.uncancel()
            self._parent_cancel_requested = False  # taken back once, whichever path gets here first


class _Timeout:
    """One deadline over a block of code; see :func:`timeout`."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float | None) -> None:
        self._delay = delay
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._expired = False

    async def __aenter__(self) -> _Timeout:
        if self._task is not None:
            raise RuntimeError("a timeout cannot be entered twice")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._delay is not None:
            self._handle = asyncio.get_running_loop().call_later(max(0.0, self._delay), self._expire)
        return self

    def _expire(self) -> None:
        assert self._task is not None
        self._handle = None
        self._expired = True
        self._task.cancel()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired:
            assert self._task is not None
            # Ours if no request arrived from elsewhere while the block ran: then the block's
            # CancelledError is the one our expiry caused.
            if self._task.uncancel() <= self._cancelling and et is asyncio.CancelledError:
                raise TimeoutError from exc

    def expired(self) -> bool:
        """Whether the deadline passed (whatever the block did with the cancellation)."""
        return self._expired


def timeout(delay: float | None) -> _Timeout:
    """``async with timeout(seconds):`` raises ``TimeoutError`` if the block takes longer, on every supported
    interpreter, and ``CancelledError`` only when the task was cancelled by someone else. ``None`` means no
    deadline."""
    return _Timeout(delay)


async def stop_task(task: asyncio.Task[Any], within_s: float | None) -> bool:
    """Cancel ``task`` and wait up to ``within_s`` seconds (``None``: until it ends) for it to finish.

    Returns whether it finished. Its result or exception is retrieved (so asyncio logs no "never retrieved"
    warning) and ignored: the caller is stopping it. A cancellation of the *caller* while it waits
    propagates; ``with suppress(CancelledError): await task`` would swallow it and leave the caller running.

    A task still running when the wait ends is cancelled once more (for ``None``, every
    ``_RECANCEL_AFTER_S``): a library call that dropped the first cancellation (see :func:`cancellable`, which
    covers the calls the agent knows of) raises on the second. A bounded stop gives that second request
    ``_RECANCEL_GRACE_S`` at most, so it never takes much more than ``within_s``.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=_RECANCEL_AFTER_S if within_s is None else within_s)
    while not done:
        task.cancel()
        if within_s is not None:
            done, _ = await asyncio.wait({task}, timeout=min(within_s, _RECANCEL_GRACE_S))
            break
        done, _ = await asyncio.wait({task}, timeout=_RECANCEL_AFTER_S)
    if task in done and not task.cancelled():
        task.exception()
    return task in done


_RECANCEL_AFTER_S = 5.0
_RECANCEL_GRACE_S = 0.5


async def cancellable(call: Awaitable[_T]) -> _T:
    """``await call``, raising ``CancelledError`` if the task was cancelled meanwhile and the callee dropped
    the cancellation (see the module docstring). Costs two reads of the task's cancellation count."""
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()
    result = await call
    if task.cancelling() > before:
        raise asyncio.CancelledError
    return result
