"""OpenTelemetry for hybridgen: one span per generation and its metrics (``hybridgen[otel]``).

:class:`Telemetry` follows a :class:`~hybridgen.driver.Client` or an
:class:`~hybridgen.aio.AsyncioClient` (:meth:`Telemetry.instrument`)
through the OpenTelemetry *API*: your application picks the SDK, the exporters and the providers
(by default the global ones). Each generation is one span (kind ``CLIENT``) from the moment it is
created to its terminal state; each transition is a span event, and so is each retry. Names follow
OpenTelemetry's semantic conventions where they have one:

- span name ``generate_content {model}`` and the attributes ``gen_ai.operation.name``
  (``generate_content``), ``gen_ai.provider.name`` (``superduperai``) and
  ``gen_ai.request.model`` from the GenAI conventions; ``server.address`` and ``server.port``
  from the general ones; ``error.type`` (the trigger that failed it: ``deadline``, ``error``,
  ...) and the span status ``ERROR`` (its description is the reason) on a failure;
- the duration metric ``gen_ai.client.operation.duration`` (seconds), with the same attributes;
- hybridgen's own names, under ``hybridgen.``, where the conventions have nothing:
  ``hybridgen.generation.state``, ``hybridgen.channel`` (who delivered: ``sse``,
  ``websocket``, ``polling``; ``none`` when nothing did), ``hybridgen.generation.polls``,
  ``.poll_errors``, ``.retries``, ``.push_failures``, ``.reason``, ``.id``, ``hybridgen.file_id``;
  the metrics ``hybridgen.generation.requests`` (HTTP requests a generation sent: starts and
  polls), ``hybridgen.generation.outcomes`` (a counter by state and channel) and, when the time
  the server had the result ready is known (``ready_time``), ``hybridgen.generation.latency``
  (seconds from ready to the result in hand).

Nothing recorded holds the token, the prompt or the result URL (a CDN URL may carry a signature).
Times come from the generation's own clock, so spans and metrics are right on trio's virtual
clock too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from .errors import MissingExtra
from .events import Event, Retry, Transition
from .machine import State

try:
    from opentelemetry import metrics, trace
    from opentelemetry.util.types import AttributeValue
except ModuleNotFoundError as exc:
    raise MissingExtra.of(exc, "hybridgen.otel", extra="otel") from None

if TYPE_CHECKING:
    from .aio import AsyncioClient
    from .driver import Client, Generation

__all__ = ["INSTRUMENTATION", "PROVIDER", "Telemetry"]

INSTRUMENTATION: Final = "hybridgen"
"""The instrumentation scope of hybridgen's tracer and meter."""

PROVIDER: Final = "superduperai"
"""``gen_ai.provider.name`` of every span and figure."""

OPERATION: Final = "generate_content"
"""``gen_ai.operation.name``: GenAI's operation for multimodal content generation."""

_NS: Final = 1_000_000_000

_HISTOGRAMS: Final = (
    ("gen_ai.client.operation.duration", "s", "A generation from its start to its terminal state"),
    (
        "hybridgen.generation.latency",
        "s",
        "From the server having the result ready to the client having it",
    ),
    ("hybridgen.generation.requests", "{request}", "HTTP requests (starts, polls) it sent"),
)
"""Name, unit and description of :class:`Telemetry`'s duration, latency and requests."""


def _ns(wall: float) -> int:
    return round(wall * _NS)


