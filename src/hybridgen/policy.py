"""Every timing hybridgen uses, in one place: the :class:`Policy` and its presets.

All durations are seconds. The overall ``deadline`` and the ``push_timeout`` count from the moment
the start request is sent.

Renamed (the old names still work for one release, with a :class:`DeprecationWarning`):
``ws_timeout`` is :attr:`Policy.push_timeout`, ``keep_ws_open`` is :attr:`Policy.keep_push_open`,
``ws_reconnect`` is :attr:`Policy.push_reconnect`: they concern every push channel (SSE and the
WebSocket), not the WebSocket alone.
"""

from __future__ import annotations

import math
from typing import Any, Final

import attrs

from . import _deprecated
from .errors import ConfigError
from .machine import PUSH, Channel

__all__ = ["PRESETS", "Policy"]


def _positive(inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(attribute.name, f"must be a positive number of seconds, got {value!r}")


def _fraction(inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and 0 <= value < 1):
        raise ConfigError(attribute.name, f"must be a fraction in [0, 1), got {value!r}")


def _at_least_one(inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 1):
        raise ConfigError(attribute.name, f"must be a number >= 1, got {value!r}")


def _count(inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ):
        raise ConfigError(attribute.name, f"must be a whole number >= 0, got {value!r}")


def _channels(value: object) -> tuple[Channel, ...]:
    if isinstance(value, str):  # "websocket,sse" as the command line and env give it
        value = tuple(part.strip() for part in value.split(",") if part.strip())
    if not isinstance(value, list | tuple | frozenset | set):
        raise ConfigError("push", f"must be a tuple of channel names, got {value!r}")
    unknown = [name for name in value if name not in PUSH]
    if unknown:
        raise ConfigError("push", f"unknown channel {unknown[0]!r}; choose from websocket, sse")
    return tuple(Channel(name) for name in value)


def _push(inst: object, attribute: attrs.Attribute[Any], value: tuple[Channel, ...]) -> None:
    if len(set(value)) != len(value):
        raise ConfigError("push", f"names a channel twice: {value!r}")


def _not_negative(inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(attribute.name, f"must be a number of seconds >= 0, got {value!r}")


def _optional_positive(inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        _positive(inst, attribute, value)


def _flag(inst: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigError(attribute.name, f"must be True or False, got {value!r}")


@attrs.frozen(kw_only=True)
class Policy:
    """How long to wait for the push, how to poll, when to give up.

    Invalid values raise :class:`~hybridgen.errors.ConfigError` (a ``ValueError``) naming the field.
    """

    push_timeout: float = attrs.field(default=2.0, validator=_positive)
    """Seconds after the start request before polling begins (the push-only phase, on every push
    channel; the state ``awaiting_ws``). Was ``ws_timeout`` (deprecated alias)."""
    poll_interval: float = attrs.field(default=2.0, validator=_positive)
    """Seconds from one poll's reply to the next poll, and from the start request's reply to the
    first poll (that reply has just said the job is not ready)."""
    backoff_factor: float = attrs.field(default=2.0, validator=_at_least_one)
    """After each consecutive failure of a push connect or a retried start request the delay is
    multiplied by this, and so is the wait after each poll in a row that got no answer (refused,
    reset, timed out). A poll the server answered with an error (503, 429, another 5xx) is not
    backed off: the next comes one ``poll_interval`` later, as a fixed poller's would, or when
    ``Retry-After`` says if that is later (within :attr:`poll_retry_after_cap`)."""
    backoff_cap: float = attrs.field(default=16.0, validator=_positive)
    """The longest delay between start retries and unanswered polls (push reconnects have
    :attr:`reconnect_cap`)."""
    jitter: float = attrs.field(default=0.1, validator=_fraction)
    """Each delay is scaled by a random factor in ``[1 - jitter, 1 + jitter]``."""
    deadline: float = attrs.field(default=120.0, validator=_positive)
    """Seconds after the start request when the generation fails if no result arrived."""
    push: tuple[Channel, ...] = attrs.field(
        default=(Channel.SSE, Channel.WEBSOCKET), converter=_channels, validator=_push
    )
    """The push channels to open: ``"sse"`` (the file's Server-Sent Events, today's push, opened
    once the start reply names the file) and ``"websocket"`` (the project's legacy socket; without
    :attr:`push_fallback` opened before the start request). Empty: poll only. A comma-separated
    string is accepted too; names become :class:`~hybridgen.machine.Channel` members. With
    :attr:`push_fallback` the order is the order of preference."""
    push_fallback: bool = attrs.field(default=True, validator=_flag)
    """Open only the first channel of :attr:`push`, and a later one only while every channel
    before it is down after a failure (refused, e.g. HTTP 404 from a server without it, or
    dropped or ended twice in a row without news, or not reconnected after a failed connect); a
    short gap of a channel that brought news (its stream ended, it reconnects within
    :attr:`reconnect_delay`) opens nothing. A later channel opened beside a failed one stays
    until it drops; it is not reopened once an earlier one brings news again. A later channel
    that has delivered results on this client (and no channel before it has) opens from the
    start too. It halves the push connections of each generation, on the
    client and on the server; a first channel that connects and stays silent keeps the others
    closed unless :attr:`push_quiet` is set (otherwise polling delivers). False: open every
    channel at once."""
    push_quiet: float | None = attrs.field(default=15.0, validator=_optional_positive)
    """With :attr:`push_fallback`: a channel that has been connected this many seconds without a
    single message counts as unavailable too, so the next channel opens beside it (a stream that
    connects and stays silent, as the seed-era API's SSE does). The first message on it closes
    the later channels again. Until a later channel has spoken on this client, one generation at
    a time opens it this way (the client's probe, :class:`~hybridgen.core.Probes`): a burst of
    generations against a server whose channels are all silent opens one socket, not one each;
    once it speaks (or delivers, which also opens it from the start), every generation with a
    quiet channel opens it at its next input (within about one ``poll_interval``). ``None``: only
    a failure makes a channel unavailable."""
    keep_push_open: bool = attrs.field(default=True, validator=_flag)
    """Keep listening on the push channels while polling (else close them when polling begins).
    Was ``keep_ws_open`` (deprecated alias)."""
    push_reconnect: bool = attrs.field(default=True, validator=_flag)
    """Reconnect a dropped push channel (with backoff) while it is still wanted. Was
    ``ws_reconnect`` (deprecated alias)."""
    reconnect_delay: float = attrs.field(default=1.0, validator=_positive)
    """Seconds before a push channel's first reconnect after a failure (a refused or timed-out
    connect, a drop, a stream the server ended). Each further failure without news (a result,
    a failure, a completed job or new progress about this generation's file) multiplies it by
    :attr:`backoff_factor`, up to :attr:`reconnect_cap`; a connection that brought news starts
    the count again. Each channel counts on its own."""
    reconnect_cap: float = attrs.field(default=30.0, validator=_positive)
    """The longest wait before a push channel reconnects: a server that ends every stream at
    once costs a few connects per generation (1, 2, 4, 8, 16, 30, 30... s apart), while polling
    delivers. At least :attr:`reconnect_delay`."""
    reconnect_jitter: float = attrs.field(default=0.5, validator=_fraction)
    """Each reconnect delay is shortened by a random fraction of at most this (``0.5``: it lies
    in ``[delay / 2, delay]``), so the channels of many generations that dropped together do not
    reconnect together; the cap stays a cap."""
    retry_budget: int | None = attrs.field(default=20, validator=_count)
    """Polls without an answer tolerated per generation (refused, reset, timed out, a reply
    that is not the API's); one more fails it (``None``: no limit). A poll the server answered
    with an error (429, 5xx) does not spend it: the server is there, so such polls go on until
    the deadline, as a fixed poller's would (the deadline's reason then names the last error)."""
    honour_retry_after: bool = attrs.field(default=True, validator=_flag)
    """After a 429/503 with ``Retry-After``, wait what it says (at least ``poll_interval``): no
    start request is sent earlier, and no poll, within :attr:`poll_retry_after_cap`."""
    poll_retry_after_cap: float | None = attrs.field(default=2.0, validator=_optional_positive)
    """The longest a poll's ``Retry-After`` holds the next poll back while no push channel may
    deliver instead (none shows life, :attr:`push_alive`, and none has delivered on this
    client): polls are then the only way to learn the result, and a wait past a fixed poller's
    next poll finds it later. The wait is never shorter than ``poll_interval``, so the default
    (2 s, the seed's interval) polls again one interval after a 429/503 whatever its
    ``Retry-After``. While a push channel shows life or is trusted, ``Retry-After`` is honoured
    in full (the push delivers meanwhile). ``None``: always in full (a strict rate limiter)."""
    request_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds one HTTP request or WebSocket connect may take (always cut at the deadline)."""
    trust_live_socket: bool = attrs.field(default=True, validator=_flag)
    """Let push channels relax polling. A channel is trusted once it has delivered a result on
    this client: while a trusted channel is connected, polls come every ``sparse_interval``, as a
    safety net. An untrusted channel's progress reports space polls out only while it shows life
    (:attr:`push_alive`: up to one ``poll_interval`` after the job's predicted end); once it is
    silent or down, polls come every ``poll_interval`` whatever the prediction said (a
    prediction from progress can be late: a job that waited in a queue, a job that fails)."""
    adaptive: bool = attrs.field(default=False, validator=_flag)
    """Poll sparsely while the result is not expected yet, densely near and after the expected
    moment (estimated from the server's progress reports, else from recent generations)."""
    history_wait: float | None = attrs.field(default=30.0, validator=_optional_positive)
    """Once the client's recent generations of the same kind (request type, model, a video's
    duration) say when a result comes (the shortest of their durations from start reply to result,
    :attr:`hybridgen.Client.durations`, known after 3, read when the start reply comes) and the
    job's own progress does not: no poll before that moment but one safety poll every this many
    seconds at most (counted from the end of the push-only wait, evenly spaced), then one every
    ``poll_interval`` from that moment on (the seed's cadence, without its blind 30 s). A poll
    refused before that moment keeps this schedule, its ``Retry-After`` honoured in full while it
    ends before that moment. So a job shorter than history, or one that fails early, is found within
    this long (never less than ``poll_interval``); a job no shorter than history within one
    interval, as by the full cadence. While a push channel is trusted or shows life, its safety net
    comes first. ``None``: no quiet phase."""
    start_retries: int | None = attrs.field(default=5, validator=_count)
    """Start requests sent again, within the deadline, when the server certainly did not process
    them (429 or 503, honouring ``Retry-After``; a connection refused before the request was sent);
    ``0`` never, ``None`` until the deadline."""
    retry_unsafe_starts: bool = attrs.field(default=False, validator=_flag)
    """Also send again a start the server may have processed (500, 502, 504, 524, a timeout after
    sending). Off by default: the first job may exist, and a second one would be billed too."""
    sparse_interval: float = attrs.field(default=10.0, validator=_positive)
    """The wait between polls while a trusted push channel is connected (``trust_live_socket``)
    or a push channel shows life (:attr:`push_alive`) with no estimate of the job's end, and the
    longest wait while the result is far off; never less than ``poll_interval``."""
    push_alive: float | None = attrs.field(default=20.0, validator=_optional_positive)
    """With ``trust_live_socket``: a connected push channel shows life for this many seconds
    after each sign of it (any message, progress, or an SSE keep-alive comment; not the connect
    itself). While one does, polls are a safety net: every ``sparse_interval``, or, once the
    job's progress gives its expected end, one ``poll_interval`` after that end (at most
    :attr:`lively_interval` apart). The moment no channel shows life any more (silent this long,
    dropped or closed), the next poll comes within one ``poll_interval``. A channel that showed
    life while a poll found the result earns no more relaxed polls on this client until it
    delivers a result. Not with :attr:`adaptive`, whose cadence comes first. ``None``: life
    does not relax polling (only trust does)."""
    lively_interval: float = attrs.field(default=30.0, validator=_positive)
    """The longest wait between polls while a push channel shows life (:attr:`push_alive`) and
    the job's progress puts its end further off; never less than ``poll_interval``."""

    download_timeout: float = attrs.field(default=60.0, validator=_positive)
    """Seconds the result file's download may take (:meth:`hybridgen.Client.download`), every
    attempt and the waits between them included; a slower one fails with a
    :class:`~hybridgen.errors.DownloadError`, its URL kept."""
    download_retry_delay: float = attrs.field(default=0.5, validator=_positive)
    """The wait before a failed download's second attempt; later waits grow by
    ``backoff_factor`` up to ``backoff_cap``, with ``jitter`` (``Retry-After`` honoured). A
    download is tried again after what can be transient (a connection error, a body cut short,
    a stall of ``request_timeout`` without a byte, 408/425/429, 5xx) and, within
    :attr:`download_propagation`, after 403/404."""
    download_propagation: float = attrs.field(default=10.0, validator=_not_negative)
    """Seconds after the result was announced during which the file's host answering 403 or 404
    counts as transient (a CDN that does not have the new file everywhere yet); later, and with
    ``0``, they fail the download at once."""

    def __attrs_post_init__(self) -> None:
        if self.deadline <= self.push_timeout:
            raise ConfigError(
                "deadline",
                f"must be longer than push_timeout ({self.push_timeout:g} s), "
                f"got {self.deadline:g} s",
            )
        if self.reconnect_cap < self.reconnect_delay:
            raise ConfigError(
                "reconnect_cap",
                f"must be at least reconnect_delay ({self.reconnect_delay:g} s), "
                f"got {self.reconnect_cap:g} s",
            )
        if self.backoff_cap < self.poll_interval:
            raise ConfigError(
                "backoff_cap",
                f"must be at least poll_interval ({self.poll_interval:g} s), "
                f"got {self.backoff_cap:g} s",
            )

    @classmethod
    def seed(cls) -> Policy:
        """The seed client's exact behaviour, the baseline of every comparison.

        The WebSocket only (no SSE), 30 s WebSocket wait, socket closed at fallback, a poll
        every 2 s with no jitter and no backoff, 2 minutes of polling after the fallback (150 s
        overall). Like the seed's loop, a failed poll is simply followed by the next one 2 s
        later until time runs out (no budget, ``Retry-After`` ignored); permanent errors
        (401/403/404) still fail at once, and a failed start request is never sent again.
        """
        return cls(
            push_timeout=30.0,
            poll_interval=2.0,
            backoff_factor=1.0,
            backoff_cap=2.0,
            jitter=0.0,
            deadline=150.0,
            push=("websocket",),
            keep_push_open=False,
            push_reconnect=False,
            retry_budget=None,
            honour_retry_after=False,
            trust_live_socket=False,
            start_retries=0,
            history_wait=None,
        )

    @classmethod
    def default(cls) -> Policy:
        """hybridgen's default: listen and poll together, so whichever channel knows first wins.

        Listens on SSE (today's push) and opens the legacy WebSocket beside it only while SSE is
        down or has said nothing for :attr:`push_quiet` (15 s): one push connection per
        generation against today's API, and the seed-era socket still delivers where SSE
        connects but stays silent. Polling starts after one poll interval (2 s), so a silent
        push costs at most about one interval after the result is ready, whatever the
        generation time; the channels stay open (and reconnect) so a working push still delivers
        at once, and once a channel has delivered on this client, polls relax to a sparse safety
        net. Once the client knows how long its recent generations took, polls before the
        expected moment are a few safety polls at most :attr:`history_wait` (30 s) apart, then
        every 2 s: a job no shorter than the client's recent ones still costs at most about one
        interval, a shorter one (or an early failure) at most 30 s, and a silent push costs the
        server no more requests than the seed's client. See ``docs/concepts.md``.
        """
        return cls()

    @classmethod
    def eager(cls) -> Policy:
        """The default, but with both push channels open from the start.

        The legacy WebSocket opens with the start request and SSE with its reply: a result that
        either channel pushes arrives at once, against any server, at the cost of two push
        connections per generation (on the client and on the server).
        """
        return cls(push=("websocket", "sse"), push_fallback=False)

    @classmethod
    def adaptive_default(cls) -> Policy:
        """The default, polling adaptively: fewer requests when the job's duration is predictable.

        Where the server's progress reports give the job's expected end, polls every
        ``sparse_interval`` (10 s) while it is far off, then halves the wait towards it down to
        ``poll_interval`` (2 s); the client's recent generations give it quiet polls, as the
        default's (:attr:`history_wait`), or with ``history_wait=None`` the same halving. A push
        channel's life does not space polls out (:attr:`push_alive`).
        """
        return cls(adaptive=True)

    @classmethod
    def lean(cls) -> Policy:
        """The default without :attr:`push_quiet`: a quiet SSE stream never opens the WebSocket.

        Listens on SSE and opens the legacy WebSocket only while SSE is down (refused, or dropped
        and not back), or from the start once the WebSocket (and not SSE) has delivered a result
        on this client. Against a server whose SSE stream connects but stays silent while its
        WebSocket pushes, results come by polling instead (about one ``poll_interval`` late).
        """
        return cls(push_quiet=None)

    @classmethod
    def polling(cls) -> Policy:
        """Polling only: no push channel is opened; a poll every 2 s (backing off) from the start.

        For networks that block WebSockets or long-lived connections, and to check polling on
        its own (``hybridgen check``). The result comes one poll after it is ready, at most.
        """
        return cls(push=())

    @classmethod
    def video(cls) -> Policy:
        """For video jobs, which take 5-15 minutes: the push first, sparse polls as the net.

        Listens on SSE (the legacy WebSocket beside it while SSE is down or quiet for a minute),
        polls every 10 s from 10 s on (a 10-minute job needs no poll every 2 s: a silent push
        costs at most about 10 s of a wait that is minutes long; while the push shows life,
        polls come at most every 2 minutes, the life lasting a minute; once the client knows
        how long its jobs take, polls before the shortest of them at most every 30 s,
        :attr:`history_wait`), backs off to a minute
        while polls get no answer and tolerates 60 transient poll errors, gives up after 20
        minutes (the API's guide waits 15) and gives the download of a file of hundreds of MB
        15 minutes.
        """
        return cls(
            push_timeout=10.0,
            poll_interval=10.0,
            backoff_cap=60.0,
            reconnect_cap=60.0,
            deadline=1200.0,
            push_quiet=60.0,
            sparse_interval=30.0,
            push_alive=60.0,
            lively_interval=120.0,
            request_timeout=30.0,
            retry_budget=60,
            download_timeout=900.0,
        )

    ws_timeout = _deprecated.alias("ws_timeout", "push_timeout", "Policy")
    keep_ws_open = _deprecated.alias("keep_ws_open", "keep_push_open", "Policy")
    ws_reconnect = _deprecated.alias("ws_reconnect", "push_reconnect", "Policy")

    def replace(self, **changes: Any) -> Policy:
        """Return a copy with some fields changed (validated like a new policy)."""
        if not RENAMED.keys().isdisjoint(changes):
            changes = _deprecated.renamed(changes, RENAMED, "Policy")
        return attrs.evolve(self, **changes)

    def scaled(self, factor: float) -> Policy:
        """Return a copy with every duration multiplied by ``factor`` (e.g. 0.05: 20x faster)."""
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
            raise ConfigError("time_scale", f"must be a positive number, got {factor!r}")
        durations = {name: getattr(self, name) for name in DURATIONS}
        return self.replace(**{k: v * factor for k, v in durations.items() if v is not None})


RENAMED: Final = {
    "ws_timeout": "push_timeout",
    "keep_ws_open": "keep_push_open",
    "ws_reconnect": "push_reconnect",
}
"""Old field names of :class:`Policy` and their new ones: ``Policy(ws_timeout=...)`` and
``replace(ws_timeout=...)`` still work for one release, with a :class:`DeprecationWarning`."""
_deprecated.accept_old_names(Policy, RENAMED)

DURATIONS: Final = (
    "push_timeout",
    "poll_interval",
    "push_quiet",
    "backoff_cap",
    "reconnect_delay",
    "reconnect_cap",
    "deadline",
    "sparse_interval",
    "push_alive",
    "lively_interval",
    "request_timeout",
    "poll_retry_after_cap",
    "history_wait",
    "download_timeout",
    "download_retry_delay",
    "download_propagation",
)
"""The fields of :class:`Policy` that are durations in seconds (``push_quiet``, ``push_alive``,
``poll_retry_after_cap`` and ``history_wait`` may be ``None``)."""

PRESETS: Final = {
    "default": Policy.default,
    "seed": Policy.seed,
    "adaptive": Policy.adaptive_default,
    "polling": Policy.polling,
    "lean": Policy.lean,
    "eager": Policy.eager,
    "video": Policy.video,
}
"""Named presets, as the command line's ``--policy`` takes them."""
