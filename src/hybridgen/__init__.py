"""hybridgen: get a remote generation job's result reliably and fast.

A generation is an explicit state machine (:mod:`hybridgen.machine`) whose decisions are made by a
sans-IO core (:mod:`hybridgen.core`) under a :class:`Policy`, driven by trio tasks
(:mod:`hybridgen.driver`) over a transport (:mod:`hybridgen.transport`). Every transition is an
event (:mod:`hybridgen.events`). :mod:`hybridgen.emulator` is a local server speaking the same API,
and :mod:`hybridgen.testing` the tools to test against it.
"""

from ._version import __version__
from .api import Config, FileStatus, ImageRequest
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
    PermanentError,
    RedirectError,
    RequestError,
    TransientError,
    TransportError,
    VideoRefused,
)
from .events import (
    Event,
    EventStream,
    JournalWarning,
    LoggingSubscriber,
    Progress,
    Retry,
    Transition,
)
from .files import SavedFile
from .machine import State, Trigger
from .policy import Policy
from .video import VideoRequest

__all__ = [
    "AuthError",
    "Client",
    "Config",
    "ConfigError",
    "DownloadError",
    "Event",
    "EventStream",
    "FileStatus",
    "Generation",
    "GenerationCancelled",
    "GenerationFailed",
    "HybridgenError",
    "ImageRequest",
    "InvalidTransition",
    "JournalError",
    "JournalWarning",
    "LeaseHeld",
    "LoggingSubscriber",
    "PermanentError",
    "Policy",
    "Progress",
    "RedirectError",
    "RequestError",
    "Result",
    "Retry",
    "SavedFile",
    "State",
    "TransientError",
    "TransportError",
    "Transition",
    "Trigger",
    "VideoRefused",
    "VideoRequest",
    "__version__",
]
