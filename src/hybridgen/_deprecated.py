"""Old names kept for one release: each use warns with :class:`DeprecationWarning`."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["accept_old_names", "alias", "renamed", "warn"]


def warn(old: str, new: str, owner: str, *, stacklevel: int = 3) -> None:
    """Warn that ``owner.old`` is deprecated in favour of ``owner.new``."""
    warnings.warn(
        f"{owner}.{old} is deprecated, use {owner}.{new} (the old name goes in the next release)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def alias(old: str, new: str, owner: str) -> Any:
    """A read-only property ``old`` that warns and returns ``self.new``."""

    def get(self: object) -> Any:
        warn(old, new, owner)
        return getattr(self, new)

    get.__doc__ = f"Deprecated alias of :attr:`{new}` (warns; goes in the next release)."
    return property(get)


def renamed(changes: dict[str, Any], renames: Mapping[str, str], owner: str) -> dict[str, Any]:
    """``changes`` (keyword arguments) with each old name of ``renames`` given as its new name,
    warning for each; giving both names of one field is a ``TypeError``."""
    for old, new in renames.items():
        if old in changes:
            if new in changes:
                raise TypeError(f"{owner}() got both {old}= and {new}= (use {new}= alone)")
            warn(old, new, owner, stacklevel=4)
            changes[new] = changes.pop(old)
    return changes


def accept_old_names(cls: type, renames: Mapping[str, str]) -> None:
    """Make ``cls(...)`` accept the old keyword names of ``renames`` (warning for each).

    The typed signature stays the new one (``inspect.signature`` follows ``__wrapped__``).
    """
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]
    owner = cls.__name__

    @functools.wraps(init)
    def __init__(self: object, *args: Any, **kwargs: Any) -> None:
        if not renames.keys().isdisjoint(kwargs):
            kwargs = renamed(kwargs, renames, owner)
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
