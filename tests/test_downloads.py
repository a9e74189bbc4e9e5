"""Downloads are part of the job: retried with backoff within their own deadline, redirects
followed by the transport's rules, CDN errors named as the CDN's.

Real-socket tests run the client against the loopback emulator (its files on a second origin, like
the CDN) with its file switches; the decisions themselves are checked sans-IO; the invariant "a
done generation whose file is reachable within the download deadline always ends saved" is a
Hypothesis property on trio's virtual clock.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridgen import Client, DownloadError, Policy, RedirectError, Retry
from hybridgen.api import Config
from hybridgen.emulator import Faults, ServerModel, running
from hybridgen.errors import AuthError, PermanentError, TransientError
from hybridgen.events import Event
from hybridgen.files import download_retry_delay
from hybridgen.testing import MemoryTransport
from hybridgen.transport import MAX_REDIRECTS, SuperDuperTransport, redirect_target

TOKEN = "test-token-123"
SCALE = 0.02
FAST = (
    Policy.default()
    .scaled(SCALE)
    .replace(request_timeout=5.0, deadline=10.0, download_timeout=10.0, download_propagation=5.0)
)
"""Scaled timings; the generation, each request and the download bounded generously."""
LIMIT = 20.0
"""No test body may take longer than this (seconds): nothing can hang."""


def retries(events: list[Event]) -> list[Retry]:
    return [e for e in events if isinstance(e, Retry)]


async def generate_and_download(
    tmp_path: Path, faults: Faults, policy: Policy = FAST, *, http: bool = False
) -> tuple[Any, list[Event], ServerModel, str]:
    """A generation against the emulator, then its download: ``(saved or the error, events,
    model, result URL)``."""
    events: list[Event] = []
    with trio.fail_after(LIMIT):
        async with running(faults, time_scale=SCALE, token=TOKEN) as emulator:
            client_http = httpx.AsyncClient(timeout=None) if http else None
            transport = SuperDuperTransport(Config(url=emulator.url, token=TOKEN), http=client_http)
            async with Client(transport, policy=policy) as client:
                client.subscribe(events.append)
                result = await client.generate("a red fox")
                assert result.url is not None
                try:
                    outcome: Any = await client.download(result, tmp_path / "fox.webp")
                except DownloadError as exc:
                    outcome = exc
            if client_http is not None:
                await client_http.aclose()
    return outcome, events, emulator.model, result.url


@pytest.mark.parametrize("status", ["403", "404"])
async def test_a_cdn_refusing_a_new_file_twice_is_retried_and_saved(
    tmp_path: Path, status: str
) -> None:
    faults = Faults(gen_time=1.0, file_fault=status, file_faults=2)  # type: ignore[arg-type]
    saved, events, model, url = await generate_and_download(tmp_path, faults)
    assert saved.path == str(tmp_path / "fox.webp") and saved.size > 0
    tries = retries(events)
    assert [(r.what, r.attempt, r.status) for r in tries] == [
        ("download", 1, int(status)),
        ("download", 2, int(status)),
    ]
    host = urlsplit(url).netloc
    for retry in tries:
        assert retry.delay > 0 and f"HTTP {status} from {host}" in retry.reason
        assert "SUPERDUPERAI_TOKEN" not in retry.reason and TOKEN not in retry.reason
    assert model.counts["file_fault"] == 2 and model.counts["download"] == 1
    assert not any(auth for _, auth in model.received)  # the CDN never got the token


async def test_a_403_after_the_propagation_window_fails_at_once_naming_the_cdn(
    tmp_path: Path,
) -> None:
    faults = Faults(gen_time=1.0, file_fault="403", file_faults=10**6)
    error, events, model, url = await generate_and_download(
        tmp_path, faults, FAST.replace(download_propagation=0.0)
    )
    assert isinstance(error, DownloadError) and not isinstance(error, AuthError)
    assert error.kind == "http" and error.status == 403 and error.url == url
    assert f"HTTP 403 from {urlsplit(url).netloc} (Forbidden)" in str(error)
    assert "token" not in str(error).replace("no token is sent", "")
    assert "SUPERDUPERAI_TOKEN" not in str(error)
    assert retries(events) == [] and model.counts["file_fault"] == 1
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240


@pytest.mark.parametrize("fault", ["500", "503", "429"])
async def test_transient_cdn_failures_are_retried(tmp_path: Path, fault: str) -> None:
    faults = Faults(gen_time=1.0, file_fault=fault, file_faults=1, retry_after=5.0)  # type: ignore[arg-type]
    saved, events, model, _ = await generate_and_download(tmp_path, faults)
    assert saved.size > 0
    (retry,) = retries(events)
    assert retry.what == "download" and retry.attempt == 1
    assert retry.status == int(fault)
    if fault in ("503", "429"):  # Retry-After honoured (5 s scaled)
        assert retry.delay >= 5.0 * SCALE
    assert model.counts["file_fault"] == 1 and model.counts["download"] == 1


async def test_retries_end_within_the_download_deadline(tmp_path: Path) -> None:
    faults = Faults(gen_time=1.0, file_fault="500", file_faults=10**6)
    policy = FAST.replace(download_timeout=0.5, download_retry_delay=0.05)
    error, events, model, _ = await generate_and_download(tmp_path, faults, policy)
    assert isinstance(error, DownloadError) and error.kind == "http" and error.status == 500
    tries = retries(events)
    assert len(tries) >= 1 and f"; {len(tries) + 1} attempts" in str(error)
    assert model.counts["file_fault"] == len(tries) + 1
    # every wait fitted in the deadline: their sum is below it
    assert sum(r.delay for r in tries) < policy.download_timeout


@pytest.mark.parametrize("http", [False, True], ids=["http1", "httpx"])
async def test_a_result_url_on_the_api_redirected_to_the_cdn_is_saved_without_the_token_there(
    tmp_path: Path, http: bool
) -> None:
    faults = Faults(gen_time=1.0, file_redirect="307", file_redirect_to="origin")
    saved, events, model, url = await generate_and_download(tmp_path, faults, http=http)
    assert saved.size > 0 and retries(events) == []
    (first, first_auth), (second, second_auth) = model.received
    assert first == url and urlsplit(first).port != urlsplit(second).port
    assert (first_auth, second_auth) == (True, False)


async def test_too_many_redirects_fail_the_download_without_retries(tmp_path: Path) -> None:
    faults = Faults(gen_time=1.0, file_redirect="302", file_redirect_hops=MAX_REDIRECTS + 1)
    error, events, model, _ = await generate_and_download(tmp_path, faults)
    assert isinstance(error, DownloadError) and error.kind == "redirect"
    assert "more than 5 redirects" in str(error) and error.status == 302
    assert retries(events) == [] and len(model.received) == MAX_REDIRECTS + 1


async def test_a_generation_whose_polls_are_redirected_ends_done(tmp_path: Path) -> None:
    faults = Faults(gen_time=1.0, poll_redirect="307")
    saved, _, model, _ = await generate_and_download(tmp_path, faults, FAST.replace(push=()))
    assert saved.size > 0
    polls = [auth for url, auth in model.received if "/api/v1/file/" in url]
    assert model.counts["redirect"] >= 1 and len(polls) >= 2 and all(polls)


# -- the decisions, sans-IO ---------------------------------------------------------------------

HERE = "https://cdn.example.com/files/a.webp?X-Signature=secret"


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("/stored/a.webp", "https://cdn.example.com/stored/a.webp"),
        ("b.webp?x=1", "https://cdn.example.com/files/b.webp?x=1"),
        ("//other.example.net/a", "https://other.example.net/a"),
        ("https://s3.example.org/a#frag", "https://s3.example.org/a"),
        ("  /spaced  ", "https://cdn.example.com/spaced"),
    ],
)
def test_a_relative_location_is_resolved(location: str, target: str) -> None:
    assert redirect_target("download", [HERE], 302, location) == target


def test_an_https_to_http_redirect_is_refused() -> None:
    with pytest.raises(RedirectError) as info:
        redirect_target("download", [HERE], 301, "http://cdn.example.com/files/a.webp")
    assert info.value.why == "downgrade" and info.value.status == 301
    assert "https -> http downgrade" in str(info.value) and "secret" not in str(info.value)
    # http -> https and http -> http are fine
    assert redirect_target("poll", ["http://a.test/x"], 307, "https://a.test/y")
    assert redirect_target("poll", ["http://a.test/x"], 307, "http://b.test/y")


@pytest.mark.parametrize(
    "location", [None, "", "ftp://cdn.example.com/a", "https://user:pw@cdn.example.com/a"]
)
def test_a_location_that_cannot_be_requested_is_refused(location: str | None) -> None:
    with pytest.raises(RedirectError) as info:
        redirect_target("download", [HERE], 302, location)
    assert info.value.why == "no_location" and "pw" not in str(info.value)


def test_the_sixth_redirect_and_a_loop_are_refused_naming_the_count() -> None:
    chain = [f"https://a.test/{n}" for n in range(MAX_REDIRECTS + 1)]
    assert redirect_target("download", chain[:-1], 302, chain[-1]) == chain[-1]
    with pytest.raises(RedirectError) as info:
        redirect_target("download", chain, 302, "/next")
    assert info.value.why == "too_many" and info.value.hops == MAX_REDIRECTS
    assert "more than 5 redirects (the 6th" in str(info.value)
    with pytest.raises(RedirectError) as loop:
        redirect_target("download", chain[:3], 302, chain[1])
    assert loop.value.why == "loop" and "after 3 redirects" in str(loop.value)


async def test_the_transport_refuses_a_downgrade_over_httpx_before_sending() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://cdn.example.com/a.webp"})

    config = Config(url="https://api.example.com", token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        transport = SuperDuperTransport(config, http=http)
        with pytest.raises(RedirectError) as info:
            async with transport.fetch("https://cdn.example.com/a.webp", limit=2**20):
                pass
    assert seen == ["https://cdn.example.com/a.webp"] and info.value.why == "downgrade"


POLICY = Policy.default()


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientError("download: connection failed (reset)"), True),
        (TransientError("download: HTTP 502", status=502), True),
        (PermanentError("download: HTTP 403", status=403), True),
        (PermanentError("download: HTTP 404", status=404), True),
        (PermanentError("download: HTTP 410", status=410), False),
        (AuthError("download: HTTP 401", status=401), False),
        (DownloadError("too large", url="u", kind="too_large"), False),
        (DownloadError("html", url="u", kind="not_an_image"), False),
        (RedirectError("loop", why="loop", hops=2, status=302), False),
    ],
)
def test_what_a_download_retries(error: Any, retried: bool) -> None:
    delay = download_retry_delay(
        error, 1, 0.0, deadline=60.0, propagated=10.0, policy=POLICY, rand=lambda: 0.5
    )
    assert (delay is not None) is retried
    if retried:
        assert delay == POLICY.download_retry_delay


def test_403_is_not_retried_after_the_window_and_nothing_waits_past_the_deadline() -> None:
    forbidden = PermanentError("download: HTTP 403", status=403)
    kw: dict[str, Any] = {"deadline": 60.0, "policy": POLICY, "rand": lambda: 0.5}
    assert download_retry_delay(forbidden, 1, 10.0, propagated=10.0, **kw) is None
    busy = TransientError("download: HTTP 503", status=503, retry_after=30.0)
    assert download_retry_delay(busy, 1, 0.0, propagated=0.0, **kw) == 30.0
    assert download_retry_delay(busy, 1, 31.0, propagated=0.0, **kw) is None
    ignored = POLICY.replace(honour_retry_after=False)
    assert download_retry_delay(busy, 1, 0.0, propagated=0.0, **{**kw, "policy": ignored}) == 0.5
    # backoff grows by backoff_factor up to backoff_cap
    reset = TransientError("download: connection failed")
    delays = [download_retry_delay(reset, n, 0.0, propagated=0.0, **kw) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 16.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [("download_retry_delay", 0), ("download_retry_delay", -1.0), ("download_propagation", -1)],
)
def test_download_fields_are_validated(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Policy.default().replace(**{field: value})
    assert Policy.default().replace(download_propagation=0).download_propagation == 0


# -- the invariant, on the virtual clock --------------------------------------------------------

FAULT_KINDS = st.sampled_from(["403", "404", "429", "500", "503"])


RESUME_WAIT = 0.25
"""The wait before a body cut after new bytes is resumed (:func:`hybridgen.files.save`)."""


def worst_waits(policy: Policy, failures: int, retry_after: float) -> float:
    """The longest the waits before ``failures`` retries can take under ``policy``."""
    total = 0.0
    for n in range(failures):
        delay = min(policy.download_retry_delay * policy.backoff_factor**n, policy.backoff_cap)
        total += max(delay * (1 + policy.jitter), retry_after)
    return total


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=FAULT_KINDS,
    failures=st.integers(0, 6),
    cuts=st.integers(0, 2),
    retry_after=st.sampled_from([0.0, 0.5, 3.0]),
    redirect=st.sampled_from([None, "path", "origin"]),
    hops=st.integers(1, MAX_REDIRECTS),
    first_delay=st.sampled_from([0.1, 0.5, 2.0]),
    jitter=st.sampled_from([0.0, 0.1, 0.5]),
    slack=st.floats(0.01, 30.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_a_done_generation_whose_file_is_reachable_in_time_always_ends_saved(
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    failures: int,
    cuts: int,
    retry_after: float,
    redirect: str | None,
    hops: int,
    first_delay: float,
    jitter: float,
    slack: float,
    seed: int,
) -> None:
    policy = Policy.default().replace(download_retry_delay=first_delay, jitter=jitter)
    # reachable: the file is served by the (failures + 1)-th request (its body cut `cuts` times,
    # each resumed by range after RESUME_WAIT), and every wait (each at its longest) ends inside
    # the download deadline and, for 403/404, the window
    waits = worst_waits(policy, failures, retry_after if kind in ("429", "503") else 0.0)
    waits += cuts * RESUME_WAIT
    policy = policy.replace(download_timeout=waits + slack, download_propagation=waits + slack)
    faults = Faults(
        gen_time=5.0,
        sse_mode="normal",
        file_fault=kind,  # type: ignore[arg-type]
        file_faults=failures,
        file_cuts=cuts,
        retry_after=retry_after,
        file_redirect=None if redirect is None else "302",
        file_redirect_to=redirect or "path",  # type: ignore[arg-type]
        file_redirect_hops=hops,
    )
    folder = tmp_path_factory.mktemp("saved")
    outcome: list[Any] = []

    async def main() -> None:
        model = ServerModel(faults, seed=seed)
        events: list[Event] = []
        async with Client(MemoryTransport(model, token=TOKEN), policy=policy) as client:
            result = await client.generate("a red fox")
            began = trio.current_time()
            saved = await client.download(result, folder / "fox.webp", on_event=events.append)
            outcome.extend([saved, trio.current_time() - began, retries(events), model])

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    saved, took, tries, model = outcome
    assert saved.size > 0
    assert len(tries) == failures and model.counts["file_fault"] == failures
    assert took <= policy.download_timeout
    assert all(r.what == "download" and r.delay > 0 for r in tries)
    assert math.isclose(sum(r.delay for r in tries) + cuts * RESUME_WAIT, took, abs_tol=1e-6)
    assert model.counts["download_range"] == cuts
