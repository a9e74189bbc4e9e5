"""Many generations at once: a concurrency limit, one shared transport, a result per item.

Every item is its own generation (own machine, own events, through the client's subscribers); a
failed item never stops the others unless ``fail_fast`` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import trio

from .core import Result
from .driver import Client, Generation
from .machine import State
from .policy import Policy
from .wire import ImageRequest

__all__ = ["run_batch"]


async def run_batch(
    client: Client,
    requests: Sequence[ImageRequest | str],
    *,
    concurrency: int = 8,
    policy: Policy | None = None,
    fail_fast: bool = False,
    on_start: Callable[[int, Generation], object] | None = None,
    metas: Sequence[Mapping[str, str]] | None = None,
) -> list[Result]:
    """Run every request through ``client``, at most ``concurrency`` at a time.

    Items start in their order. Returns one :class:`~hybridgen.core.Result` per request, in the
    requests' order, whatever
    their states. With ``fail_fast``, the first failed item cancels the running ones and the
    items not yet started get a ``cancelled`` result saying so. ``on_start(index, generation)``
    is called as each item starts (e.g. to follow its events). ``metas``, one per request, is
    stored with each item in the client's journal (see :meth:`~hybridgen.driver.Client.start`).
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    if metas is not None and len(metas) != len(requests):
        raise ValueError(f"metas must have one entry per request ({len(requests)})")
    limiter = trio.CapacityLimiter(concurrency)
    started: list[Generation | None] = [None] * len(requests)
    stopped_by: list[int] = []

    async def one(index: int, request: ImageRequest | str, nursery: trio.Nursery) -> None:
        try:
            gen: Generation = await nursery.start(
                lambda task_status: client.start(
                    request,
                    policy=policy,
                    meta=None if metas is None else metas[index],
                    task_status=task_status,
                )
            )
            started[index] = gen
            if on_start is not None:
                on_start(index, gen)
            result = await gen.wait()
            if fail_fast and result.state is State.FAILED and not stopped_by:
                stopped_by.append(index)
                nursery.cancel_scope.cancel()  # before the slot is free: nothing more starts
        finally:
            limiter.release_on_behalf_of(index)

    async with trio.open_nursery() as nursery:
        for index, request in enumerate(requests):
            # items start in order: a slot is taken before the item's task exists
            await limiter.acquire_on_behalf_of(index)
            nursery.start_soon(one, index, request, nursery)
    # every generation's task has ended with the nursery: each started one has its final result
    return [gen.result() if gen is not None else _not_started(stopped_by) for gen in started]


def _not_started(stopped_by: list[int]) -> Result:
    cause = f"item {stopped_by[0]} failed" if stopped_by else "the batch was cancelled"
    return Result(
        generation_id="",
        state=State.CANCELLED,
        file_id=None,
        url=None,
        channel=None,
        reason=f"not run: {cause} (fail_fast)",
        elapsed=0.0,
        polls=0,
        poll_errors=0,
        push_failures=0,
    )
