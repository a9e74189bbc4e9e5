"""``--json``: one JSON object per line on stdout, for one generation or a batch.

The shape of every line (``transition``, ``progress``, ``retry``, ``result``, ``batch``) is a
contract documented in docs/cli.md: change it only with that page. Nothing but JSON goes to stdout
here; remarks and reasons go to stderr. The objects are built by :mod:`hybridgen.jsonevents` and
the builders below, which the inspector (``--inspect``) shares.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..events import Event
from ..jsonevents import event_json, number, result_json
from ._output import say, write_out
from ._report import BatchReporter, Outcome, Reporter, explain, item_explanation

if TYPE_CHECKING:
    from ._batch import BatchItem


def outcome_json(
    outcome: Outcome, item: BatchItem | None = None, journal_lost: int | None = None
) -> dict[str, Any]:
    """The ``result`` object of a generation (of a batch ``item``: with its index and prompt;
    ``journal_lost``: with a journal, how many of its writes were not recorded)."""
    return result_json(
        generation_id=outcome.generation_id,
        state=outcome.state,
        channel=outcome.channel,
        url=outcome.url,
        path=outcome.path,
        elapsed=outcome.elapsed,
        reason=outcome.reason,
        index=None if item is None else item.index,
        prompt=None if item is None else item.prompt,
        saved=outcome.saved,
        journal_lost=journal_lost,
    )


def batch_json(tally: dict[str, int], elapsed: float, **extra: int) -> dict[str, Any]:
    """The ``batch`` object that ends a batch: the totals (``extra``: e.g. ``journal_lost``,
    ``skipped``, after them)."""
    return {"event": "batch", **tally, "elapsed": number(elapsed), **extra}


class JsonReporter(Reporter):
    """One JSON object per line on stdout; remarks and reasons on stderr."""

    def event(self, event: Event) -> None:
        """Print a transition, progress or retry line."""
        write_out(json.dumps(event_json(event, self.at(event))))

    def finish(self, outcome: Outcome, trace: str | None, journal_lost: int | None = None) -> None:
        """Print the result line (the last on stdout); the trace goes to stderr."""
        write_out(json.dumps(outcome_json(outcome, journal_lost=journal_lost)))
        explain(outcome)
        if trace is not None:
            sys.stderr.write(trace)
            sys.stderr.flush()


class JsonBatchReporter(BatchReporter):
    """``--json``: event lines, a result line per item as it ends, a last ``batch`` line."""

    def note(self, message: str) -> None:
        """A side remark, on stderr."""
        say(message)

    def event(self, event: Event) -> None:
        """Print a transition, progress or retry line (with the item's ``id``)."""
        write_out(json.dumps(event_json(event, self.at(event))))

    def item(self, item: BatchItem, outcome: Outcome) -> None:
        """Print the item's result line; a failure's reason also on stderr."""
        write_out(json.dumps(outcome_json(outcome, item)))
        if outcome.path is None:
            say(f"[{item.index}] {item_explanation(outcome)}")

    def summary(
        self, tally: dict[str, int], elapsed: float, extra: Mapping[str, int] | None = None
    ) -> None:
        """Print the last line: the totals (and ``extra``'s counts)."""
        write_out(json.dumps(batch_json(tally, elapsed, **(extra or {}))))
