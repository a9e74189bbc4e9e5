"""Resume after restart: the journal records each generation; resume() finishes it by file id."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from hybridgen import Client, ImageRequest, Policy, State
from hybridgen.emulator.model import Faults, ServerModel
from hybridgen.journal import SQLiteJournal
from hybridgen.testing import MemoryTransport


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_journal_records_request_policy_and_path(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    journal = SQLiteJournal(tmp_path / "j.sqlite")
    client = Client(
        MemoryTransport(ServerModel(Faults(ws_mode="silent", gen_time=5))), journal=journal
    )
    policy = Policy.default().replace(deadline=60.0)
    request = ImageRequest(prompt="a red fox", seed=7)
    async with trio.open_nursery() as nursery:
        gen = await nursery.start(
            lambda task_status: client.start(
                request, policy=policy, meta={"out": "fox.png"}, task_status=task_status
            )
        )
    (entry,) = journal.entries()
    assert entry.id == gen.id and entry.request == request and entry.policy == policy
    assert entry.state is State.DONE and entry.channel == "polling" and entry.url
    assert entry.file_id == gen.file_id and entry.meta == {"out": "fox.png"}
    assert entry.needs_work  # done, not yet delivered
    journal.delivered(gen.id, "fox.png")
    assert journal.pending() == []
    assert journal.path_of(gen.id) == [
        ("requested", "start", "awaiting_ws"),
        ("awaiting_ws", "ws_timeout", "polling"),
        ("polling", "poll_result", "done"),
    ]


async def test_resume_finishes_without_a_new_job(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    model = ServerModel(Faults(ws_mode="silent", gen_time=40))
    path = tmp_path / "j.sqlite"
    # the first client dies 10 s in: its process is gone, the journal stays
    first = Client(MemoryTransport(model), journal=SQLiteJournal(path))
    with trio.move_on_after(10):
        await first.generate("a red fox")
    journal = SQLiteJournal(path)
    (crashed,) = journal.entries()
    # (trio cancellation recorded 'cancelled'; a SIGKILL records nothing: make it look so)
    journal._write("UPDATE generations SET state = 'polling' WHERE id = ?", (crashed.id,))
    (entry,) = journal.pending()
    assert entry.file_id is not None and entry.state is State.POLLING
    second = Client(MemoryTransport(model), journal=journal)
    result = await second.resume(
        entry.file_id,
        entry.request.project_id,
        elapsed=10.0,
        generation_id=entry.id,
        policy=entry.policy,
    )
    assert result.state is State.DONE and result.file_id == entry.file_id
    assert model.counts["start"] == 1  # no second job on the server
    assert result.elapsed == pytest.approx(40.0, abs=entry.policy.poll_interval * 1.1)
    assert journal.entries()[0].state is State.DONE


async def test_resume_respects_the_original_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    model = ServerModel(Faults(ws_mode="silent", gen_time=500))
    job = model.create(ImageRequest(prompt="x").to_json())
    client = Client(MemoryTransport(model))
    t0 = trio.current_time()
    result = await client.resume(job.id, job.project_id, elapsed=100.0, policy=Policy())
    assert result.state is State.FAILED and "deadline" in result.reason
    assert trio.current_time() - t0 == pytest.approx(20.0)
