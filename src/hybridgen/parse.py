"""Reading the SuperDuperAI API's replies and push messages, sans I/O.

Start and poll replies become :class:`~hybridgen.wire.FileStatus`, push messages
:class:`~hybridgen.wire.Push`, the model list :class:`~hybridgen.wire.ModelInfo`; task and file
status words are read through :data:`TASK_STATUSES`; error replies give one short printable
reason. Anything malformed is a :class:`~hybridgen.errors.TransientError`, never another error.
Unknown status words are logged on the ``hybridgen.api`` logger. :mod:`hybridgen.api` re-exports
every name.
"""

from __future__ import annotations

import http
import json
import logging
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

from ._fields import NAME_RE
from .errors import TransientError
from .wire import FileStatus, ModelInfo, Push

__all__ = [
    "REASON_CHARS",
    "TASK_STATUSES",
    "StatusMeaning",
    "error_reason",
    "failure_reason",
    "load_json",
    "parse_file",
    "parse_file_list",
    "parse_generation_configs",
    "parse_poll_reply",
    "parse_push",
    "parse_start_reply",
    "parse_ws_message",
    "status_meaning",
    "status_phrase",
]

REASON_CHARS: Final = 300
"""The longest server-given reason kept in an error message (longer ones are cut with ...)."""
_ID_CHARS: Final = 200
_URL_CHARS: Final = 16_384

log: Final = logging.getLogger("hybridgen.api")

StatusMeaning = Literal["running", "completed", "failed", "cancelled"]

TASK_STATUSES: Final[Mapping[str, StatusMeaning]] = MappingProxyType(
    {
        # The API's own words: its OpenAPI TaskStatusEnum (file tasks in lower case; project
        # tasks and SSE `task_status` messages in upper case, the same words).
        "in_progress": "running",
        "completed": "completed",
        "error": "failed",
        # Its other enums and its own clients' words (LoraStatusEnum; the editor's project
        # statuses; the failure status seen with "NSFW content detected").
        "pending": "running",
        "processing": "running",
        "canceled": "cancelled",
        "failed": "failed",
        # Job-queue words an independent server uses for the same states.
        "queued": "running",
        "in_queue": "running",
        "waiting": "running",
        "scheduled": "running",
        "created": "running",
        "submitted": "running",
        "started": "running",
        "running": "running",
        "generating": "running",
        "retry": "running",
        "retrying": "running",
        "complete": "completed",
        "done": "completed",
        "finished": "completed",
        "success": "completed",
        "succeeded": "completed",
        "failure": "failed",
        "timeout": "failed",
        "timed_out": "failed",
        "rejected": "failed",
        "expired": "failed",
        "cancelled": "cancelled",
        "aborted": "cancelled",
        "revoked": "cancelled",
    }
)
"""Every task or file status word hybridgen knows, normalised (lower case, ``-`` and spaces as
``_``), and what it means: ``running`` (keep waiting), ``completed`` (the job is done: its URL
comes with the message or from a poll), ``failed`` or ``cancelled`` (the server ended the job
without a result: the generation fails at once, with the server's words in its reason).

A word not in this table is logged once per process as a warning (``hybridgen.api``) and read as
``running``: the job is never taken for done on a word hybridgen does not know, its result URL
still ends it when it comes, and the deadline ends it otherwise."""

_ERROR_KEYS: Final = ("error", "error_message")
"""Where a task or file carries an error text: such a text fails the job unless its status says
it completed."""
_REASON_KEYS: Final = (*_ERROR_KEYS, "message", "detail", "reason")
"""Where the reason of a failed task is read, in this order."""
_WARN_LIMIT: Final = 64
_warned: set[str] = set()


def _warn_unknown(word: str) -> None:
    if word in _warned or len(_warned) > _WARN_LIMIT:
        return
    _warned.add(word)
    if len(_warned) > _WARN_LIMIT:
        log.warning("more unknown task statuses from the server; no more are logged")
        return
    log.warning(
        "unknown task status %r from the server: read as still running (the deadline bounds "
        "the wait); known statuses: hybridgen.api.TASK_STATUSES",
        word,
    )


def status_meaning(status: object) -> StatusMeaning:
    """What a task or file ``status`` means, read through :data:`TASK_STATUSES` (any case).

    A missing status (``None`` or ``""``; the API's tasks may omit it) means ``running``. Any other
    word or value not in the table is logged once per process as a warning and means
    ``running`` too: never done, never silently dropped.
    """
    if status is None:
        return "running"
    if type(status) is str:  # the usual case, a word as the table has it: no normalising
        known = TASK_STATUSES.get(status)
        if known is not None:
            return known
    word = _clip(str(status), 40).lower().replace("-", "_").replace(" ", "_")
    if not word:
        return "running"
    meaning = TASK_STATUSES.get(word)
    if meaning is None:
        _warn_unknown(word)
        return "running"
    return meaning


