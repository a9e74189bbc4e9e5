"""hybridgen.otel: one span per generation and its metrics, read through the OpenTelemetry SDK's
in-memory exporters, on trio's virtual clock (and once over real sockets, for the token)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from hybridgen import Client, Config, ImageRequest, Policy, State, SuperDuperTransport
from hybridgen.aio import AsyncioClient
from hybridgen.emulator import Emulator, Faults, ServerModel
from hybridgen.otel import Telemetry
from hybridgen.testing import MemoryTransport, run_virtual

TOKEN = "test-token-123"  # the conftest emulator's


class Recorded:
    """A tracer and a meter provider whose spans and metrics stay in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self, ready_time: Callable[[str], float | None] | None = None) -> Telemetry:
        return Telemetry(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            ready_time=ready_time,
        )

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` (each has ``attributes``)."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def text(self) -> str:
        """Everything recorded, as text (to look for what must never be there)."""
        data = self.reader.get_metrics_data()
        metrics = data.to_json() if data is not None else ""
        return "\n".join(span.to_json() for span in self.spans()) + metrics


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    recorded = Recorded()
    yield recorded
    recorded.tracer_provider.shutdown()
    recorded.meter_provider.shutdown()


def run(
    recorded: Recorded,
    model: ServerModel,
    requests: list[ImageRequest | str],
    policy: Policy | None = None,
) -> list[Any]:
    telemetry = recorded.telemetry(lambda file_id: model.jobs[file_id].ready_at)

    async def main() -> list[Any]:
        async with Client(MemoryTransport(model), policy=policy) as client:
            telemetry.instrument(client)
            results = []
            for request in requests:
                try:
                    results.append(await client.generate(request))
                except Exception as exc:
                    results.append(exc)
            return results

    return run_virtual(main)


def test_one_span_per_generation_with_its_path_as_events(recorded: Recorded) -> None:
    model = ServerModel(Faults(ws_mode="silent", sse_mode="silent", gen_time=30))
    request = ImageRequest(prompt="a red fox", model="comfyui/flux-dev")
    (result,) = run(recorded, model, [request])
    (span,) = recorded.spans()
    assert span.name == "generate_content comfyui/flux-dev"
    assert span.kind is SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "generate_content"
    assert attrs["gen_ai.provider.name"] == "superduperai"
    assert attrs["gen_ai.request.model"] == "comfyui/flux-dev"
    assert attrs["hybridgen.generation.state"] == "done"
    assert attrs["hybridgen.channel"] == "polling"
    assert attrs["hybridgen.generation.polls"] == result.polls > 0
    assert attrs["hybridgen.generation.retries"] == 0
    assert attrs["hybridgen.file_id"] == result.file_id
    assert attrs["hybridgen.generation.id"] == result.generation_id
    assert "error.type" not in attrs
    assert span.status.status_code is StatusCode.UNSET
    names = [event.name for event in span.events]
    assert names == ["requested -> awaiting_ws", "awaiting_ws -> polling", "polling -> done"]
    triggers = [dict(e.attributes or {})["hybridgen.transition.trigger"] for e in span.events]
    assert triggers == ["start", "ws_timeout", "poll_result"]
    # virtual time: the span lasts as long as the generation did on the trio clock
    assert span.end_time is not None and span.start_time is not None
    # two clocks (the SDK's and trio's), read a moment apart: on a loaded machine, a few ms
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(result.elapsed, abs=0.05)


def test_a_failure_sets_the_error_status_and_type(recorded: Recorded) -> None:
    model = ServerModel(Faults(ws_mode="silent", sse_mode="silent", gen_time=60))
    policy = Policy.default().replace(deadline=20.0)
    (error,) = run(recorded, model, ["too slow"], policy)
    (span,) = recorded.spans()
    attrs = dict(span.attributes or {})
    assert attrs["hybridgen.generation.state"] == "failed"
    assert attrs["error.type"] == "deadline"
    assert attrs["hybridgen.channel"] == "none"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == error.result.reason == attrs["hybridgen.generation.reason"]
    assert span.name == "generate_content comfyui/flux"  # the default model
    (outcome,) = recorded.points("hybridgen.generation.outcomes")
    assert dict(outcome.attributes)["error.type"] == "deadline"


def test_retries_are_counted_and_shown_as_events(recorded: Recorded) -> None:
    model = ServerModel(
        Faults(ws_mode="silent", sse_mode="silent", gen_time=20, poll_fault="503", poll_faults=2)
    )
    (result,) = run(recorded, model, ["a fox"])
    (span,) = recorded.spans()
    retries = [e for e in span.events if e.name == "hybridgen.retry"]
    assert len(retries) == 2
    assert {dict(e.attributes or {})["hybridgen.retry.what"] for e in retries} == {"poll"}
    attrs = dict(span.attributes or {})
    assert attrs["hybridgen.generation.retries"] == 2
    assert attrs["hybridgen.generation.poll_errors"] == result.poll_errors == 2


def test_metrics_count_requests_latency_and_outcomes_by_channel(recorded: Recorded) -> None:
    model = ServerModel(Faults(ws_mode="silent", sse_mode="normal", gen_time=30))
    results = run(recorded, model, ["one", "two", "three"])
    assert all(r.state is State.DONE and r.channel == "sse" for r in results)
    (outcome,) = recorded.points("hybridgen.generation.outcomes")
    assert outcome.value == 3
    assert dict(outcome.attributes)["hybridgen.channel"] == "sse"
    assert dict(outcome.attributes)["hybridgen.generation.state"] == "done"
    (requests,) = recorded.points("hybridgen.generation.requests")
    assert requests.count == 3
    assert requests.sum == sum(1 + r.polls for r in results)  # one start each, and the polls
    (duration,) = recorded.points("gen_ai.client.operation.duration")
    assert duration.count == 3
    assert duration.sum == pytest.approx(sum(r.elapsed for r in results))
    (latency,) = recorded.points("hybridgen.generation.latency")
    assert latency.count == 3
    assert 0 <= latency.max < 0.1  # SSE delivers at once after ready (virtual time)


def test_latency_waits_for_polling_when_the_push_is_silent(recorded: Recorded) -> None:
    model = ServerModel(Faults(ws_mode="silent", sse_mode="silent", gen_time=30))
    run(recorded, model, ["a fox"])
    (latency,) = recorded.points("hybridgen.generation.latency")
    policy = Policy.default()
    assert 0 < latency.max <= policy.poll_interval * (1 + policy.jitter) + 0.01  # one poll later


def test_without_a_ready_time_there_is_no_latency(recorded: Recorded) -> None:
    telemetry = recorded.telemetry()
    model = ServerModel(Faults(gen_time=5))

    async def main() -> None:
        async with Client(MemoryTransport(model)) as client:
            telemetry.instrument(client)
            await client.generate("a fox")

    run_virtual(main)
    assert recorded.points("hybridgen.generation.latency") == []
    assert len(recorded.points("hybridgen.generation.outcomes")) == 1


def test_stopping_follows_no_new_generation(recorded: Recorded) -> None:
    telemetry = recorded.telemetry()
    model = ServerModel(Faults(gen_time=5))

    async def main() -> None:
        async with Client(MemoryTransport(model)) as client:
            stop = telemetry.instrument(client)
            await client.generate("followed")
            stop()
            await client.generate("not followed")

    run_virtual(main)
    assert len(recorded.spans()) == 1


def test_an_asyncio_client_is_followed_like_a_client(recorded: Recorded) -> None:
    """Instrumented before it starts or while it runs; stopped like a Client's."""
    model = ServerModel(Faults(gen_time=0.05, ws_mode="silent", sse_mode="normal"))  # today's

    class Configured(MemoryTransport):
        config = Config(url="https://editor.example.com:8443", token=TOKEN)

    async def main() -> None:
        client = AsyncioClient(lambda: Configured(model))
        stop = recorded.telemetry().instrument(client)  # before it starts
        async with client:
            await client.generate("followed")
            stop()
            await client.generate("not followed")
            stop_later = recorded.telemetry().instrument(client)  # while it runs
            await client.generate("followed again")
            stop_later()
            await client.generate("not followed either")

    asyncio.run(main())
    spans = recorded.spans()
    assert [dict(s.attributes or {})["hybridgen.generation.state"] for s in spans] == ["done"] * 2
    for span in spans:
        attrs = dict(span.attributes or {})
        assert attrs["server.address"] == "editor.example.com" and attrs["server.port"] == 8443
        names = [event.name for event in span.events]
        assert names[0].startswith("requested -> ") and names[-1].endswith(" -> done"), names
    assert TOKEN not in recorded.text()


async def test_over_real_sockets_the_token_is_never_recorded(
    recorded: Recorded, emulator: Emulator
) -> None:
    config = Config(url=emulator.url, token=TOKEN)
    async with Client(SuperDuperTransport(config)) as client:
        recorded.telemetry().instrument(client)
        result = await client.generate("a red fox")
    (span,) = recorded.spans()
    attrs = dict(span.attributes or {})
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == int(emulator.url.rsplit(":", 1)[1])
    text = recorded.text()
    assert TOKEN not in text
    assert result.url is not None and result.url not in text  # a CDN URL may be signed
    assert "a red fox" not in text  # nor the prompt
    json.loads(span.to_json())
