"""The trio driver: nursery tasks that do the I/O and feed a :class:`~hybridgen.core.Core`.

One generation runs its tasks in its own nursery: a listener per push channel of its policy (the
project's WebSocket, the file's SSE stream), the job task (start request, then polls) and the timer
loop that fires the push-only phase's end and the deadline. They decide nothing: every call of the
core returns a :class:`~hybridgen.core.Plan` of what changed in the schedule (when the job task
wakes, which push channels open, when, or close), and the driver carries it out; it keeps no
schedule of its own. The generation ends by the policy's deadline whatever the server does, every
task and socket is closed when it ends, and trio cancellation from outside moves it to
``cancelled`` before the ``Cancelled`` exception travels on.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Unpack, cast

import attrs
import trio

from .core import NOTHING, Core, Plan, Probes, Result
from .errors import (
    ConfigError,
    DownloadError,
    GenerationCancelled,
    GenerationFailed,
    JournalError,
    OversizedMessage,
    PermanentError,
    RequestError,
    TransientError,
    TransportError,
    VideoRefused,
)
from .events import Event, EventStream, Hub, JournalWarning, Retry, Subscriber, Transition
from .files import (
    DOWNLOAD_LIMIT,
    VIDEO_DOWNLOAD_LIMIT,
    Media,
    Reopen,
    SavedFile,
    convert_target,
    download,
    sniff,
    sniff_video,
)
from .journal import Journal, JournalFailure
from .machine import Channel, State
from .parse import parse_push
from .policy import Policy
from .video import (
    DEFAULT_VIDEO_MODEL,
    UPLOAD_LIMIT,
    StartRequest,
    VideoOptions,
    VideoRequest,
    check_cost,
    check_video,
    source_of,
)
from .wire import VIDEO_KINDS, FileStatus, ImageRequest, ModelInfo

if TYPE_CHECKING:  # the transports (httpx, trio-websocket) load when a client makes one
    from .transport import Transport

__all__ = ["MAX_REQUESTS", "MAX_STARTS", "Client", "Generation", "Result", "VideoPlan"]

log: Final = logging.getLogger("hybridgen.driver")

MAX_REQUESTS: Final = 32
"""HTTP requests one :class:`Client` has in flight at once by default (the connection pool of
:class:`~hybridgen.transport.SuperDuperTransport` keeps as many alive). Past a few dozen, more
concurrent requests only make the client slower: each costs CPU in the pool and the scheduler."""
MAX_STARTS: Final = 8
"""Start requests one :class:`Client` has in flight at once by default. A start waiting for a
request slot goes before the polls waiting, so a burst of starts takes up to this many of the
``max_requests`` slots and polls of running generations keep the others."""


class Generation:
    """A handle on one running (or finished) generation.

    Get one from ``await nursery.start(client.start, request)``. Read :attr:`state`, follow
    :meth:`events`, :meth:`cancel` it, or ``await`` :meth:`wait` for its :class:`Result`.
    ``plans`` carries out the :class:`~hybridgen.core.Plan` its core's calls return (the
    client's tasks do; a generation made by hand ignores them).
    """

    __slots__ = (
        "_apply",
        "_client_hub",
        "_finished",
        "_journal_failed",
        "core",
        "history",
        "hub",
        "journal",
        "request",
    )

    def __init__(
        self,
        gen_id: str,
        policy: Policy,
        client_hub: Hub,
        journal: Journal | None = None,
        elapsed: float = 0.0,
        expected: float | None = None,
        journal_failed: Callable[[JournalFailure], None] | None = None,
        trusted: set[str] | None = None,
        missed: set[str] | None = None,
        plans: Callable[[Plan], object] | None = None,
        probes: Probes | None = None,
    ) -> None:
        now = trio.current_time()
        self.core = Core(
            gen_id,
            policy,
            self._on_event,
            now - elapsed,
            time.time() - now,
            expected=expected,
            trusted=trusted if trusted is not None else set(),
            missed=missed if missed is not None else set(),
            probes=probes if probes is not None else Probes(),
        )
        self.journal = journal
        self.request: StartRequest | None = None
        """What was asked of the server (an image or a video); ``None`` for a resumed job."""
        self.hub = Hub()
        self.history: list[Transition] = []
        self._client_hub = client_hub
        self._journal_failed = journal_failed
        self._apply: Callable[[Plan], object] = plans or _ignore
        """Carries out what the core's calls return (the client's :class:`_Tasks`)."""
        self._finished = trio.Event()

    def __repr__(self) -> str:
        return f"<Generation {self.id} {self.state}>"

    @property
    def id(self) -> str:
        """This generation's id (local to hybridgen; the server's id is :attr:`file_id`)."""
        return self.core.id

    @property
    def state(self) -> State:
        """The current state."""
        return self.core.state

    @property
    def file_id(self) -> str | None:
        """The server's file id, once the start request returned."""
        return self.core.file_id

    def result(self) -> Result:
        """The :class:`Result` (complete once the state is terminal)."""
        return self.core.result()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for this generation's future events; returns an unsubscriber."""
        return self.hub.subscribe(callback)

    def events(self, max_buffer: int = 64) -> EventStream:
        """An async iterator over this generation's events, from its first transition on.

        Past transitions are replayed first, so a stream opened late still sees the whole path.
        It ends after the terminal event (see :class:`~hybridgen.events.EventStream` for slow
        readers).
        """
        return self.hub.stream(max_buffer, replay=self.history)

    def cancel(self, reason: str = "cancelled by the caller") -> None:
        """Cancel the generation: it moves to ``cancelled`` now; its tasks close their sockets."""
        self._apply(self.core.cancel(reason, trio.current_time()))

    async def wait(self) -> Result:
        """Wait for the terminal state and return the :class:`Result`, whatever the state."""
        await self._finished.wait()
        return self.core.result()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, Transition):
            self.history.append(event)
            if self.journal is not None:
                try:  # a journal that raises must not fail the generation it records
                    self.journal.record(self.core.id, event, self.core.file_id)
                except Exception as exc:
                    log.exception("generation %s: the journal raised", self.core.id)
                    if self._journal_failed is not None:
                        self._journal_failed(JournalFailure("record", repr(exc), self.core.id))
        if self.hub:
            self.hub.emit(event)
        if self._client_hub:
            self._client_hub.emit(event)
        if event.terminal:
            self._finished.set()