def failure_reason(status: str | None, error: str | None) -> str:
    """The reason of a generation the server ended: its ``error`` text, its ``status`` word.

    ``"the server reports the job failed: NSFW content detected"``, ``"the server cancelled the
    job (status 'canceled')"``; the status word is named unless it is the API's usual
    ``error``.
    """
    cancelled = status is not None and status_meaning(status) == "cancelled"
    reason = "the server cancelled the job" if cancelled else "the server reports the job failed"
    if status and status.lower() != "error":
        reason = f"{reason} (status {_clip(status, 40)!r})"
    return f"{reason}: {error}" if error else reason


def _bad(what: str, detail: str) -> TransientError:
    return TransientError(f"malformed {what} from the server: {detail}")


def _clip(text: str, limit: int = REASON_CHARS) -> str:
    """One printable line of at most ``limit`` characters (no terminal escapes from a server)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fraction(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # a 400-digit integer overflows here
    except OverflowError:
        return None
    if not math.isfinite(number):
        return None
    fraction = number / 100 if number > 1 else number
    return min(max(fraction, 0.0), 1.0)


def _task_error(task: Mapping[str, Any], keys: tuple[str, ...] = _REASON_KEYS) -> str | None:
    """The first non-empty text among ``keys`` of a task (the server's reason), clipped."""
    for key in keys:
        detail = task.get(key)
        if isinstance(detail, str) and detail.strip():
            return _clip(detail, 500)
    return None


def _task_failure(task: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    """``(status, reason)`` when a task (or file) says the job ended without a result, else
    ``None``: its status means failed or cancelled, or it carries an error text and its status
    does not say it completed."""
    status = task.get("status")
    meaning = status_meaning(status)
    if meaning == "completed" or (meaning == "running" and _task_error(task, _ERROR_KEYS) is None):
        return None
    word = _clip(str(status), 40) if status is not None and str(status) else None
    return word, _task_error(task)


def _parse_file(obj: object, what: str) -> FileStatus:
    if not isinstance(obj, dict):
        raise _bad(what, f"expected a JSON object, got {type(obj).__name__}")
    file_id = obj.get("id", obj.get("file_id"))
    if not isinstance(file_id, str | int) or isinstance(file_id, bool) or str(file_id) == "":
        raise _bad(what, "it has no 'id'")
    if len(str(file_id)) > _ID_CHARS:
        raise _bad(what, f"its 'id' is over {_ID_CHARS} characters long")
    # ``thumbnail_url`` may come before ``url``: a preview, never the result.
    url = obj.get("url")
    if url is not None and not isinstance(url, str):
        raise _bad(what, f"'url' must be a string or null, got {type(url).__name__}")
    if url is not None and len(url) > _URL_CHARS:
        raise _bad(what, f"its 'url' is over {_URL_CHARS} characters long")
    tasks = obj.get("tasks")
    carriers = [obj, *(tasks if isinstance(tasks, list) else ())]  # the file's own status too
    failure = None
    for task in carriers:
        if isinstance(task, dict):
            failure = _task_failure(task)
            if failure is not None:
                break
    return FileStatus(
        id=str(file_id),
        url=url or None,
        failed=failure is not None,
        error=failure[1] if failure is not None else None,
        progress=_fraction(obj.get("progress")),
        status=failure[0] if failure is not None else None,
    )


def parse_file(obj: object, what: str = "file object") -> FileStatus:
    """Parse one file object (``GET /api/v1/file/{id}``); raise a typed error if malformed.

    Today's replies nest objects (``image_generation``), carry ``tasks`` (a task whose status
    means failed or cancelled in :data:`TASK_STATUSES`, or that carries an ``error`` text, means
    the job failed, with its text as the reason; a ``status`` on the file itself is read the
    same way), may use integer ids and may set ``thumbnail_url`` before ``url``: only ``url`` is
    the result. Any failure while reading the
    object is a :class:`~hybridgen.errors.TransientError` ("malformed ..."), never another error.
    """
    try:
        return _parse_file(obj, what)
    except TransientError:
        raise
    except Exception as exc:  # RecursionError, OverflowError, ...: one bad reply, not a bug
        raise _bad(what, f"{type(exc).__name__}: {_clip(str(exc), 100)}") from None


def parse_file_list(data: object) -> FileStatus:
    """Parse the reply of the start request: a JSON list of file objects (the first is ours) or,
    as some servers answer, a single file object."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise _bad("start reply", "expected a non-empty JSON list of file objects")
    return parse_file(data[0], "start reply")


def _price(params: object) -> float | None:
    if not isinstance(params, dict):
        return None
    for key in ("price", "cost", "credits"):
        value = params.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _number(params: object, key: str) -> float | None:
    value = params.get(key) if isinstance(params, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _seconds_list(params: object) -> tuple[int, ...]:
    """The allowed durations: whole positive seconds, sorted (odd entries are skipped)."""
    if not isinstance(params, dict):
        return ()
    raw = params.get("available_durations", params.get("durations"))
    if not isinstance(raw, list):
        return ()
    found = {
        int(v)
        for v in raw[:100]
        if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 3600 and v == int(v)
    }
    return tuple(sorted(found))


def _shapes(params: object) -> tuple[str, ...]:
    raw = params.get("supported_aspect_ratios") if isinstance(params, dict) else None
    if not isinstance(raw, list):
        return ()
    return tuple(v for v in raw[:50] if isinstance(v, str) and re.fullmatch(r"\d{1,3}:\d{1,3}", v))


def parse_generation_configs(data: object) -> list[ModelInfo]:
    """Parse ``GET /api/v1/generation-config`` (a list, or an object with ``items``).

    Entries without a usable ``name`` are skipped; a reply that is not a list at all raises
    :class:`~hybridgen.errors.TransientError`.
    """
    if isinstance(data, dict):
        data = data.get("items", data.get("data"))
    if not isinstance(data, list):
        raise _bad("generation-config reply", "expected a JSON list of generation configs")
    models: list[ModelInfo] = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            continue
        vip = entry.get("vip_required", entry.get("is_vip", entry.get("vip", False)))
        params = entry.get("params")
        longest = _number(params, "max_duration")
        models.append(
            ModelInfo(
                name=name,
                label=str(entry.get("label") or ""),
                type=str(entry.get("type") or ""),
                price=_price(params),
                vip=vip is True,
                durations=_seconds_list(params),
                max_duration=int(longest) if longest is not None and 1 <= longest <= 3600 else None,
                price_per_second=_number(params, "price_per_second"),
                aspect_ratios=_shapes(params),
            )
        )
    return models


def load_json(what: str, body: bytes | str) -> object:
    """``json.loads`` whose every failure is a :class:`~hybridgen.errors.TransientError`.

    Invalid JSON, nesting too deep for the parser (``RecursionError``), integers too long to
    convert: each is one malformed ``what`` from the server, worth retrying, never a crash.
    """
    try:
        return json.loads(body)
    except Exception as exc:
        raise _bad(what, f"not JSON ({type(exc).__name__}: {_clip(str(exc), 100)})") from None


def parse_start_reply(body: bytes) -> FileStatus:
    """Parse the raw body of the start reply (see :func:`parse_file_list`)."""
    return parse_file_list(load_json("start reply", body))


def parse_poll_reply(body: bytes) -> FileStatus:
    """Parse the raw body of a poll reply (see :func:`parse_file`)."""
    return parse_file(load_json("poll reply", body), "poll reply")


_STATUS_NAMES: Final = {
    520: "Cloudflare: unknown error from the origin",
    521: "Cloudflare: origin server down",
    522: "Cloudflare: connection to the origin timed out",
    523: "Cloudflare: origin unreachable",
    524: "Cloudflare origin timeout",
    525: "Cloudflare: TLS handshake with the origin failed",
    526: "Cloudflare: invalid origin certificate",
}


def status_phrase(status: int) -> str:
    """A short name for an HTTP status (``"Too Many Requests"``, ``"Cloudflare origin timeout"``);
    ``""`` for an unknown one."""
    if status in _STATUS_NAMES:
        return _STATUS_NAMES[status]
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _validation_item(item: object) -> str:
    """One FastAPI validation error: ``{"loc": ["body", "config", "prompt"], "msg": ...}``."""
    if not isinstance(item, dict):
        return json.dumps(item)[:REASON_CHARS]
    loc = item.get("loc")
    parts = [str(p) for p in loc] if isinstance(loc, list) else []
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    msg = item.get("msg")
    text = msg if isinstance(msg, str) else "invalid"
    return f"{'.'.join(parts)}: {text}" if parts else text


def _reason_of(data: object, text: str) -> str:
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            detail = data.get(key)
            if isinstance(detail, str):
                return detail
            if isinstance(detail, list) and detail:
                return "; ".join(_validation_item(item) for item in detail[:5])
    return text


def error_reason(body: bytes, content_type: str | None = None) -> str:
    """What an error reply says, as one short printable line; ``""`` if nothing readable.

    A FastAPI ``detail`` list becomes ``config.prompt: field required``; a ``detail`` string is
    kept; an HTML page (a proxy's error page) gives ``""``, never its markup. The result is at
    most :data:`REASON_CHARS` characters long.
    """
    text = body[: REASON_CHARS * 64].decode("utf-8", "replace").strip()
    if not text:
        return ""
    if "html" in (content_type or "").lower() or text[:1] == "<":
        return ""
    try:
        reason = _reason_of(json.loads(text), text)
    except Exception:  # not JSON (or cut short): the text itself
        reason = text
    return _clip(reason)


def _file_id(obj: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _push_of_file(obj: object) -> Push:
    file = parse_file(obj, "push file message")
    if file.ready:
        return Push(file.id, "result", url=file.url)
    if file.failed:
        return Push(file.id, "failed", reason=file.error, status=file.status)
    # a seed-era `file` message without a url says nothing more (its clients waited on)
    return Push(file.id, "progress", progress=file.progress)


def _push_of_task(obj: Mapping[str, Any], file_id: str | None) -> Push | None:
    """A ``task`` or ``task_status`` message: the job failed, completed, or (``None``) runs."""
    file_id = _file_id(obj, "file_id") or file_id  # a task's own 'id' is not the file's
    failure = _task_failure(obj)
    if file_id is None:
        return None
    if failure is not None:
        return Push(file_id, "failed", reason=failure[1], status=failure[0])
    if status_meaning(obj.get("status")) == "completed":
        return Push(file_id, "completed")
    return None


def _push(data: object, file_id: str | None) -> Push | None:
    if not isinstance(data, dict):
        raise _bad("push message", f"expected a JSON object, got {type(data).__name__}")
    kind, obj = data.get("type"), data.get("object")
    if kind == "file":
        push = _push_of_file(obj)
        return None if push.kind == "progress" and push.progress is None else push
    if kind not in ("render_progress", "render_result", "task", "task_status"):
        return None  # unknown types (data, entity, ...) say nothing we use
    if not isinstance(obj, dict):
        raise _bad(f"{kind} message", "its 'object' is not a JSON object")
    if kind in ("task", "task_status"):
        return _push_of_task(obj, file_id)
    file_id = _file_id(obj, "file_id", "id") or file_id
    if file_id is None:
        raise _bad(f"{kind} message", "it has no 'object.file_id'")
    if kind == "render_result":
        url = obj.get("url") or obj.get("file_url")
        if url is not None and not isinstance(url, str):
            raise _bad("render_result message", f"'url' is a {type(url).__name__}")
        return Push(file_id, "result", url=url) if url else Push(file_id, "completed")
    fraction = _fraction(obj.get("progress"))
    if fraction is None:
        raise _bad("render_progress message", "it needs a numeric 'object.progress'")
    return Push(file_id, "progress", progress=fraction)


def parse_push(text: str | bytes, file_id: str | None = None) -> Push | None:
    """Parse one push message (a WebSocket message or an SSE ``data:`` payload).

    ``file`` and ``render_result`` carry the result (``object.url``, or ``object.file_url``);
    ``render_progress`` carries ``object.progress`` (0..1 or 0..100); ``task`` and
    ``task_status`` say the job ended when their status means so in :data:`TASK_STATUSES` (any
    case) or they carry an ``error`` text: failed or cancelled (``kind="failed"``, with the
    server's text and word) or completed. ``file_id`` is the file a message without
    ``object.file_id`` is about (the file's own SSE stream); ``None``: such a task message is
    ignored. Returns ``None`` for messages that say nothing we use (unknown types, tasks still
    running; an unknown status word is logged once as a warning). Anything malformed, however
    deep or odd (nesting that exhausts the recursion limit, numbers too big for a float, invalid
    UTF-8), raises :class:`~hybridgen.errors.TransientError` for the caller to log and ignore.
    """
    try:
        return _push(json.loads(text), file_id)
    except TransientError:
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as exc:
        raise _bad("push message", f"{type(exc).__name__}: {str(exc)[:200]}") from None


def parse_ws_message(text: str | bytes) -> FileStatus | None:
    """Parse one push message as a :class:`FileStatus` (kept for callers of older versions).

    Same rules as :func:`parse_push`; a ``completed`` message without a URL gives a file with
    neither ``url`` nor ``progress``.
    """
    push = parse_push(text)
    if push is None:
        return None
    return FileStatus(
        id=push.file_id,
        url=push.url,
        failed=push.kind == "failed",
        error=push.reason,
        progress=push.progress,
        status=push.status,
    )
