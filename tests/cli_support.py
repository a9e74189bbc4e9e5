"""Helpers shared by the command-line tests: run the installed ``hybridgen`` in subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from PIL import Image

BIN = shutil.which("hybridgen", path=os.path.dirname(sys.executable)) or shutil.which("hybridgen")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_TIMEOUT = 30.0

needs_command = pytest.mark.skipif(BIN is None, reason="the hybridgen command is not installed")


def clean_env(**extra: str) -> dict[str, str]:
    """The test environment without any SUPERDUPERAI_* / HYBRIDGEN_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERDUPERAI_", "HYBRIDGEN_"))}
    env.update(extra)
    return env


def run(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = RUN_TIMEOUT,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``hybridgen ARGS`` to its end (within ``timeout`` seconds), in ``cwd`` if given."""
    assert BIN is not None
    return subprocess.run(
        [BIN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env() if env is None else env,
        check=False,
    )


_EVENT_LINE = re.compile(r"\s*\d+\.\d\ds  ")


def flat(text: str) -> str:
    """``text`` with every run of white space (the 80-column wrapping's too) one space."""
    return " ".join(text.split())


def unwrap(text: str) -> list[str]:
    """The lines the command meant, its plain-mode wrapping (at 80 columns) undone.

    A line indented by two spaces or more continues the one before, unless it is an event line
    (``"   1.23s  ..."``, whose own indent aligns its time).
    """
    lines: list[str] = []
    for line in text.splitlines():
        if lines and line.startswith("  ") and line.strip() and not _EVENT_LINE.match(line):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def emulator_stats(url: str, token: str) -> dict[str, int]:
    """The request counters of a ``hybridgen serve --token TOKEN`` at ``url``."""
    reply = httpx.get(
        f"{url}/_emulator/stats", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    reply.raise_for_status()
    counts: dict[str, int] = reply.json()
    return counts


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line parsed as one JSON object (fails on any other output)."""
    lines = stdout.splitlines()
    assert lines, "no output on stdout"
    return [json.loads(line) for line in lines]


def assert_png(path: Path) -> None:
    """``path`` is a whole PNG that Pillow opens, and no temporary file was left beside it."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 0 and image.size[1] > 0
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".part")] == []


class Running:
    """A subprocess whose stdout lines and stderr are collected by threads as they come."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path | None = None) -> None:
        assert BIN is not None
        self.proc = subprocess.Popen(
            [BIN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err_lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump_lines, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_lines(self, stream: IO[str]) -> None:
        for line in stream:
            self.stdout.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump(self, stream: IO[str]) -> None:
        for chunk in stream:
            self.stderr.append(chunk)
            self.err_lines.put(chunk.rstrip("\n"))
        self.err_lines.put(None)

    def _next(self, lines: queue.Queue[str | None], name: str, timeout: float) -> str:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {name} line within {timeout} s; stderr: {''.join(self.stderr)}")
        if line is None:
            pytest.fail(f"{name} closed (exit {self.proc.poll()}); stderr: {''.join(self.stderr)}")
        return line

    def line(self, timeout: float = 15.0) -> str:
        """The next stdout line, within ``timeout`` seconds."""
        return self._next(self.lines, "stdout", timeout)

    def err_line(self, timeout: float = 15.0) -> str:
        """The next stderr line, within ``timeout`` seconds."""
        return self._next(self.err_lines, "stderr", timeout)

    def until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """The next JSON line that ``match`` accepts (earlier ones are skipped)."""
        while True:
            obj: dict[str, Any] = json.loads(self.line(timeout))
            if match(obj):
                return obj

    def finish(self, timeout: float = 20.0) -> int:
        """Wait for the exit (and all output) within ``timeout`` seconds; return the exit code."""
        code = self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=timeout)
        return code

    def kill(self) -> None:
        """Kill it if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def run_on_terminal(*args: str, columns: int = 120) -> tuple[int, str, str]:
    """Run ``hybridgen ARGS`` with stderr on a pseudo-terminal (so rich draws its live view).

    Returns the exit code, stdout, and what the terminal showed (escape sequences removed).
    """
    assert BIN is not None
    master, slave = pty.openpty()
    chunks: list[bytes] = []
    try:
        proc = subprocess.Popen(
            [BIN, *args],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            env=clean_env(TERM="xterm", COLUMNS=str(columns)),
        )
        os.close(slave)

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO once the child closed the terminal
                    return
                if not chunk:
                    return
                chunks.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        stdout, _ = proc.communicate(timeout=RUN_TIMEOUT)
        reader.join(timeout=10)
    finally:
        os.close(master)
    shown = b"".join(chunks).decode("utf-8", "replace")
    return proc.returncode, stdout, re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown)


def serve_emulator(
    spawn: Callable[..., Running], token: str, *args: str
) -> tuple[str, dict[str, str]]:
    """Start ``hybridgen serve --token TOKEN ARGS``; its URL and a client environment for it."""
    server = spawn("serve", "--port", "0", "--token", token, *args)
    url = server.line(timeout=15)
    assert url.startswith("http://127.0.0.1:")
    return url, clean_env(SUPERDUPERAI_URL=url, SUPERDUPERAI_TOKEN=token)


def is_start(line: dict[str, Any]) -> bool:
    """A ``--json`` line of a generation's first transition (its start request was answered)."""
    return line.get("event") == "transition" and line.get("trigger") == "start"


@contextlib.contextmanager
def serving(*args: str) -> Iterator[tuple[Running, str]]:
    """``hybridgen serve ARGS`` in a subprocess: the process and its base URL; killed at the end."""
    process = Running("serve", *args, env=clean_env())
    try:
        url = process.line(timeout=15)
        assert url.startswith("http://127.0.0.1:")
        yield process, url
    finally:
        process.kill()
