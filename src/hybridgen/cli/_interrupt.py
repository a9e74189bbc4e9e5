"""Ctrl-C, SIGTERM and SIGHUP: what they cancel (the generations, then the work in progress).

The commands run their trio work under :func:`with_signals` (or :func:`watch_signals`); each of
the three signals ends the run the same way, and the reason names the signal that came
(``interrupted (SIGTERM)``). Outside the trio run, :func:`signals_as_sigint` makes SIGTERM and
SIGHUP act like Ctrl-C too. The exit code for an interruption is decided by the command, not here.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

if TYPE_CHECKING:
    from ..driver import Generation


SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that cancel a run (and exit 130)."""


@attrs.define
class Interrupt:
    """What a signal cancels: the generation, and the scope of the work in progress."""

    outer: trio.CancelScope
    scope: trio.CancelScope | None = None
    gen: Generation | None = None
    signal_name: str | None = None
    """The signal that came (``"SIGTERM"``), ``None`` while none did."""
    gens: list[Generation] = attrs.field(factory=list)
    """A batch's started generations (every one still running is cancelled)."""

    @property
    def hit(self) -> bool:
        """Whether a signal came."""
        return self.signal_name is not None

    @property
    def reason(self) -> str:
        """``interrupted (SIGNAL)``, naming the signal that came (SIGINT when none did yet)."""
        return _reason(self.signal_name)


def _reason(signal_name: str | None) -> str:
    return f"interrupted ({signal_name or 'SIGINT'})"


def early_interrupt(signal_name: str | None) -> str:
    """The reason of a generation interrupted before it started."""
    return f"{_reason(signal_name)} before the generation started"


def not_saved(signal_name: str | None) -> str:
    """The reason of a done generation interrupted during its download."""
    return f"{_reason(signal_name)} during the download"


def not_run(signal_name: str | None) -> str:
    """The reason of a batch item that never started because the run was interrupted."""
    return f"not run: {_reason(signal_name)}"


async def watch_signals(interrupt: Interrupt, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(*SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            interrupt.signal_name = signal.Signals(signum).name
            if interrupt.gen is not None:
                interrupt.gen.cancel(interrupt.reason)
            for gen in interrupt.gens:
                gen.cancel(interrupt.reason)
            (interrupt.scope or interrupt.outer).cancel()


async def with_signals(body: Callable[[Interrupt], Any]) -> str | None:
    """Run ``body(interrupt)`` with the signals cancelling its generations; which signal came."""
    async with trio.open_nursery() as watchers:
        interrupt = Interrupt(watchers.cancel_scope)
        await watchers.start(watch_signals, interrupt)
        try:
            await body(interrupt)
        finally:
            watchers.cancel_scope.cancel()
    return interrupt.signal_name


def _like_sigint(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):  # Python's KeyboardInterrupt, or trio's (it knows when to raise)
        handler(signum, frame)
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def signals_as_sigint() -> Iterator[None]:
    """While the command runs, SIGTERM and SIGHUP do what SIGINT does (outside trio's receiver)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.signal(signum, _like_sigint) for signum in SIGNALS[1:]}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
