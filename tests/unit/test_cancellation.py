"""agent.core.cancellation: the same timeout, task-group and stop behaviour on every supported interpreter.

Each scenario states what must hold; the ones marked "fails with asyncio's own" fail on Debian 12's Python
3.11.2 when the agent's helper is replaced by the asyncio original (and the TaskGroup ones on 3.12 too).
A guard at the end keeps product code on the helpers.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import sys
from pathlib import Path

import pytest

from agent.core.cancellation import TaskGroup, cancellable, stop_task, timeout


class Boom(Exception):
    pass


async def _fail_soon() -> None:
    await asyncio.sleep(0.001)
    raise Boom


def _cancelling() -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


async def _leave_a_stale_request() -> None:
    """What a library or an old TaskGroup can leave behind: a cancellation that was absorbed, never taken back."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)
    assert task.cancelling() == 1


# -- TaskGroup -----------------------------------------------------------------------------------------------


async def test_group_whose_child_fails_after_the_body_leaves_no_cancellation_behind() -> None:
    # fails with asyncio's own TaskGroup before 3.13 (gh-116720): cancelling() stays 1
    with pytest.raises(ExceptionGroup):
        async with TaskGroup() as tg:
            tg.create_task(_fail_soon())
    assert _cancelling() == 0


async def test_group_whose_child_fails_during_the_body_leaves_no_cancellation_behind() -> None:
    async def session() -> None:
        async with TaskGroup() as tg:
            tg.create_task(_fail_soon())
            await asyncio.sleep(1)

    with pytest.raises(ExceptionGroup):
        await session()
    assert _cancelling() == 0


async def test_retry_loop_keeps_retrying_after_failed_sessions() -> None:
    # The shape of every session loop: a group until the link fails, then a backoff under a timeout.
    # fails with asyncio's own TaskGroup and timeout on 3.11.2: the second backoff raises CancelledError
    backoffs = 0
    for _ in range(3):
        try:
            async with TaskGroup() as tg:
                tg.create_task(_fail_soon())
        except* Boom:
            pass
        try:
            async with timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            backoffs += 1
    assert backoffs == 3


async def test_cancellation_from_outside_still_reaches_a_task_running_a_group() -> None:
    started = asyncio.Event()

    async def session() -> None:
        async with TaskGroup() as tg:
            tg.create_task(asyncio.sleep(10))
            started.set()

    task = asyncio.create_task(session())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancellation_from_outside_while_the_group_aborts_is_not_lost() -> None:
    # A child fails, the group waits for a slow sibling's cleanup, and the task is cancelled meanwhile:
    # the group's error surfaces, and the outside cancellation still ends the task at its next await.
    cleanup_started = asyncio.Event()
    after_group = []

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleanup_started.set()
            await asyncio.sleep(0.05)

    async def session() -> None:
        try:
            async with TaskGroup() as tg:
                tg.create_task(slow_cleanup())
                tg.create_task(_fail_soon())
        except* Boom:
            pass
        after_group.append("reached")
        await asyncio.sleep(10)
        after_group.append("slept through a cancellation")

    task = asyncio.create_task(session())
    await cleanup_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with timeout(5):
            await task
    assert after_group == ["reached"]


# -- timeout -------------------------------------------------------------------------------------------------


async def test_timeout_expires_as_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        async with timeout(0.01):
            await asyncio.sleep(10)
    assert _cancelling() == 0


async def test_timeout_expires_as_timeout_error_with_a_stale_request_outstanding() -> None:
    # fails with asyncio.timeout on 3.11.2 (gh-102780): CancelledError instead of TimeoutError
    await _leave_a_stale_request()
    with pytest.raises(TimeoutError):
        async with timeout(0.01):
            await asyncio.sleep(10)
    assert _cancelling() == 1  # the stale request is not ours to take back


async def test_timeout_that_does_not_expire_changes_nothing() -> None:
    async with timeout(10) as deadline:
        await asyncio.sleep(0)
    assert not deadline.expired()
    async with timeout(None):
        await asyncio.sleep(0)
    assert _cancelling() == 0


async def test_cancellation_from_outside_inside_a_timeout_is_a_cancellation() -> None:
    entered = asyncio.Event()

    async def waiter() -> None:
        async with timeout(10):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(waiter())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancellation_from_outside_and_expiry_together_is_a_cancellation() -> None:
    entered = asyncio.Event()

    async def waiter() -> None:
        async with timeout(0.02):
            entered.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # cleanup outlives the deadline
                raise

    task = asyncio.create_task(waiter())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_timeout_in_cleanup_after_a_cancellation_is_a_timeout() -> None:
    # The shutdown shape: cancelled, then a bounded goodbye in `finally`.
    outcome = []

    async def uplink() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            try:
                async with timeout(0.01):
                    await asyncio.sleep(10)
            except TimeoutError:
                outcome.append("goodbye timed out")

    task = asyncio.create_task(uplink())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["goodbye timed out"]


