"""The checks of request fields that :mod:`hybridgen.wire` and :mod:`hybridgen.video` share.

Each ``check_*`` is an ``attrs`` validator raising :class:`~hybridgen.errors.RequestError` that
names the field; package-private (no name here is part of the public API).
"""

from __future__ import annotations

import re
import uuid
from typing import Final

import attrs

from .errors import RequestError

MAX_PROMPT_CHARS: Final = 4000
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,127}")


def name_text(field: str, value: object, *, pattern: re.Pattern[str] = NAME_RE) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise RequestError(field, f"must be a short name like 'comfyui/flux', got {value!r}")
    return value


def check_prompt(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise RequestError("prompt", f"must be text, got {type(value).__name__}")
    if not value.strip():
        raise RequestError("prompt", "is empty; describe the image to generate")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(
            "prompt", f"has {len(value)} characters; the limit is {MAX_PROMPT_CHARS}, shorten it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            "prompt", f"cannot be sent as UTF-8 (character at index {exc.start}); remove it"
        ) from None
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        raise RequestError("prompt", "contains control characters; remove them")


def check_size(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 64 <= value <= 4096:
        raise RequestError(
            attribute.name, f"must be a whole number of pixels in 64..4096, got {value!r}"
        )


def check_seed(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise RequestError("seed", f"must be a whole number in 0..2**53-1, got {value!r}")


def check_project(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise RequestError("project_id", f"must be a UUID, got {value!r}") from None


def check_batch(inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4:
        raise RequestError("batch_size", f"must be 1..4, got {value!r}")


def check_aspect(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"[1-9][0-9]{0,2}:[1-9][0-9]{0,2}", value):
        raise RequestError("aspect_ratio", f"must look like '16:9', got {value!r}")


def check_quality(inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("hd", "full_hd"):
        raise RequestError("quality", f"must be 'hd' or 'full_hd', got {value!r}")
