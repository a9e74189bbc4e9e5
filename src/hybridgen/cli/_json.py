"""``--json``: one JSON object per line on stdout, for one generation or a batch.

The shape of every line (``transition``, ``progress``, ``retry``, ``result``, ``batch``) is a
contract documented in docs/cli.md: change it only with that page. Nothing but JSON goes to stdout
here; remarks and reasons go to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from ..events import Event, JournalWarning, Progress, Transition
from ._output import _out, _say
from ._report import Outcome, Reporter, _BatchReporter, _explain, _item_explanation, _number

if TYPE_CHECKING:
    from ._batch import _Item


def _event_json(event: Event, at: float) -> dict[str, Any]:
    """The ``--json`` line of a transition, progress, retry or journal event."""
    if isinstance(event, Transition):
        return {
            "event": "transition",
            "id": event.generation_id,
            "from": str(event.source),
            "to": str(event.dest),
            "trigger": str(event.trigger),
            "at": _number(at),
        }
    if isinstance(event, Progress):
        return {
            "event": "progress",
            "id": event.generation_id,
            "fraction": event.fraction,
            "via": event.via,
            "at": _number(at),
        }
    if isinstance(event, JournalWarning):
        return {
            "event": "journal",
            "id": event.generation_id,
            "operation": event.operation,
            "lost": event.lost,
            "reason": event.reason,
            "at": _number(at),
        }
    return {
        "event": "retry",
        "id": event.generation_id,
        "what": event.what,
        "attempt": event.attempt,
        "delay": _number(event.delay),
        "reason": event.reason,
        "at": _number(at),
    }


def _result_json(outcome: Outcome, **item: Any) -> dict[str, Any]:
    """The ``result`` line of a generation (a batch item's: with its ``index`` and ``prompt``)."""
    return {
        "event": "result",
        **item,
        "id": outcome.generation_id,
        "state": outcome.state,
        "channel": outcome.channel,
        "url": outcome.url,
        "path": outcome.path,
        "elapsed": _number(outcome.elapsed),
        "reason": outcome.reason or None,
    }


class JsonReporter(Reporter):
    """One JSON object per line on stdout; remarks and reasons on stderr."""

    def event(self, event: Event) -> None:
        """Print a transition, progress or retry line."""
        _out(json.dumps(_event_json(event, self.at(event))))

    def finish(self, outcome: Outcome, trace: str | None) -> None:
        """Print the result line (the last on stdout); the trace goes to stderr."""
        _out(json.dumps(_result_json(outcome)))
        _explain(outcome)
        if trace is not None:
            sys.stderr.write(trace)
            sys.stderr.flush()


class _JsonBatchReporter(_BatchReporter):
    """``--json``: event lines, a result line per item as it ends, a last ``batch`` line."""

    def note(self, message: str) -> None:
        """A side remark, on stderr."""
        _say(message)

    def event(self, event: Event) -> None:
        """Print a transition, progress or retry line (with the item's ``id``)."""
        _out(json.dumps(_event_json(event, self.at(event))))

    def item(self, item: _Item, outcome: Outcome) -> None:
        """Print the item's result line; a failure's reason also on stderr."""
        _out(json.dumps(_result_json(outcome, index=item.index, prompt=item.prompt)))
        if outcome.path is None:
            _say(f"[{item.index}] {_item_explanation(outcome)}")

    def summary(self, tally: dict[str, int], elapsed: float) -> None:
        """Print the last line: the totals."""
        _out(json.dumps({"event": "batch", **tally, "elapsed": _number(elapsed)}))