def _ignore(plan: Plan) -> None:
    """A generation driven by no client ignores its core's plans."""


class _Push:
    """One push channel's task, as the plans set it: when to connect (``at``: ``None`` closed,
    ``inf`` not yet), where it waits for that, its connection's scope while it has one, and
    whether a plan closed that connection (``closing``: its scope cancelled by the plan, not
    by the connect bound)."""

    __slots__ = ("at", "closing", "lot", "scope")

    def __init__(self, at: float) -> None:
        self.at: float | None = at
        self.lot = trio.lowlevel.ParkingLot()
        self.scope: trio.CancelScope | None = None
        self.closing = False


class _Tasks:
    """Carries a generation's plans (:class:`~hybridgen.core.Plan`) out in trio; decides nothing.

    It moves the job task's wait to the plan's moment, starts a push channel's task the first
    time a plan opens it, wakes a waiting one at its connect time, cancels a connection when a
    plan closes its channel, and cancels the generation's nursery when a plan says it ended.
    """

    __slots__ = ("_nursery", "_push", "_spawn", "_wait", "_waiter", "ended", "skip", "wake_at")

    def __init__(self) -> None:
        self.wake_at = math.inf
        """When the job task has something to do, as the last plan said."""
        self.ended = False
        self.skip: frozenset[Channel] = frozenset()
        """Channels this transport cannot open: their plans are not carried out."""
        self._wait: trio.CancelScope | None = None
        self._waiter: trio.lowlevel.Task | None = None
        """The job task while it waits in :meth:`wait` (not yet rescheduled)."""
        self._push: dict[Channel, _Push] = {}
        self._nursery: trio.CancelScope | None = None
        self._spawn: Callable[[Channel], None] | None = None

    def apply(self, plan: Plan) -> None:
        """Carry ``plan`` out."""
        if plan is NOTHING:
            return
        if plan.ended:
            self.ended = True
            waiter, self._waiter = self._waiter, None
            if waiter is not None:  # woken first: its wait returns, no Cancelled raised in it
                trio.lowlevel.reschedule(waiter)
            if self._nursery is not None:
                self._nursery.cancel()
            return
        wake = plan.wake_at
        if wake is not None:
            self.wake_at = wake
            wait = self._wait
            if wait is not None and wait.deadline != wake:  # a moved deadline costs a heap entry
                wait.deadline = wake
        for channel in plan.close:
            push = self._push.get(channel)
            if push is not None:
                push.at = None
                if push.scope is not None:
                    push.closing = True
                    push.scope.cancel()
        for channel, at in plan.open:
            push = self._push.get(channel)
            if push is not None:
                push.at = at
                if at != math.inf:
                    push.lot.unpark_all()
            elif channel not in self.skip:  # a channel's task starts once it is first opened
                self._push[channel] = _Push(at)
                if self._spawn is not None:
                    self._spawn(channel)

    def push(self, channel: Channel) -> _Push:
        """What the plans set for ``channel``'s task (which exists once a plan opened it)."""
        return self._push[channel]

    def running(self, nursery: trio.CancelScope, spawn: Callable[[Channel], None]) -> None:
        """The generation's nursery is open: ``spawn`` starts a push channel's task there
        (until :meth:`stopped`); an end already planned cancels it at once. Two calls, not a
        context manager: one generator less per generation."""
        self._nursery, self._spawn = nursery, spawn
        if self.ended:
            nursery.cancel()
        for channel in self._push:
            spawn(channel)

    def stopped(self) -> None:
        """The generation's nursery is closing: no more tasks start there."""
        self._nursery = self._spawn = None

    async def wait(self) -> None:
        """Sleep until the job task's moment, as plans move it meanwhile (at once if past), or
        until a plan says the generation ended.

        The moment is the deadline of a cancel scope, but the wait returns at it instead of
        raising ``Cancelled`` (raised and caught, an exception per poll at thousands of
        generations): the scope's own expiry reschedules the task. A cancellation from outside
        is raised as usual (should both come at once, the outer one, still in force, is raised
        at the task's next checkpoint)."""
        task = trio.lowlevel.current_task()
        with trio.CancelScope(deadline=self.wake_at) as scope:

            def abort(_: object) -> trio.lowlevel.Abort:
                self._waiter = None
                if scope.cancel_called:  # this scope's deadline: the moment has come
                    trio.lowlevel.reschedule(task)
                    return trio.lowlevel.Abort.FAILED
                return trio.lowlevel.Abort.SUCCEEDED

            self._wait, self._waiter = scope, task
            try:
                await trio.lowlevel.wait_task_rescheduled(abort)
            finally:
                self._wait = self._waiter = None


