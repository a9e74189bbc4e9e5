"""The generation state machine: its states, triggers and edges, defined once, and the channels
that deliver a result (:class:`Channel`).

``DEFINITION`` is a :class:`transitions.Machine` built once per process from :data:`TRANSITIONS`.
Everything that draws, checks or drives a generation reads it: the diagrams
(:mod:`hybridgen.diagram`), the property tests, and :func:`fire`, which uses a lookup table
compiled from ``DEFINITION``'s own events. A generation therefore never builds a ``Machine`` of its
own (about 170 µs and 34 KB each, see ``docs/concepts.md``); its state is one field of a small
``attrs`` object (:class:`hybridgen.core.Core`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from transitions import Machine

from .errors import InvalidTransition

__all__ = [
    "DEFINITION",
    "PUSH",
    "INITIAL",
    "TABLE",
    "TERMINAL",
    "TRANSITIONS",
    "Channel",
    "State",
    "Trigger",
    "edges",
    "fire",
]


class State(enum.StrEnum):
    """Where one generation is."""

    REQUESTED = "requested"
    """The start request is on its way; the server has not yet named the file."""
    AWAITING_WS = "awaiting_ws"
    """The server accepted the job; waiting for a push (on any push channel: the WebSocket or
    SSE). The name is the seed's, kept for compatibility."""
    POLLING = "polling"
    """Polling the file (and, by the default policy, still listening on the push channels)."""
    DONE = "done"
    """The result URL is known. Terminal."""
    FAILED = "failed"
    """The job failed, a permanent error happened, or the deadline passed. Terminal."""
    CANCELLED = "cancelled"
    """The caller cancelled the generation. Terminal."""


class Channel(enum.StrEnum):
    """A way a result reaches hybridgen: a push channel (:attr:`SSE`, :attr:`WEBSOCKET`) or
    :attr:`POLLING`.

    A ``str`` enum: each member equals its value (``Channel.SSE == "sse"``) and prints and
    serialises to JSON as it, so code and scripts that compare or read plain strings keep working.
    """

    SSE = "sse"
    """The file's Server-Sent Events stream (``events/file.{id}``): today's push."""
    WEBSOCKET = "websocket"
    """The project's WebSocket (``ws/project.{id}``): the seed's (legacy) push."""
    POLLING = "polling"
    """An HTTP reply: a poll of the file, or the start reply itself."""


PUSH: Final = (Channel.SSE, Channel.WEBSOCKET)
"""The push channels (a :class:`~hybridgen.policy.Policy`'s ``push`` names some of them)."""


class Trigger(enum.StrEnum):
    """What moves a generation from one state to the next."""

    START = "start"
    """The server accepted the start request and named the file."""
    PUSH_RESULT = "push_result"
    """A push message (WebSocket or SSE) carried the result URL."""
    PUSH_COMPLETED = "push_completed"
    """A push message said the job completed but carried no URL: poll for it now."""
    WS_TIMEOUT = "ws_timeout"
    """The policy's push-only wait (``push_timeout``) ran out without a result. The name is the
    seed's (it means any push channel), kept for compatibility."""
    WS_FAILED = "ws_failed"
    """Every push channel could not connect, closed or ended before the wait ran out (the name
    is the seed's, kept for compatibility)."""
    POLL_RESULT = "poll_result"
    """An HTTP reply (a poll, or the start reply itself) carried the result URL."""
    DEADLINE = "deadline"
    """The policy's overall deadline passed."""
    ERROR = "error"
    """A permanent error: rejected credentials, unknown file, failed job, retries exhausted."""
    CANCEL = "cancel"
    """The caller cancelled."""


INITIAL: Final = State.REQUESTED
TERMINAL: Final = frozenset({State.DONE, State.FAILED, State.CANCELLED})
_LIVE = [State.REQUESTED, State.AWAITING_WS, State.POLLING]

TRANSITIONS: Final[tuple[Mapping[str, object], ...]] = (
    {"trigger": Trigger.START, "source": State.REQUESTED, "dest": State.AWAITING_WS},
    {
        "trigger": Trigger.PUSH_RESULT,
        "source": [State.AWAITING_WS, State.POLLING],
        "dest": State.DONE,
    },
    {"trigger": Trigger.PUSH_COMPLETED, "source": State.AWAITING_WS, "dest": State.POLLING},
    {"trigger": Trigger.WS_TIMEOUT, "source": State.AWAITING_WS, "dest": State.POLLING},
    {"trigger": Trigger.WS_FAILED, "source": State.AWAITING_WS, "dest": State.POLLING},
    # an HTTP reply (a poll, or a start reply that already carries the url) gave the result
    {
        "trigger": Trigger.POLL_RESULT,
        "source": [State.AWAITING_WS, State.POLLING],
        "dest": State.DONE,
    },
    {"trigger": Trigger.DEADLINE, "source": _LIVE, "dest": State.FAILED},
    {"trigger": Trigger.ERROR, "source": _LIVE, "dest": State.FAILED},
    {"trigger": Trigger.CANCEL, "source": _LIVE, "dest": State.CANCELLED},
)
"""The edges, in the form :class:`transitions.Machine` takes."""


def _plain(value: object) -> object:
    # transitions names Enum members by their .name; hand it the plain string values instead
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value)


def build_definition() -> Machine:
    """Build a fresh ``transitions.Machine`` holding the definition (no model attached).

    hybridgen builds it once, as :data:`DEFINITION`; this function exists for tests and tools
    that want their own copy, e.g. to compare against a per-object machine.
    """
    return Machine(
        model=None,
        states=[s.value for s in State],
        transitions=[{k: _plain(v) for k, v in t.items()} for t in TRANSITIONS],
        initial=INITIAL.value,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )


DEFINITION: Final = build_definition()


def _compile(machine: Machine) -> Mapping[tuple[State, Trigger], State]:
    table: dict[tuple[State, Trigger], State] = {}
    for name, event in machine.events.items():
        for source, transitions in event.transitions.items():
            (only,) = transitions  # unconditional edges: exactly one per (source, trigger)
            table[State(source), Trigger(name)] = State(str(only.dest))
    return MappingProxyType(table)


TABLE: Final = _compile(DEFINITION)
"""``(state, trigger) -> next state``, compiled from :data:`DEFINITION`'s events."""


def fire(state: State, trigger: Trigger) -> State:
    """Return the state that ``trigger`` leads to from ``state``.

    Raises :class:`~hybridgen.errors.InvalidTransition` naming both when there is no such edge
    (terminal states have none).
    """
    try:
        return TABLE[state, trigger]
    except KeyError:
        raise InvalidTransition(str(state), str(trigger)) from None


def edges() -> list[tuple[State, Trigger, State]]:
    """Every edge of the definition as ``(source, trigger, dest)``, in a stable order."""
    order = {s: i for i, s in enumerate(State)}
    return sorted(
        ((s, t, d) for (s, t), d in TABLE.items()),
        key=lambda e: (order[e[0]], list(Trigger).index(e[1])),
    )
