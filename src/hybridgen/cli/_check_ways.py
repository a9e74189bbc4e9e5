"""``hybridgen check --generate``: one real generation per way of getting the result.

Polling only, push only for each push channel (polls held back to the end, so a push delivery
shows), and hybrid (the default policy), all at once on one client. Each way reports the channel
that delivered, the time from the start request to the result and, when the server is the
embedded emulator (whose jobs say when they were ready), how long after the job was ready.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final

import attrs
import trio

from ..config import Config
from ..machine import State
from ..policy import Policy
from ..wire import PUSH_CHANNELS, ImageRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core import Result
    from ..driver import Generation
    from ..emulator.model import ServerModel
    from ..events import Event
    from ._check import Verdict

PUSH_ONLY_WAIT: Final = 0.75
"""A push-only way polls from this fraction of the deadline on (the push has until then)."""
PROMPT: Final = "hybridgen check: a small test image"


@attrs.frozen
class Way:
    """One way's outcome; ``channel`` delivered it, ``after_ready`` seconds after the job was
    ready (``None`` when the server does not tell)."""

    step: str
    verdict: Verdict
    seconds: float = 0.0
    detail: str = ""
    fix: str = ""
    channel: str | None = None
    after_ready: float | None = None


def policies(time_scale: float) -> dict[str, Policy]:
    """The policy of each way, its durations times ``time_scale``; the request timeout is kept
    (cut at the deadline anyway) so a scaled run does not fail on a busy machine."""

    def scaled(policy: Policy) -> Policy:
        return policy.scaled(time_scale).replace(request_timeout=policy.request_timeout)

    hybrid = scaled(Policy.default())
    ways = {"polling": scaled(Policy.polling())}
    for channel in PUSH_CHANNELS:
        ways[f"{channel} only"] = hybrid.replace(
            push=(channel,), push_timeout=hybrid.deadline * PUSH_ONLY_WAIT
        )
    ways["hybrid"] = hybrid
    return ways


def _judge(name: str, policy: Policy, result: Result, after_ready: float | None) -> Way:
    ready = "" if after_ready is None else f", {after_ready:.2f} s after the job was ready"
    took = f"{result.elapsed:.2f} s"
    if result.state is not State.DONE:
        fix = (
            "no result by any channel: run hybridgen check without --generate to see which "
            "step fails; hybridgen generate -v shows the generation's path"
        )
        return Way(name, "failed", result.elapsed, f"{result.state}: {result.reason}", fix)
    detail = f"delivered by {result.channel} in {took}{ready}"
    verdict: Verdict = "ok"
    fix = ""
    pushed = policy.push
    if pushed and name != "hybrid" and result.channel not in pushed:
        verdict = "warning"
        detail = f"{pushed[0]} delivered nothing; polling got it at {took}{ready}"
        fix = (
            f"the {pushed[0]} push does not deliver here: keep it off (--push with the other "
            "channel, or --policy polling); the default policy polls anyway"
        )
    return Way(name, verdict, result.elapsed, detail, fix, result.channel, after_ready)


async def run_ways(
    config: Config,
    time_scale: float,
    model: ServerModel | None,
    *,
    on_way: Callable[[Way], None] | None = None,
    on_event: Callable[[str, Event], None] | None = None,
) -> list[Way]:
    """Run every way at once against ``config`` (``model``: the embedded emulator's, if any).

    ``on_way`` is called with each way's outcome as soon as its generation ends, ``on_event``
    with every event of a way's generation (with the way's name); the list comes in way order.
    """
    from ..driver import Client
    from ..transport import SuperDuperTransport

    ways = policies(time_scale)
    judged: dict[str, Way] = {}

    async def judge(name: str, gen: Generation) -> None:
        result = await gen.wait()
        after_ready = None
        job = model.jobs.get(result.file_id or "") if model is not None else None
        if job is not None and result.state is State.DONE:
            after_ready = max(0.0, gen.core.started + result.elapsed - job.ready_at)
        judged[name] = _judge(name, ways[name], result, after_ready)
        if on_way is not None:
            on_way(judged[name])

    transport = SuperDuperTransport(config)
    try:
        async with Client(transport) as client, trio.open_nursery() as nursery:
            for name, policy in ways.items():
                request = ImageRequest(prompt=f"{PROMPT} ({name})")
                start = functools.partial(client.start, request, policy=policy)
                gen = await nursery.start(start)
                if on_event is not None:
                    gen.subscribe(functools.partial(on_event, name))
                nursery.start_soon(judge, name, gen)
    finally:
        await transport.aclose()
    return [judged[name] for name in ways]


def summary(ways: list[Way]) -> str:
    """One line: which ways deliver."""
    works = [w.step for w in ways if w.verdict == "ok"]
    not_ = [w.step for w in ways if w.verdict != "ok"]
    line = f"ways that deliver: {', '.join(works) or 'none'}"
    return line + (f"; not: {', '.join(not_)}" if not_ else "")
