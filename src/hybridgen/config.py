"""Where the SuperDuperAI API is and how to authenticate: :class:`Config`, :class:`Secret`.

The environment is read here (``SUPERDUPERAI_URL``, ``SUPERDUPERAI_TOKEN``,
``HYBRIDGEN_ALLOW_INSECURE``) and the base URL is checked before any network I/O. The token is a
:class:`Secret`: it never appears in reprs, logs, errors or pickles. :mod:`hybridgen.api`
re-exports every name.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Final, NoReturn, SupportsIndex
from urllib.parse import urlsplit

import attrs

from ._version import __version__
from .errors import ConfigError

__all__ = ["MAX_REPLY_BYTES", "USER_AGENT", "Config", "Secret"]

USER_AGENT: Final = f"hybridgen/{__version__}"
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-_.~+/=]+")
MAX_REPLY_BYTES: Final = 4 * 2**20
"""The default :attr:`Config.max_reply_bytes`: 4 MiB, about a thousand times a real reply."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen
class Secret:
    """A string that never shows itself in reprs, logs or errors; ``reveal()`` gives it back.

    It refuses to be pickled (and so does a :class:`Config` holding it): a pickle would carry
    the token in clear to wherever the bytes go (a queue, a cache, a file). Build the
    configuration again where it is needed, e.g. ``Config.from_env()`` in the other process.
    Copies within the process (``copy.copy``, ``copy.deepcopy``) share the same object.
    """

    _value: str = attrs.field(repr=False)

    def reveal(self) -> str:
        """The secret text itself (only for the Authorization header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "a Secret (the API token) cannot be pickled: the pickle would carry it in clear; "
            "build the Config again where it is needed (e.g. Config.from_env())"
        )

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


_INSECURE_HINT: Final = "pass allow_insecure=True (HYBRIDGEN_ALLOW_INSECURE=1)"


def _check_url(url: str, allow_insecure: bool, insecure_hint: str = _INSECURE_HINT) -> str:
    stripped = url.strip().rstrip("/")
    if not stripped:
        raise ConfigError(
            "SUPERDUPERAI_URL", "is empty; set it to e.g. https://editor.superduperai.co"
        )
    if any(c.isspace() for c in stripped):
        raise ConfigError("SUPERDUPERAI_URL", f"contains white space: {stripped!r}")
    parts = urlsplit(stripped)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            "SUPERDUPERAI_URL",
            f"must start with https:// (or http:// for a local server), got {stripped!r}",
        )
    if not parts.hostname:
        raise ConfigError("SUPERDUPERAI_URL", f"has no host name: {stripped!r}")
    if parts.query or parts.fragment:
        raise ConfigError(
            "SUPERDUPERAI_URL", f"must be a base URL without ?query or #fragment: {stripped!r}"
        )
    if parts.path:
        root = f"{parts.scheme}://{parts.netloc}"
        raise ConfigError(
            "SUPERDUPERAI_URL",
            f"must be the server's root URL, without a path ({parts.path}): hybridgen adds "
            f"/api/v1/... itself; set it to {root}",
        )
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ConfigError(
            "SUPERDUPERAI_URL",
            f"uses plain http:// for a non-local host ({parts.hostname}); use https://, "
            f"or {insecure_hint} if you really mean it",
        )
    return stripped


def _as_secret(token: str | Secret) -> Secret:
    return token if isinstance(token, Secret) else Secret(token)


@attrs.frozen
class Config:
    """Where the API is and how to authenticate. The token never appears in reprs or errors."""

    url: str
    token: Secret = attrs.field(converter=_as_secret)
    allow_insecure: bool = False
    max_reply_bytes: int = MAX_REPLY_BYTES
    """The largest start or poll reply read (bytes, after decompression); a longer one is
    abandoned unread and reported as a :class:`~hybridgen.errors.TransientError`."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "url", _check_url(self.url, self.allow_insecure))
        limit = self.max_reply_bytes
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1024:
            raise ConfigError(
                "max_reply_bytes", f"must be a whole number of bytes >= 1024, got {limit!r}"
            )
        token = self.token.reveal()
        if not token.strip():
            raise ConfigError(
                "SUPERDUPERAI_TOKEN", "is empty; set it to your SuperDuperAI API token"
            )
        if not _TOKEN_RE.fullmatch(token):
            raise ConfigError(
                "SUPERDUPERAI_TOKEN",
                "has characters a bearer token cannot have (white space, quotes, ...); "
                "copy it again without surrounding text",
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read ``SUPERDUPERAI_URL``, ``SUPERDUPERAI_TOKEN`` and ``HYBRIDGEN_ALLOW_INSECURE``."""
        env = os.environ if env is None else env
        url = env.get("SUPERDUPERAI_URL")
        if url is None:
            raise ConfigError(
                "SUPERDUPERAI_URL",
                "is not set; set it to the API's base URL (hybridgen's command line uses its "
                "embedded emulator when it is unset)",
            )
        token = env.get("SUPERDUPERAI_TOKEN")
        if token is None:
            raise ConfigError(
                "SUPERDUPERAI_TOKEN", "is not set; set it to your SuperDuperAI API token"
            )
        insecure = env.get("HYBRIDGEN_ALLOW_INSECURE", "").strip().lower() in ("1", "true", "yes")
        # read from the environment: the fix to name is the environment's too
        _check_url(url, insecure, "set HYBRIDGEN_ALLOW_INSECURE=1")
        return cls(url=url, token=token, allow_insecure=insecure)

    def api_url(self, path: str) -> str:
        """The full URL of an API path (``/api/v1/...``)."""
        return f"{self.url}/{path.lstrip('/')}"

    def ws_url(self, path: str) -> str:
        """The full WebSocket URL of a path: ``http`` becomes ``ws``, ``https`` becomes ``wss``."""
        base = "ws" + self.url[len("http") :]
        return f"{base}/{path.lstrip('/')}"

    def headers(self) -> dict[str, str]:
        """Request headers: bearer auth, JSON content type and a User-Agent naming hybridgen."""
        return {
            "Authorization": f"Bearer {self.token.reveal()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
