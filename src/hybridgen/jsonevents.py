"""The JSON objects that describe events: what ``hybridgen generate --json`` prints, one a line.

The command line and the inspector (:mod:`hybridgen.inspector`, whose ``/events`` stream carries
the same objects) both build them here, so the two never disagree. Every object has an ``"event"``
key naming its kind and an ``"id"`` (the generation's id); ``"at"`` is seconds since that
generation's start request (or its first event, when the start request is not known).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from .events import Event, JournalWarning, Progress, Retry, Transition

__all__ = ["event_json", "number", "result_json"]


def number(value: float) -> float:
    """A time or duration as it appears in the JSON objects (rounded to the microsecond)."""
    return round(value, 6)


def _kind(event: object) -> str:
    # an event kind this module does not know yet: its class name in snake case
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(event).__name__).lower()


def event_json(event: Event, at: float) -> dict[str, Any]:
    """The JSON object of an event, ``at`` seconds into its generation's run.

    ``{"event": "transition", "id", "from", "to", "trigger", "at"}``, ``{"event": "progress",
    "id", "fraction", "via", "remaining", "at"}`` (``remaining``: seconds left, estimated, or
    ``null``), ``{"event": "retry", "id", "what", "attempt", "delay",
    "reason", "at"}`` or ``{"event": "journal", "id", "operation", "lost", "reason", "at"}``
    (``id`` is ``null`` for a journal write about no one generation). An event kind added later
    gets its snake-cased class name as ``"event"`` and its public fields (no wall or monotonic
    clock), so nothing new is lost on the way.
    """
    if isinstance(event, Transition):
        return {
            "event": "transition",
            "id": event.generation_id,
            "from": str(event.source),
            "to": str(event.dest),
            "trigger": str(event.trigger),
            "at": number(at),
        }
    if isinstance(event, Progress):
        return {
            "event": "progress",
            "id": event.generation_id,
            "fraction": event.fraction,
            "via": event.via,
            "remaining": None if event.remaining is None else number(event.remaining),
            "at": number(at),
        }
    if isinstance(event, JournalWarning):
        return {
            "event": "journal",
            "id": event.generation_id,
            "operation": event.operation,
            "lost": event.lost,
            "reason": event.reason,
            "at": number(at),
        }
    if isinstance(event, Retry):
        return {
            "event": "retry",
            "id": event.generation_id,
            "what": event.what,
            "attempt": event.attempt,
            "delay": number(event.delay),
            "reason": event.reason,
            **({} if event.status is None else {"status": event.status}),
            "at": number(at),
        }
    fields = {
        f.name: _plain(getattr(event, f.name))
        for f in attrs.fields(type(event))
        if f.name not in ("generation_id", "monotonic", "wall")
    }
    return {"event": _kind(event), "id": event.generation_id, **fields, "at": number(at)}


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return number(value)
    return str(value)


def result_json(
    *,
    generation_id: str | None,
    state: str,
    channel: str | None,
    url: str | None,
    path: str | None,
    elapsed: float,
    reason: str,
    index: int | None = None,
    prompt: str | None = None,
    saved: bool | None = None,
    journal_lost: int | None = None,
) -> dict[str, Any]:
    """The ``result`` object that ends one generation's lines (the last line of a single run).

    ``{"event": "result", "id", "state", "channel", "url", "path", "elapsed", "reason"}``; a
    batch item also has its ``"index"`` and ``"prompt"`` (right after ``"event"``). ``reason`` is
    ``null`` when empty. The command line adds ``"saved"`` (whether the image was written:
    ``"state": "done"`` with ``"saved": false`` is done on the server but not saved, its ``url``
    kept) and, with a journal, ``"journal_lost"`` (journal writes not recorded; 0: complete).
    """
    head: dict[str, Any] = {"event": "result"}
    if index is not None:
        head |= {"index": index, "prompt": prompt}
    line = head | {
        "id": generation_id,
        "state": state,
        "channel": channel,
        "url": url,
        "path": path,
        "elapsed": number(elapsed),
        "reason": reason or None,
    }
    if saved is not None:
        line["saved"] = saved
    if journal_lost is not None:
        line["journal_lost"] = journal_lost
    return line
