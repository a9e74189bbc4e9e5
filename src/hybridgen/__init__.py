"""hybridgen: get a remote generation job's result reliably and fast.

A generation is an explicit state machine (:mod:`hybridgen.machine`) whose decisions are made by a
sans-IO core (:mod:`hybridgen.core`) under a :class:`Policy`, driven by trio tasks
(:mod:`hybridgen.driver`) over a transport (:mod:`hybridgen.transport`). Every transition is an
event (:mod:`hybridgen.events`). :mod:`hybridgen.emulator` is a local server speaking the same API,
and :mod:`hybridgen.testing` the tools to test against it.

The real API in three lines (``SUPERDUPERAI_URL`` and ``SUPERDUPERAI_TOKEN`` set)::

    async with hybridgen.Client.from_env() as client:
        result = await client.generate("a red fox")
        await client.download(result, "fox.webp")

Every name a user needs is here; each loads its module when first used, so ``import hybridgen``
costs almost nothing and ``hybridgen.Client`` what the client needs (trio, not the transports'
HTTP stacks until a transport is made).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .aio import AsyncioClient
    from .batch import run_batch
    from .config import Config, Secret
    from .core import Result
    from .driver import Client, Generation
    from .errors import (
        AuthError,
        ConfigError,
        DownloadError,
        GenerationCancelled,
        GenerationFailed,
        HybridgenError,
        InvalidTransition,
        JournalError,
        LeaseHeld,
        MissingExtra,
        OversizedMessage,
        PermanentError,
        RedirectError,
        RequestError,
        TransientError,
        TransportError,
        Unreachable,
        VideoRefused,
    )
    from .events import (
        Event,
        EventStream,
        JournalWarning,
        LoggingSubscriber,
        Progress,
        Retry,
        Subscriber,
        Transition,
    )
    from .files import SavedFile
    from .journal import Entry, Journal, SQLiteJournal
    from .machine import Channel, State, Trigger
    from .policy import Policy
    from .transport import SuperDuperTransport, Transport
    from .video import VideoRequest
    from .wire import FileStatus, ImageRequest, ModelInfo
    from .worker import Worker

_HOMES: dict[str, str] = {
    "AsyncioClient": "aio",
    "Config": "config",
    "Secret": "config",
    "FileStatus": "wire",
    "ImageRequest": "wire",
    "ModelInfo": "wire",
    "run_batch": "batch",
    "Result": "core",
    "Client": "driver",
    "Generation": "driver",
    "AuthError": "errors",
    "ConfigError": "errors",
    "DownloadError": "errors",
    "GenerationCancelled": "errors",
    "GenerationFailed": "errors",
    "HybridgenError": "errors",
    "InvalidTransition": "errors",
    "JournalError": "errors",
    "LeaseHeld": "errors",
    "MissingExtra": "errors",
    "OversizedMessage": "errors",
    "PermanentError": "errors",
    "RedirectError": "errors",
    "RequestError": "errors",
    "TransientError": "errors",
    "TransportError": "errors",
    "Unreachable": "errors",
    "VideoRefused": "errors",
    "Event": "events",
    "EventStream": "events",
    "JournalWarning": "events",
    "LoggingSubscriber": "events",
    "Progress": "events",
    "Retry": "events",
    "Subscriber": "events",
    "Transition": "events",
    "SavedFile": "files",
    "Entry": "journal",
    "Journal": "journal",
    "SQLiteJournal": "journal",
    "Channel": "machine",
    "State": "machine",
    "Trigger": "machine",
    "Policy": "policy",
    "SuperDuperTransport": "transport",
    "Transport": "transport",
    "VideoRequest": "video",
    "Worker": "worker",
}
"""Where each exported name lives (its module under ``hybridgen``)."""

__all__ = [
    "AsyncioClient",
    "AuthError",
    "Channel",
    "Client",
    "Config",
    "ConfigError",
    "DownloadError",
    "Entry",
    "Event",
    "EventStream",
    "FileStatus",
    "Generation",
    "GenerationCancelled",
    "GenerationFailed",
    "HybridgenError",
    "ImageRequest",
    "InvalidTransition",
    "Journal",
    "JournalError",
    "JournalWarning",
    "LeaseHeld",
    "LoggingSubscriber",
    "MissingExtra",
    "ModelInfo",
    "OversizedMessage",
    "PermanentError",
    "Policy",
    "Progress",
    "RedirectError",
    "RequestError",
    "Result",
    "Retry",
    "SQLiteJournal",
    "SavedFile",
    "Secret",
    "State",
    "Subscriber",
    "SuperDuperTransport",
    "TransientError",
    "Transition",
    "Transport",
    "TransportError",
    "Trigger",
    "Unreachable",
    "VideoRefused",
    "VideoRequest",
    "Worker",
    "run_batch",
    "__version__",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