async def test_timeout_cannot_be_entered_twice() -> None:
    deadline = timeout(1)
    async with deadline:
        pass
    with pytest.raises(RuntimeError):
        async with deadline:
            pass


# -- stop_task -----------------------------------------------------------------------------------------------


async def test_stop_task_stops_a_cooperative_task() -> None:
    task = asyncio.create_task(asyncio.sleep(10))
    assert await stop_task(task, 1.0)
    assert task.cancelled()


async def test_stop_task_gives_up_on_a_task_that_ignores_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert not await stop_task(task, 0.05)
    release.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)


async def test_stop_task_asks_again_when_the_first_cancellation_was_dropped() -> None:
    # What a library's wait_for does on 3.11 when the reply lands with the cancellation: the task runs on.
    async def drops_one() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    task = asyncio.create_task(drops_one())
    await asyncio.sleep(0)
    assert await stop_task(task, 0.05)
    assert task.cancelled()


async def test_stop_task_retrieves_the_error_of_a_task_that_failed() -> None:
    task = asyncio.create_task(_fail_soon())
    await asyncio.sleep(0.01)
    assert await stop_task(task, 1.0)  # no "exception was never retrieved" either


async def test_stop_task_lets_a_cancellation_of_the_caller_through() -> None:
    # `with suppress(CancelledError): await task` swallows this one and the caller runs on.
    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.2)

    reached = []

    async def caller() -> None:
        inner = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await stop_task(inner, 5.0)
        reached.append("after stop_task")

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reached == []


# -- guard ---------------------------------------------------------------------------------------------------

_ROOT = Path(__file__).resolve().parents[2]
_PRODUCT = ("agent", "drivers", "buffer", "config")


def _product_modules() -> list[Path]:
    return [
        path
        for package in _PRODUCT
        for path in sorted((_ROOT / package).rglob("*.py"))
        if "tests" not in path.relative_to(_ROOT).parts and path.name != "cancellation.py"
    ]


def _is_cancelled_error(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "CancelledError") or (
        isinstance(node, ast.Name) and node.id == "CancelledError"
    )


def _forbidden(tree: ast.AST, where: str) -> list[str]:
    found = []
    for node in ast.walk(tree):
        at = f"{where}:{getattr(node, 'lineno', '?')}"
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "asyncio"
            and node.attr in {"timeout", "timeout_at", "TaskGroup", "wait_for"}
        ):
            found.append(f"{at} asyncio.{node.attr}")
        # suppress(CancelledError) around an await swallows the caller's own cancellation
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "suppress"
            and any(_is_cancelled_error(arg) for arg in node.args)
        ):
            found.append(f"{at} suppress(CancelledError)")
    return sorted(found)


def test_product_code_uses_the_helpers_not_the_asyncio_originals() -> None:
    found = []
    for path in _product_modules():
        found += _forbidden(ast.parse(path.read_text(), str(path)), str(path.relative_to(_ROOT)))
    assert not found, "use agent.core.cancellation (timeout, TaskGroup, stop_task) instead:\n" + "\n".join(found)


def test_guard_sees_the_patterns_it_forbids() -> None:
    sample = """
import asyncio, contextlib
async def f(t):
    with contextlib.suppress(asyncio.CancelledError):
        async with asyncio.timeout(1):
            await t
    async with asyncio.TaskGroup():
        pass
"""
    found = _forbidden(ast.parse(sample), "sample")
    assert found == ["sample:4 suppress(CancelledError)", "sample:5 asyncio.timeout", "sample:7 asyncio.TaskGroup"]


# -- cancellable ---------------------------------------------------------------------------------------------


async def _reply_and_cancel_together(call_through_helper: bool) -> asyncio.Task[object]:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()

    async def library_call() -> int:
        return await asyncio.wait_for(reply, timeout=5)  # what pymodbus, asyncua and aiomqtt do

    async def caller() -> object:
        if call_through_helper:
            return await cancellable(library_call())
        return await library_call()

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)
    reply.set_result(1)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    return task


async def test_cancellable_raises_a_cancellation_the_library_dropped() -> None:
    # without the helper, on 3.11 the task returns the reply and runs on (see the next test)
    task = await _reply_and_cancel_together(call_through_helper=True)
    assert task.cancelled()


async def test_the_library_call_alone_drops_it_on_311() -> None:
    task = await _reply_and_cancel_together(call_through_helper=False)
    assert task.cancelled() is (sys.version_info >= (3, 12))


async def test_cancellable_returns_the_result_when_nothing_happened() -> None:
    async def library_call() -> int:
        await asyncio.sleep(0)
        return 42

    assert await cancellable(library_call()) == 42