class _Slots:
    """At most ``size`` holders at once; the others wait their turn, first come first served (a
    slot given back goes straight to the first waiter, as with ``trio.CapacityLimiter``), except
    that a waiter ``ahead`` (a start request) is served before every other.

    Lighter than ``trio.CapacityLimiter`` on the path of every request: no book of borrowers, no
    ``WouldBlock`` raised (twice) per wait, no checkpoint when a slot is free (the request that
    follows has its own). The holder gives the slot back with :meth:`release`.
    """

    __slots__ = ("_ahead", "_waiting", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiting: collections.OrderedDict[trio.lowlevel.Task, None] = collections.OrderedDict()
        self._ahead: collections.OrderedDict[trio.lowlevel.Task, None] = collections.OrderedDict()

    def take(self) -> bool:
        """Take a slot if one is free now (never ahead of a waiter); whether it was taken."""
        if self.free > 0 and not self._waiting and not self._ahead:
            self.free -= 1
            return True
        return False

    async def wait(self, ahead: bool = False) -> None:
        """Wait for a slot, in turn (``ahead``: before every waiter not ahead): it is the
        caller's when this returns; a cancellation (the caller's deadline) leaves the queue
        without one."""
        task = trio.lowlevel.current_task()
        waiting = self._ahead if ahead else self._waiting
        waiting[task] = None

        def abort(_: object) -> trio.lowlevel.Abort:
            del waiting[task]
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def release(self) -> None:
        """Give a slot back: to the first waiter if there is one (its wait returns)."""
        waiting = self._ahead or self._waiting
        if waiting:
            task, _ = waiting.popitem(last=False)
            trio.lowlevel.reschedule(task)
        else:
            self.free += 1


class Client:
    """Runs generations against one server.

    ``transport`` does the I/O (:class:`~hybridgen.transport.SuperDuperTransport` for the real
    API, :class:`~hybridgen.testing.MemoryTransport` in tests); ``policy`` is the default
    :class:`~hybridgen.policy.Policy` for every generation (each call may pass its own).

    At most ``max_requests`` HTTP requests (starts and polls) of this client's generations are in
    flight at once, and at most ``max_starts`` of them are start requests; the others wait their
    turn, in order, within their generation's deadline, a start request before any poll (on a
    saturated server, a start held back by polls would hold its whole job back; polls keep the
    other ``max_requests - max_starts`` slots at least). Time spent waiting is not counted against
    ``Policy.request_timeout``, which measures the server: a start is never failed because the
    client itself was busy.

    With a ``journal`` (:mod:`hybridgen.journal`), every generation is recorded; what the journal
    fails to record is reported as a :class:`~hybridgen.events.JournalWarning` on :meth:`events`
    and :meth:`subscribe`, and leaving ``async with`` waits (within the journal's bound) for its
    queued writes.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        policy: Policy | None = None,
        journal: Journal | None = None,
        max_requests: int = MAX_REQUESTS,
        max_starts: int = MAX_STARTS,
    ) -> None:
        for name, value in (("max_requests", max_requests), ("max_starts", max_starts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        self.transport = transport
        self.policy = policy if policy is not None else Policy.default()
        self.journal = journal
        self.hub = Hub()
        self.durations = Durations()
        self._request_slots = _Slots(max_requests)
        self._start_slots = _Slots(max_starts)
        self._journal_watch: tuple[trio.lowlevel.TrioToken, Callable[[], None]] | None = None
        self.trusted: set[str] = set()
        """The push channels that have delivered a result on this client (see
        :attr:`~hybridgen.policy.Policy.trust_live_socket`)."""
        self.missed: set[str] = set()
        """The push channels that showed life while a poll found the result on this client:
        their life no longer relaxes polling (see :attr:`~hybridgen.policy.Policy.push_alive`)."""
        self.probes = Probes()
        """The push channels a quiet one opens: which generation is trying each, and which have
        spoken on this client (see :attr:`~hybridgen.policy.Policy.push_quiet`)."""
        self._observers: list[Callable[[Generation], object]] = []

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        policy: Policy | None = None,
        journal: Journal | None = None,
        max_requests: int = MAX_REQUESTS,
        max_starts: int = MAX_STARTS,
    ) -> Client:
        """A client of the real API named by ``SUPERDUPERAI_URL`` and ``SUPERDUPERAI_TOKEN``.

        The front door: :meth:`Config.from_env <hybridgen.api.Config.from_env>` reads ``env``
        (default :data:`os.environ`; a :class:`~hybridgen.errors.ConfigError` names what is
        missing or wrong), a :class:`~hybridgen.transport.SuperDuperTransport` talks to it; the
        other arguments are those of :class:`Client`::

            async with Client.from_env() as client:
                result = await client.generate("a red fox")
                await client.download(result, "fox.webp")
        """
        from .config import Config
        from .transport import SuperDuperTransport

        config = Config.from_env(env)
        return cls(
            SuperDuperTransport(config),
            policy=policy,
            journal=journal,
            max_requests=max_requests,
            max_starts=max_starts,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self.journal is not None:
                await trio.to_thread.run_sync(self.journal.flush, abandon_on_cancel=True)
        finally:
            await self.transport.aclose()

    def _watch_journal(self) -> None:
        """Have the journal's failures reported as events of this trio run."""
        token = trio.lowlevel.current_trio_token()
        if self.journal is None or (self._journal_watch and self._journal_watch[0] is token):
            return
        if self._journal_watch is not None:
            self._journal_watch[1]()

        def from_any_thread(failure: JournalFailure) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._journal_failed, failure)

        self._journal_watch = (token, self.journal.watch(from_any_thread))

    def _journal_failed(self, failure: JournalFailure) -> None:
        self.hub.emit(
            JournalWarning(
                failure.generation_id,
                failure.operation,
                failure.reason,
                failure.lost,
                trio.current_time(),
                time.time(),
            )
        )

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every event of every generation of this client."""
        return self.hub.subscribe(callback)

    def observe(self, callback: Callable[[Generation], object]) -> Callable[[], None]:
        """Call ``callback(generation)`` with each new :class:`Generation` of this client.

        It is called as the generation is made (started, or resumed), before its first event
        and before its start request, so a callback may :meth:`Generation.subscribe` and miss
        nothing (:mod:`hybridgen.otel` follows a client so). A callback that raises is logged
        and detached; the generation goes on. Returns a function that stops the calls.
        """
        self._observers.append(callback)

        def stop() -> None:
            if callback in self._observers:
                self._observers.remove(callback)

        return stop

    def events(self, max_buffer: int = 1024) -> EventStream:
        """An async iterator over every generation's events from now on (until closed)."""
        return self.hub.stream(max_buffer, follows=None)

    async def generate(
        self,
        request: StartRequest | str,
        *,
        policy: Policy | None = None,
        on_event: Subscriber | None = None,
    ) -> Result:
        """Run one generation to its end and return its :class:`Result`.

        ``request`` is an :class:`~hybridgen.api.ImageRequest`, a
        :class:`~hybridgen.video.VideoRequest` (sent as it is: :meth:`generate_video` checks
        one against the model list first) or just a prompt (an image). Raises
        :class:`~hybridgen.errors.GenerationFailed` if it fails (the result is on the error) and
        :class:`~hybridgen.errors.GenerationCancelled` if it was cancelled through its handle.
        """
        request = _as_request(request)
        gen, tasks = self._new(policy, request)
        if on_event is not None:
            gen.subscribe(on_event)
        await self._drive(gen, tasks, request.project_id, request)
        result = gen.result()
        if result.state is State.DONE:
            return result
        if result.state is State.FAILED:
            raise GenerationFailed(result)
        raise GenerationCancelled(result)

    async def start(
        self,
        request: StartRequest | str,
        *,
        policy: Policy | None = None,
        meta: Mapping[str, str] | None = None,
        generation_id: str | None = None,
        task_status: trio.TaskStatus[Generation] = trio.TASK_STATUS_IGNORED,
    ) -> Result:
        """Run one generation as a task: ``gen = await nursery.start(client.start, request)``.

        The :class:`Generation` handle comes back before any of its events (a callback
        subscribed at once misses none; the start request may be on its way already); the task
        ends with the generation and returns its :class:`Result` (it does not raise on failure).
        ``meta`` is stored with the generation in the client's journal (e.g. where to save it).
        ``generation_id`` starts a job already in the journal, leased by this client's journal
        (a queued one, see :class:`~hybridgen.worker.Worker`): it is not begun again.
        """
        request = _as_request(request)
        if generation_id is None:
            gen, tasks = self._new(policy, request, meta)
        else:
            gen, tasks = self._new(policy, gen_id=generation_id)
        task_status.started(gen)
        await self._drive(gen, tasks, request.project_id, request)
        return gen.result()

    async def plan_video(
        self, prompt: str, *, policy: Policy | None = None, **options: Unpack[VideoOptions]
    ) -> VideoPlan:
        """Check a video against the server's model list and upload its source: a
        :class:`VideoPlan` ready to start, with its price. No job is started.

        The model list (``GET /api/v1/generation-config``) must name ``model`` as a video model
        that allows ``duration``; an image-to-video (or video-to-video) model needs ``image`` and
        a text-to-video model refuses one; a price over ``max_cost`` (or no price, when
        ``max_cost`` is given) is refused too. Each refusal is a
        :class:`~hybridgen.errors.VideoRefused` listing the allowed values, raised before any
        upload or job. ``image`` is a local file (uploaded: ``POST /api/v1/file/upload``) or the
        id of a file on the server (an upload, an earlier generation's file). A transport without
        a model list skips the checks (the plan's ``model`` is then ``None``).
        """
        bound = (policy or Policy.video()).request_timeout
        image, max_cost = options.get("image"), options.get("max_cost")
        source = None if image is None else source_of(image)
        request = VideoRequest(
            prompt=prompt,
            model=options.get("model", DEFAULT_VIDEO_MODEL),
            duration=options.get("duration", 5),
            aspect_ratio=options.get("aspect_ratio", "16:9"),
            image=source if isinstance(source, str) else None,
            seed=options.get("seed"),
            negative_prompt=options.get("negative_prompt"),
        )
        duration = request.duration
        info: ModelInfo | None = None
        lister = getattr(self.transport, "models", None)
        if lister is not None:
            models = await self._bounded(bound, "the model list", lister, VIDEO_KINDS)
            info = check_video(
                request if source is None else attrs.evolve(request, image="upload"), models
            )
        cost = None if info is None else info.cost(duration)
        if info is not None:
            cost = check_cost(info, duration, max_cost)
        elif max_cost is not None:
            raise VideoRefused("max_cost", "this transport has no model list to price the video")
        if isinstance(source, Path):
            upload = getattr(self.transport, "upload", None)
            if upload is None:
                raise ConfigError("image", "this transport cannot upload files; pass a file id")
            data, kind = await trio.to_thread.run_sync(_read_source, source)
            timeout = (policy or Policy.video()).download_timeout
            file_id = await self._bounded(
                timeout,
                "the upload",
                functools.partial(upload, data, filename=source.name, content_type=kind),
            )
            request = attrs.evolve(request, image=file_id)
        return VideoPlan(request, info, cost)

    async def generate_video(
        self,
        prompt: str,
        *,
        policy: Policy | None = None,
        on_event: Subscriber | None = None,
        **options: Unpack[VideoOptions],
    ) -> Result:
        """Make one video: :meth:`plan_video` (checks, upload), then the same machine, events
        and channels as an image, under ``policy`` (default :meth:`Policy.video`, not the
        client's image policy). Returns the :class:`Result`; save it with
        ``await client.download(result, "out.mp4", media="video")``. Raises like
        :meth:`generate`, and :class:`~hybridgen.errors.VideoRefused` before any job.
        """
        plan = await self.plan_video(prompt, policy=policy, **options)
        return await self.generate(plan.request, policy=policy or Policy.video(), on_event=on_event)

    async def _bounded(
        self, seconds: float, what: str, call: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        """``await call(*args)`` within ``seconds``; a transport error stays typed."""
        with trio.move_on_after(seconds):
            return await call(*args)
        raise TransientError(f"{what} took longer than {seconds:g} s")

    async def submit(
        self,
        request: ImageRequest | str,
        *,
        policy: Policy | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> str:
        """Queue a job in the client's journal for a :class:`~hybridgen.worker.Worker` to run
        (nothing is sent now); its generation id.

        The journal must be a queue (:class:`~hybridgen.journal_pg.PostgresJournal`, or a
        :class:`~hybridgen.journal.SQLiteJournal` for workers on one machine); raises
        :class:`~hybridgen.errors.JournalError` when it is not, or cannot store the job.
        """
        submit = getattr(self.journal, "submit", None)
        if submit is None:
            raise JournalError(
                "Client.submit needs a journal that is a queue (a PostgresJournal or a "
                f"SQLiteJournal); this client has {self.journal!r}"
            )
        job: str = await trio.to_thread.run_sync(
            submit, _as_request(request), policy or self.policy, dict(meta or {})
        )
        return job

    async def resume(
        self,
        file_id: str,
        project_id: str,
        *,
        elapsed: float = 0.0,
        generation_id: str | None = None,
        policy: Policy | None = None,
        task_status: trio.TaskStatus[Generation] = trio.TASK_STATUS_IGNORED,
    ) -> Result:
        """Finish a generation whose job already exists on the server, e.g. after a restart.

        No start request is sent: the generation begins as accepted for ``file_id`` (listening
        on ``project_id``'s socket and polling as its policy says), ``elapsed`` seconds into its
        deadline. Use it with ``nursery.start`` like :meth:`start`; returns the :class:`Result`.
        See :mod:`hybridgen.journal` for finding what to resume: with a journal and a
        ``generation_id``, the journal entry is claimed first, and
        :class:`~hybridgen.errors.LeaseHeld` is raised (before anything is sent) while another
        live process runs it.
        """
        if self.journal is not None and generation_id is not None:
            await trio.to_thread.run_sync(self.journal.claim, generation_id, abandon_on_cancel=True)
        gen, tasks = self._new(policy, gen_id=generation_id, elapsed=elapsed)
        task_status.started(gen)
        await self._drive(gen, tasks, project_id, file_id)
        return gen.result()

    async def download(
        self,
        result: Result | str,
        path: str | os.PathLike[str],
        *,
        convert: str | None = None,
        limit: int | None = None,
        policy: Policy | None = None,
        media: Media = "image",
        announced_at: float | None = None,
        on_event: Subscriber | None = None,
        generation_id: str | None = None,
    ) -> SavedFile:
        """Save a done generation's file (or the file at a URL) to ``path``; a :class:`SavedFile`.

        The format is read from the bytes: ``SavedFile.content_type`` says what was saved. The
        bytes are kept as they are unless ``convert`` names a format (``"png"``, ``"jpeg"``,
        ``"webp"``, ``"gif"``); a ``path`` without a suffix gets the true one. The download streams
        to a temporary file beside ``path`` (at most ``limit`` bytes), must be an image, and then
        replaces ``path`` atomically. It follows redirects and is tried again, with backoff,
        after what can be transient (see :func:`hybridgen.files.download`), all within the
        policy's ``download_timeout``; a 403/404 counts as transient within
        ``download_propagation`` of ``announced_at`` (trio time the result was announced;
        ``None``: now). Each retry is a :class:`~hybridgen.events.Retry` (``what="download"``)
        for ``on_event`` and this client's subscribers. Any failure raises
        :class:`~hybridgen.errors.DownloadError` (its ``url`` and ``kind`` say which file and
        why); nothing is left behind. ``media="video"`` saves a video instead (MP4, QuickTime
        or WebM from its bytes, never converted; ``limit`` defaults to
        :data:`~hybridgen.files.VIDEO_DOWNLOAD_LIMIT` then, else to
        :data:`~hybridgen.files.DOWNLOAD_LIMIT`); a body that breaks off is resumed by range.
        ``generation_id`` names the generation in the retry events when ``result`` is a URL
        (default: the result's own id, or ``""`` for a URL).
        """
        convert_target(convert)  # an unknown format, or no Pillow: said before any I/O
        if limit is None:
            limit = VIDEO_DOWNLOAD_LIMIT if media == "video" else DOWNLOAD_LIMIT
        url = result if isinstance(result, str) else result.url
        if not url:
            assert isinstance(result, Result)
            raise DownloadError(
                f"generation {result.generation_id} has no file to download (it ended "
                f"{result.state})",
                url="",
                kind="no_result",
            )
        if generation_id is None:
            generation_id = "" if isinstance(result, str) else result.generation_id
        hub = Hub()
        if on_event is not None:
            hub.subscribe(on_event)

        def retried(attempt: int, delay: float, error: TransportError) -> None:
            now = trio.current_time()
            status = getattr(error, "status", None)
            event = Retry(
                generation_id, "download", attempt, delay, str(error), now, time.time(), status
            )
            hub.emit(event)
            self.hub.emit(event)

        return await download(
            self.transport,
            url,
            path,
            policy=policy or self.policy,
            limit=limit,
            convert=convert,
            media=media,
            reopen=_resumer(self.transport, url, limit),
            announced_at=announced_at,
            on_retry=retried,
        )

    def _new(
        self,
        policy: Policy | None,
        request: StartRequest | None = None,
        meta: Mapping[str, str] | None = None,
        *,
        gen_id: str | None = None,
        elapsed: float = 0.0,
    ) -> tuple[Generation, _Tasks]:
        """A new generation and what carries its plans out; a fresh one (with ``request``) is
        recorded in the journal."""
        self._watch_journal()
        tasks = _Tasks()
        if not hasattr(self.transport, "listen_sse"):
            tasks.skip = frozenset({Channel.SSE})  # a transport without SSE never starts its task
        gen = Generation(
            gen_id
            or os.urandom(8).hex(),  # 16 hex digits, as uuid4().hex[:16] (a fifth of the time)
            policy or self.policy,
            self.hub,
            self.journal,
            elapsed,
            None,  # the history of durations is read when the start reply comes (_run_job)
            self._journal_failed,
            self.trusted,
            self.missed,
            tasks.apply,
            self.probes,
        )
        gen.request = request
        for observer in tuple(self._observers):
            try:
                observer(gen)
            except Exception:
                log.exception("observer %r raised; it is detached", observer)
                if observer in self._observers:
                    self._observers.remove(observer)
        if self.journal is not None and request is not None:
            wall = gen.core.started + gen.core.wall_offset
            try:
                self.journal.begin(gen.id, request, gen.core.policy, wall, meta or {})
            except Exception as exc:
                log.exception("generation %s: the journal raised", gen.id)
                self._journal_failed(JournalFailure("begin", repr(exc), gen.id))
        return gen, tasks

    async def _drive(
        self, gen: Generation, tasks: _Tasks, project_id: str, job: StartRequest | str
    ) -> None:
        core = gen.core
        try:
            async with trio.open_nursery() as nursery:

                def spawn_push(channel: Channel) -> None:
                    nursery.start_soon(self._push_task, core, tasks, channel, project_id)

                tasks.running(nursery.cancel_scope, spawn_push)
                try:
                    tasks.apply(core.plan())  # starts the push tasks wanted now (others later)
                    await self._run_job(core, tasks, job, duration_key(gen.request))
                finally:
                    tasks.stopped()
                nursery.cancel_scope.cancel()
        except Exception as exc:
            # A bug in a task or a transport must not escape as a crash of the caller's nursery.
            log.exception("generation %s: internal error", core.id)
            tasks.apply(core.fail(f"internal error: {exc!r}", trio.current_time()))
        finally:
            if not core.terminal:  # left by trio cancellation (or KeyboardInterrupt)
                tasks.apply(core.cancel("cancelled by the caller", trio.current_time()))
        ready = core.ready_after
        if ready is not None and not isinstance(job, str):  # a resumed job's time is partial
            self.durations.add(ready[0], unsure=ready[1], key=duration_key(gen.request))

    async def _run_job(
        self, core: Core, tasks: _Tasks, job: StartRequest | str, kind: Hashable
    ) -> None:
        """The job, in the generation's own task: start it (or take the resumed one), then wait
        for each poll or timer the core sets (the deadline, the end of the push-only wait, a
        quiet push channel) and do it, until the core is terminal. The history of durations of
        jobs of this ``kind`` is read at the start reply: what was learned while the start
        waited its turn counts."""
        policy = core.policy
        # first a checkpoint: a caller of start() runs (with its handle) before the start's reply
        # can come, and a cancellation already due ends the generation here, as cancelled
        await trio.lowlevel.checkpoint()
        history = None
        if isinstance(job, str):  # resumed: the server already has the job (since when, unknown)
            file = FileStatus(job)
        else:
            started = await self._start_job(core, tasks, job)
            if started is None:
                return
            file = started
            history = self.durations.expected(kind)
        tasks.apply(core.accepted(file, trio.current_time(), history))
        log.debug("generation %s: job accepted as file %s", core.id, file.id)
        file_id = file.id
        while not core.terminal:
            now = trio.current_time()
            if core.next_timer() <= now:
                tasks.apply(core.advance(now))
                if not core.terminal and core.next_timer() <= now:
                    # a core that does not move its timer on would spin this loop forever
                    raise RuntimeError(f"core.advance({now}) left a timer due now")
                continue
            if not core.poll_due(now):
                await tasks.wait()  # a push (another task) may move the poll or the timer
                continue
            tasks.apply(core.poll_sent(now))
            try:
                file = await self._in_turn(
                    (self._request_slots,),
                    core.deadline_at,
                    policy.request_timeout,
                    functools.partial(self.transport.poll, file_id),
                )
            except (TransportError, trio.TooSlowError) as exc:
                error = _transport_error(exc, "poll")
                log.debug("generation %s: poll failed: %s", core.id, error)
                now = trio.current_time()
                tasks.apply(core.advance(now))
                tasks.apply(core.poll_error(error, now))
            else:
                tasks.apply(core.poll_reply(file, trio.current_time()))

    @staticmethod
    async def _in_turn(
        slots: tuple[_Slots, ...],
        deadline: float,
        request_timeout: float,
        request: Callable[[], Awaitable[FileStatus]],
        ahead: bool = False,
    ) -> FileStatus:
        """Send ``request`` once a slot of each limiter is ours (``ahead``: before the requests
        waiting that are not, see :meth:`_Slots.wait`).

        Waiting for the slots is bounded by ``deadline`` alone; ``request_timeout`` starts when the
        request is sent. Raises ``trio.TooSlowError`` when either runs out. One cancel scope per
        exchange: a wait for a slot runs in the scope the request then runs in, its deadline
        moved to the request's bound once the slots are taken.
        """
        held: list[_Slots] = []
        try:
            for limiter in slots:
                if not limiter.take():
                    break
                held.append(limiter)
            if len(held) == len(slots):  # no wait: the request's own bound from the start
                with trio.CancelScope(
                    deadline=min(deadline, trio.current_time() + request_timeout)
                ):
                    return await request()
                raise trio.TooSlowError  # reached only when the scope cancelled the request
            with trio.CancelScope(deadline=deadline) as scope:
                for limiter in slots[len(held) :]:
                    if not limiter.take():
                        await limiter.wait(ahead)  # returns with the slot ours, or raises
                    held.append(limiter)
                scope.deadline = min(deadline, trio.current_time() + request_timeout)
                return await request()
            raise trio.TooSlowError  # the wait for a slot or the request ran out of time
        finally:
            for limiter in reversed(held):
                limiter.release()

    async def _start_job(
        self, core: Core, tasks: _Tasks, request: StartRequest
    ) -> FileStatus | None:
        """Send the start request, again as long as the core says so; ``None`` once it failed."""
        policy = core.policy
        while not core.terminal:
            try:
                return await self._in_turn(
                    (self._start_slots, self._request_slots),
                    core.deadline_at,
                    policy.request_timeout,
                    functools.partial(self.transport.start, request),
                    ahead=True,  # a start held back by polls would hold its whole job back
                )
            except (TransportError, trio.TooSlowError) as exc:
                now = trio.current_time()
                tasks.apply(core.advance(now))  # at the deadline, the deadline is the reason
                tasks.apply(core.start_failed(_transport_error(exc, "start request"), now))
            if core.next_start is None:
                return None
            log.debug("generation %s: start request sent again at %s", core.id, core.next_start)
            await trio.sleep_until(core.next_start)
        return None

    async def _push_task(
        self, core: Core, tasks: _Tasks, channel: Channel, project_id: str
    ) -> None:
        """Keep push ``channel`` open while the plans say so; feed the core every message."""
        policy = core.policy
        name = "WebSocket" if channel is Channel.WEBSOCKET else "SSE"
        push = tasks.push(channel)
        woke = True  # this task has just started, or been woken: no checkpoint owed
        while not core.terminal:
            at = push.at
            if at is None or at == math.inf:
                await push.lot.park()  # the terminal state cancels this wait with the nursery
                woke = True
                continue
            if at > trio.current_time():
                await trio.sleep_until(at)
            elif not woke:  # a connect due at once: a plain checkpoint (a deadline in the past
                await trio.lowlevel.checkpoint()  # would be a cancellation, raised and caught)
            woke = False
            if push.at is None:  # closed meanwhile
                continue
            permanent = False
            reason = (
                "the server closed the WebSocket"
                if channel == "websocket"
                else "the server ended the SSE stream"
            )
            # One scope per connection: its deadline is the connect bound, lifted once connected
            # (it encloses the whole `async with`: listen() may open a nursery, as trio-websocket
            # does, which must close inside the scope it opened in); a plan that closes the
            # channel cancels it (and says so: push.closing).
            connect_by = min(core.deadline_at, trio.current_time() + policy.request_timeout)
            with trio.CancelScope(deadline=connect_by) as scope:
                push.scope, push.closing = scope, False
                try:
                    async with self._open(channel, project_id, core.file_id) as messages:
                        scope.deadline = math.inf
                        tasks.apply(core.push_up(channel, trio.current_time()))
                        await _read(core, tasks, channel, messages)
                except TransportError as exc:
                    reason = str(_transport_error(exc, f"{name} connect"))
                    # e.g. 404: a server without this channel; asking again cannot help
                    permanent = isinstance(exc, PermanentError)
            push.scope = None
            if core.terminal:  # its own result (or another channel's) ended the generation
                return
            if scope.cancelled_caught:
                if push.closing:
                    tasks.apply(core.push_closed(channel, trio.current_time()))
                    continue
                reason = f"{name} connect timed out"
            log.debug("generation %s: %s down: %s", core.id, name, reason)
            tasks.apply(core.push_down(channel, reason, trio.current_time(), permanent=permanent))

    def _open(
        self, channel: str, project_id: str, file_id: str | None
    ) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        if channel == "websocket":
            return self.transport.listen(project_id)
        assert file_id is not None  # the core wants SSE only once the file is known
        return self.transport.listen_sse(file_id)


async def _read(core: Core, tasks: _Tasks, channel: Channel, messages: AsyncIterator[str]) -> None:
    """Hand every push message of one connection to the core; skip what cannot be used."""
    about = core.file_id if channel == "sse" else None  # the file's own stream: its messages
    while True:
        try:
            text = await messages.__anext__()
        except StopAsyncIteration:
            return
        except OversizedMessage as exc:
            log.debug("generation %s: ignored a %s message: %s", core.id, channel, exc)
            continue
        if not text:  # a keep-alive (hybridgen.sse.HEARTBEAT): the stream is alive
            tasks.apply(core.push_heartbeat(channel, trio.current_time()))
            continue
        try:
            message = parse_push(text, about)
        except TransientError as exc:
            log.debug("generation %s: ignored a %s message: %s", core.id, channel, exc)
            continue
        if message is not None:
            tasks.apply(core.push(channel, message, trio.current_time()))
            if core.terminal:  # the result came: leave without a Cancelled through the stream
                return


class _Book:
    """The recent durations of one kind of job, and how many unsure ones came last in a row."""

    __slots__ = ("recent", "unsure_run")

    def __init__(self, keep: int) -> None:
        self.recent: collections.deque[float] = collections.deque(maxlen=keep)
        self.unsure_run = 0


class Durations:
    """How long this client's recent generations took, per kind of job: the expected duration of
    the next one of the same kind.

    The kind (:func:`duration_key`) is the request's type and model, and a video's duration: a
    client that makes images and 10-minute videos does not expect its images to take minutes.
    """

    __slots__ = ("_books", "_keep")

    def __init__(self, keep: int = 32) -> None:
        self._keep = keep
        self._books: dict[Hashable, _Book] = {}

    def add(self, seconds: float, *, unsure: bool = False, key: Hashable = None) -> None:
        """Record the duration of a generation of kind ``key`` that ended ``done``; ``unsure``:
        its result may have been ready well before (a poll found it after a quiet wait)."""
        book = self._books.get(key)
        if book is None:
            if len(self._books) >= _KINDS_KEPT:
                self._books.pop(next(iter(self._books)))  # the oldest kind first
            book = self._books[key] = _Book(self._keep)
        book.recent.append(seconds)
        book.unsure_run = book.unsure_run + 1 if unsure else 0

    def expected(self, key: Hashable = None) -> float | None:
        """The shortest recent duration of kind ``key`` (``None`` before three are known, or
        after ``UNSURE`` unsure ones in a row: the next generation polls at the full cadence
        once, so that jobs grown faster than history are measured again).

        The shortest, not the median: adaptive polling turns dense from this moment on, so a job
        as fast as the fastest recent one is still caught within about one poll interval.
        """
        book = self._books.get(key)
        if book is None:
            return None
        if len(book.recent) < 3 or book.unsure_run >= UNSURE:
            return None
        return min(book.recent)


def duration_key(request: StartRequest | None) -> Hashable:
    """The kind of job whose durations :class:`Durations` keeps together: ``("image", model)``,
    ``("video", model, duration)``, or ``None`` (a generation taken over without its request)."""
    if isinstance(request, VideoRequest):
        return ("video", request.model, request.duration)
    if isinstance(request, ImageRequest):
        return ("image", request.model)
    return None


_KINDS_KEPT: Final = 64
"""The kinds of job :class:`Durations` keeps at most (the oldest forgotten first)."""


UNSURE: Final = 2
"""Unsure durations in a row (:meth:`Durations.add`) after which the next generation expects
nothing: without it, jobs grown faster than the client's history would be found at the end of
each quiet wait and recorded there, so history would never learn that they are faster."""


def _as_request(request: StartRequest | str) -> StartRequest:
    if isinstance(request, ImageRequest | VideoRequest):
        return request
    return ImageRequest(prompt=request)  # checks it: a prompt of another type is refused


def _transport_error(
    exc: TransportError | trio.TooSlowError, what: str
) -> TransientError | PermanentError:
    if isinstance(exc, trio.TooSlowError):
        return TransientError(f"{what} timed out")
    if isinstance(exc, TransientError | PermanentError):
        return exc
    return TransientError(str(exc))


@attrs.frozen
class VideoPlan:
    """A video checked and ready to start (:meth:`Client.plan_video`): the ``request`` (its
    source uploaded), the ``model`` the server lists for it and the ``cost`` (the model's
    price per second times the duration; ``None`` when unknown)."""

    request: VideoRequest
    model: ModelInfo | None
    cost: float | None


def _resumer(transport: Transport, url: str, limit: int) -> Reopen | None:
    """How to reopen ``url`` from a byte on (a range request), if the transport's ``fetch``
    takes ``start`` (hybridgen's transports do); ``None`` otherwise (no resume)."""
    try:
        takes = "start" in inspect.signature(transport.fetch).parameters
    except (TypeError, ValueError):
        takes = False
    if not takes:
        return None
    fetch: Any = transport.fetch
    return lambda start: cast(
        AbstractAsyncContextManager[AsyncIterator[bytes]], fetch(url, limit=limit, start=start)
    )


def _read_source(path: Path) -> tuple[bytes, str]:
    """A source file's bytes and type (from its bytes), within :data:`UPLOAD_LIMIT`."""
    try:
        size = path.stat().st_size
        if size > UPLOAD_LIMIT:
            raise RequestError(
                "image", f"{path} is {size} bytes, over the upload limit of {UPLOAD_LIMIT} bytes"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise RequestError("image", f"cannot read {path}: {exc.strerror or exc}") from None
    kind = sniff(data[:64]) or sniff_video(data[:64])
    if kind is None:
        raise RequestError("image", f"{path} is neither an image nor a video (from its bytes)")
    return data, kind
