"""The inspector in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven through Selenium) follows a batch against the emulator.

The jobs are held on the emulator until the page shows every generation in ``polling``, then
released a few at a time, so the test sees the highlighted states follow the generations to
``done`` without depending on how fast the machine is. The screenshot it takes is
``docs/inspector.png`` when ``HYBRIDGEN_SCREENSHOT`` names that path.

Chromium missing is a failure with instructions, not a skip: ``.ci/run`` installs it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hybridgen import Client, Config, Policy
from hybridgen.batch import run_batch
from hybridgen.core import Result
from hybridgen.emulator import Emulator, Faults
from hybridgen.inspector import Inspector, serve_inspector
from hybridgen.machine import TABLE, State
from hybridgen.transport import SuperDuperTransport

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # this machine has no network: without these Chromium keeps dialling out at every start
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1100,1160",
)
LIMIT = 60.0
"""Seconds any one wait (for the browser or the batch) may take."""
HELD = 10_000.0
"""A job length (nominal seconds) that no test waits out: jobs end when the test releases them."""

RECORDER = """
// Record, for every card, each change of its state and of what its diagram highlights.
window.seen = {};
const snap = () => {
  for (const card of document.querySelectorAll('.gen')) {
    const current = [...card.querySelectorAll('svg .state.current')].map(s => s.dataset.state);
    const last = card.querySelector('svg .edge.last');
    const entry = [card.dataset.state, current.join(','),
                   last ? last.dataset.from + '>' + last.dataset.to : ''];
    const list = window.seen[card.dataset.id] || (window.seen[card.dataset.id] = []);
    const prev = list[list.length - 1];
    if (!prev || prev.join('|') !== entry.join('|')) list.push(entry);
  }
};
snap();
new MutationObserver(snap).observe(document.getElementById('gens'),
  {subtree: true, childList: true, attributes: true});
"""

WAIT_FOR = """
// Call back once exactly `count` cards are in one of `states` (and, if `image`, show a loaded
// image): checked on every change of the cards and every image load (caught on its way down).
const [count, states, image, callback] = arguments;
const loaded = (img) => img && img.complete && img.naturalWidth > 0;
const ok = () => [...document.querySelectorAll('.gen')].filter(
  c => states.includes(c.dataset.state) && (!image || loaded(c.querySelector('img')))
).length === count;
const check = () => {
  if (!ok()) return;
  watch.disconnect(); document.removeEventListener('load', check, true); callback(true);
};
const watch = new MutationObserver(check);
watch.observe(document.getElementById('gens'), {subtree: true, childList: true, attributes: true});
document.addEventListener('load', check, true);
check();
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Selenium through the system chromedriver."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.fail(
            f"the browser test needs headless Chromium, and {', '.join(missing)} is missing: "
            "apt-get install -y chromium chromium-driver (.ci/run does it when they are missing)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hybridgen-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(LIMIT)
    driver.set_page_load_timeout(LIMIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def cards(driver: Any) -> dict[str, dict[str, Any]]:
    """What the page shows per generation: state, highlighted states, last edge, texts."""
    return {
        c["id"]: c
        for c in driver.execute_script(
            """return [...document.querySelectorAll('.gen')].map(c => ({
                 id: c.dataset.id, state: c.dataset.state,
                 current: [...c.querySelectorAll('svg .state.current')].map(s => s.dataset.state),
                 last: [...c.querySelectorAll('svg .edge.last')]
                         .map(e => [e.dataset.from, e.dataset.to]),
                 reason: c.querySelector('.reason').textContent,
                 image: (c.querySelector('img') || {}).src || null,
                 chip: c.querySelector('.chip').textContent}))"""
        )
    }


async def test_the_page_follows_a_batch_to_done_in_chromium(
    browser: Any, emulator: Emulator, tmp_path: Path
) -> None:
    run = trio.to_thread.run_sync
    model = emulator.model
    model.faults = Faults(ws_mode="silent", gen_time=HELD)  # results come by polling, when released
    config = Config(url=emulator.url, token=str(model.token))
    # quick polls, but requests as patient as by default (the machine may be busy)
    policy = Policy.default().replace(
        push_timeout=0.05,
        poll_interval=0.1,
        backoff_cap=0.5,
        sparse_interval=0.1,
        deadline=LIMIT * 3,
    )
    prompts = ["a red fox", "a lighthouse", "a paper boat", "an owl"]
    inspector = Inspector(secrets=[config.token])
    results: list[Result] = []

    def release(prompts: list[str]) -> None:
        for job in model.jobs.values():
            if job.prompt in prompts:
                job.ready_at = trio.current_time()

    def wait_for(count: int, state: str, image: bool = False) -> Callable[[], object]:
        return lambda: browser.execute_async_script(WAIT_FOR, count, [state], image)

    with trio.fail_after(LIMIT * 3):
        async with (
            Client(SuperDuperTransport(config), policy=policy) as client,
            trio.open_nursery() as nursery,
        ):
            inspector.watch(client)
            url = await nursery.start(serve_inspector, inspector)

            async def batch() -> None:
                results.extend(await run_batch(client, prompts, concurrency=len(prompts)))

            nursery.start_soon(batch)
            await run(browser.get, url)  # the batch is under way
            await run(browser.execute_script, RECORDER)
            await run(wait_for(len(prompts), "polling"))  # every job is held: all four poll
            shown = await run(cards, browser)
            assert all(c["current"] == ["polling"] for c in shown.values()), shown
            assert all(c["last"] == [["awaiting_ws", "polling"]] for c in shown.values()), shown

            release(prompts[:2])
            await run(wait_for(2, "done", image=True))
            screenshot = tmp_path / "inspector.png"
            await run(browser.save_screenshot, str(screenshot))

            release(prompts[2:])
            await run(wait_for(len(prompts), "done", image=True))
            seen = await run(browser.execute_script, "return window.seen")
            shown = await run(cards, browser)
            totals = await run(
                browser.execute_script, "return document.getElementById('totals').textContent"
            )
            nursery.cancel_scope.cancel()

    EDGES = {(str(source), str(dest)) for (source, _), dest in TABLE.items()}
    assert [r.state for r in results] == [State.DONE] * len(prompts)
    assert set(shown) == {r.generation_id for r in results}
    for gen_id, card in shown.items():
        assert card["current"] == ["done"], card
        assert card["last"] == [["polling", "done"]], card
        assert card["chip"] == "done via polling"
        assert card["image"] and card["image"].endswith(".webp")
        assert not card["reason"]
        # what the diagram highlighted followed the card's state along edges of the machine
        states = [entry[0] for entry in seen[gen_id]]
        assert [entry[1] for entry in seen[gen_id]] == states
        assert states[0] != "done" and states[-1] == "done", states
        path = [s for k, s in enumerate(states) if k == 0 or s != states[k - 1]]
        for step in itertools.pairwise(path):
            assert step in EDGES, f"{step} is no edge of the machine"
    assert "done 4" in totals and "running 0" in totals
    assert config.token.reveal() not in await run(lambda: browser.page_source)
    assert screenshot.stat().st_size > 10_000
    target = os.environ.get("HYBRIDGEN_SCREENSHOT")
    if target:
        shutil.copyfile(screenshot, target)
