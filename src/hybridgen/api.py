"""The SuperDuperAI editor API, sans I/O: one import for all of it.

Each concern has its own module, and this one re-exports their names (the import path of earlier
versions, kept): :mod:`hybridgen.config` (where the API is, the token as a :class:`Secret`, the
environment and URL checks), :mod:`hybridgen.wire` (paths, the request and the reply models) and
:mod:`hybridgen.parse` (reading replies and push messages, :data:`TASK_STATUSES`). Nothing here
touches the network: :mod:`hybridgen.transport` does the I/O with these pieces, and
:mod:`hybridgen.emulator` serves the same shapes.
"""

from __future__ import annotations

from . import config as _config
from . import parse as _parse
from . import wire as _wire
from .config import MAX_REPLY_BYTES, Config
from .config import USER_AGENT as USER_AGENT
from .config import Secret as Secret
from .parse import REASON_CHARS as REASON_CHARS
from .parse import (
    TASK_STATUSES,
    StatusMeaning,
    error_reason,
    failure_reason,
    load_json,
    parse_file,
    parse_file_list,
    parse_generation_configs,
    parse_poll_reply,
    parse_push,
    parse_start_reply,
    parse_ws_message,
    status_meaning,
    status_phrase,
)
from .wire import (
    BODY_FORMS,
    GENERATE_IMAGE,
    GENERATION_CONFIGS,
    PUSH_CHANNELS,
    VIDEO_KINDS,
    BodyForm,
    FileStatus,
    ImageRequest,
    ModelInfo,
    Push,
    file_path,
    sse_path,
    subscribe_message,
    ws_path,
)
from .wire import MAX_PROMPT_CHARS as MAX_PROMPT_CHARS
from .wire import PushKind as PushKind

__all__ = [
    "BODY_FORMS",
    "GENERATE_IMAGE",
    "GENERATION_CONFIGS",
    "PUSH_CHANNELS",
    "MAX_REPLY_BYTES",
    "VIDEO_KINDS",
    "TASK_STATUSES",
    "BodyForm",
    "FileStatus",
    "ModelInfo",
    "Push",
    "ImageRequest",
    "Config",
    "StatusMeaning",
    "error_reason",
    "failure_reason",
    "file_path",
    "load_json",
    "parse_file",
    "parse_file_list",
    "parse_generation_configs",
    "parse_push",
    "parse_poll_reply",
    "parse_start_reply",
    "status_meaning",
    "status_phrase",
    "parse_ws_message",
    "sse_path",
    "subscribe_message",
    "ws_path",
]


def __getattr__(name: str) -> object:
    """The old module's other names (``log``, ``_clip``, ...), from their new homes."""
    if not name.startswith("__"):
        for home in (_config, _wire, _parse):
            if hasattr(home, name):
                return getattr(home, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
