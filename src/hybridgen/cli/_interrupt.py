"""Ctrl-C: what SIGINT cancels (the generations, then the work in progress), and whether it came.

The commands run their trio work under :func:`_with_sigint` (or :func:`_watch_sigint`); the exit
code for an interruption is decided by the command, not here.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

if TYPE_CHECKING:
    from ..driver import Generation


_EARLY_INTERRUPT: Final = "interrupted (SIGINT) before the generation started"


@attrs.define
class _Interrupt:
    """What a Ctrl-C cancels: the generation, and the scope of the work in progress."""

    outer: trio.CancelScope
    scope: trio.CancelScope | None = None
    gen: Generation | None = None
    hit: bool = False
    gens: list[Generation] = attrs.field(factory=list)
    """A batch's started generations (every one still running is cancelled)."""


async def _watch_sigint(interrupt: _Interrupt, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            interrupt.hit = True
            if interrupt.gen is not None:
                interrupt.gen.cancel("interrupted (SIGINT)")
            for gen in interrupt.gens:
                gen.cancel("interrupted (SIGINT)")
            (interrupt.scope or interrupt.outer).cancel()


async def _with_sigint(
    body: Callable[[_Interrupt], Any],
) -> bool:
    """Run ``body(interrupt)`` with Ctrl-C cancelling its generations; whether Ctrl-C came."""
    async with trio.open_nursery() as watchers:
        interrupt = _Interrupt(watchers.cancel_scope)
        await watchers.start(_watch_sigint, interrupt)
        try:
            await body(interrupt)
        finally:
            watchers.cancel_scope.cancel()
    return interrupt.hit