class Telemetry:
    """Spans and metrics of every generation of the clients it instruments (see the module).

    ``tracer_provider`` and ``meter_provider`` default to OpenTelemetry's global providers.
    ``ready_time(file_id)``, when given, returns the time (on the generation's trio clock) at
    which the server had that file's result ready, or ``None`` when unknown: then
    ``hybridgen.generation.latency`` records how long the client took to get it after that.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        ready_time: Callable[[str], float | None] | None = None,
    ) -> None:
        from ._version import __version__

        self.tracer = trace.get_tracer(INSTRUMENTATION, __version__, tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION, __version__, meter_provider)
        self.ready_time = ready_time
        self.duration, self.latency, self.requests = (
            meter.create_histogram(name, unit=unit, description=description)
            for name, unit, description in _HISTOGRAMS
        )
        self.outcomes = meter.create_counter(
            "hybridgen.generation.outcomes",
            unit="{generation}",
            description="Generations ended, by state and by the channel that delivered",
        )

    def instrument(self, client: Client | AsyncioClient) -> Callable[[], None]:
        """Follow every generation ``client`` creates from now on; returns a function that stops.

        ``client`` is a :class:`~hybridgen.driver.Client` or an
        :class:`~hybridgen.aio.AsyncioClient` (before or after it starts). A generation already
        followed is followed to its end.
        """
        server: dict[str, AttributeValue] | None = None

        def follow(gen: Generation) -> None:
            nonlocal server
            if server is None:  # an AsyncioClient has its transport once it has started
                server = _server_attributes(client.transport)
            _Followed(self, gen, server).follow()

        return client.observe(follow)


def _server_attributes(transport: object) -> dict[str, AttributeValue]:
    """``server.address`` and ``server.port`` of a transport with a configured URL."""
    server: dict[str, AttributeValue] = {}
    url = getattr(getattr(transport, "config", None), "url", None)
    if isinstance(url, str):
        parts = urlsplit(url)
        if parts.hostname:
            server["server.address"] = parts.hostname
        server["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return server


class _Followed:
    """One generation's span and figures, fed by its events."""

    def __init__(self, telemetry: Telemetry, gen: Generation, server: dict[str, AttributeValue]):
        self.telemetry = telemetry
        self.gen = gen
        request = gen.request
        self.model = request.model if request is not None else None
        self.common: dict[str, AttributeValue] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER,
            **server,
        }
        if self.model:
            self.common["gen_ai.request.model"] = self.model
        self.starts = 0 if request is None else 1  # a resumed generation sends no start
        self.retries = 0
        self.span = telemetry.tracer.start_span(
            f"{OPERATION} {self.model}" if self.model else OPERATION,
            kind=trace.SpanKind.CLIENT,
            attributes={**self.common, "hybridgen.generation.id": gen.id},
        )

    def follow(self) -> None:
        self.gen.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        if isinstance(event, Retry):
            self.retries += 1
            if event.what == "start":
                self.starts += 1
            self.span.add_event(
                "hybridgen.retry",
                {
                    "hybridgen.retry.what": event.what,
                    "hybridgen.retry.attempt": event.attempt,
                    "hybridgen.retry.delay": event.delay,
                    "hybridgen.retry.reason": event.reason,
                },
                timestamp=_ns(event.wall),
            )
        elif isinstance(event, Transition):
            attributes: dict[str, AttributeValue] = {
                "hybridgen.transition.source": str(event.source),
                "hybridgen.transition.dest": str(event.dest),
                "hybridgen.transition.trigger": str(event.trigger),
            }
            if event.detail:
                attributes["hybridgen.transition.detail"] = event.detail
            if event.channel:
                attributes["hybridgen.channel"] = event.channel
            self.span.add_event(
                f"{event.source} -> {event.dest}", attributes, timestamp=_ns(event.wall)
            )
            if event.terminal:
                self.end(event)

    def end(self, last: Transition) -> None:
        result = self.gen.result()
        channel = result.channel or "none"
        outcome: dict[str, AttributeValue] = {
            **self.common,
            "hybridgen.generation.state": str(result.state),
            "hybridgen.channel": channel,
        }
        if result.state is State.FAILED:
            outcome["error.type"] = str(last.trigger)
        span = self.span
        span.set_attributes(
            {
                **outcome,
                "hybridgen.generation.polls": result.polls,
                "hybridgen.generation.poll_errors": result.poll_errors,
                "hybridgen.generation.retries": self.retries,
                "hybridgen.generation.push_failures": result.push_failures,
                "hybridgen.generation.reason": result.reason,
            }
        )
        if result.file_id is not None:
            span.set_attribute("hybridgen.file_id", result.file_id)
        if result.state is State.FAILED:
            span.set_status(trace.StatusCode.ERROR, result.reason)
        span.end(end_time=_ns(last.wall))
        telemetry = self.telemetry
        telemetry.duration.record(result.elapsed, outcome)
        telemetry.requests.record(self.starts + result.polls, outcome)
        telemetry.outcomes.add(1, outcome)
        if result.state is State.DONE and result.file_id and telemetry.ready_time is not None:
            ready = telemetry.ready_time(result.file_id)
            if ready is not None:
                telemetry.latency.record(max(0.0, last.monotonic - ready), outcome)
