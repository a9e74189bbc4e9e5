"""Generate the parts of the docs that must follow the code: ``python docs/generate.py``.

- ``docs/api.md``: the API reference of every public module and name, from the docstrings;
- the policy table in ``docs/configuration.md`` (between its ``generated: policy`` markers),
  from ``attrs.fields(Policy)``, the presets and the fields' docstrings.

``tests/test_docs.py`` fails when a committed file differs from what this writes, so a change of a
public name, signature or docstring shows up as "run python docs/generate.py".
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import itertools
import pkgutil
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

DOCS = Path(__file__).resolve().parent
API = DOCS / "api.md"
CONFIGURATION = DOCS / "configuration.md"
POLICY_BEGIN = "<!-- generated: policy (python docs/generate.py) -->"
POLICY_END = "<!-- end generated: policy -->"

PACKAGE = "hybridgen"
SKIP_MODULES = {"hybridgen.__main__"}
"""Modules with nothing to import (``python -m hybridgen`` runs the command)."""


# -- discovery --------------------------------------------------------------------------------


def public_modules() -> list[str]:
    """Every importable module of the package whose dotted path has no ``_``-prefixed part."""
    root = importlib.import_module(PACKAGE)
    names = [PACKAGE]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{PACKAGE}."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        if info.name not in SKIP_MODULES:
            names.append(info.name)
    return sorted(names, key=lambda n: (n != PACKAGE, n))


def public_names(module: types.ModuleType) -> list[str]:
    """The module's ``__all__``; without one, the public names it defines itself."""
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return list(declared)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
        and (inspect.isclass(value) or inspect.isfunction(value))
    )


def internal_bases(cls: type) -> list[type]:
    """The bases of ``cls`` that their modules do not export (parts of one class split across
    modules): their members are documented as the class's own."""
    found: list[type] = []
    for base in cls.__mro__[1:]:
        module = sys.modules.get(base.__module__)
        if (
            module is None
            or not base.__module__.startswith(f"{PACKAGE}.")
            or base.__name__ in public_names(module)
        ):
            break
        found.append(base)
    return found


def home_of(name: str, value: object, modules: dict[str, types.ModuleType]) -> str | None:
    """The module whose section documents ``value``: where it is defined, if that lists it."""
    defined_in = getattr(value, "__module__", None)
    if (
        isinstance(defined_in, str)
        and defined_in in modules
        and name in public_names(modules[defined_in])
        and (inspect.isclass(value) or inspect.isfunction(value))
    ):
        return defined_in
    return None


# -- docstrings -------------------------------------------------------------------------------

ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`(~?)([^`<]+?)(?:\s*<[^>]+>)?`")
LITERAL = re.compile(r"``(.+?)``")


class Linker:
    """Turns Sphinx roles into Markdown code, linked when the target is in the reference."""

    def __init__(self) -> None:
        self.anchors: dict[str, str] = {}

    def add(self, dotted: str) -> None:
        self.anchors[dotted] = slug(dotted)

    def resolve(self, target: str, context: str) -> str | None:
        target = target.strip().rstrip("()")
        candidates = [target, f"{context}.{target}", f"{PACKAGE}.{target}"]
        candidates += [d for d in self.anchors if d.endswith(f".{target}")]
        return next((c for c in candidates if c in self.anchors), None)

    def markdown(self, text: str, context: str) -> str:
        def role(match: re.Match[str]) -> str:
            short, target = match.group(1) == "~", match.group(2).strip()
            shown = target.rsplit(".", 1)[-1] if short else target
            if match.group(0).startswith((":meth:", ":func:")) and not shown.endswith(")"):
                shown += "()"
            found = self.resolve(target, context)
            return f"[`{shown}`](#{self.anchors[found]})" if found else f"`{shown}`"

        text = LITERAL.sub(lambda m: f"`{m.group(1)}`", ROLE.sub(role, text))
        return re.sub(r"(\S)::$", r"\1:", re.sub(r"^::$", "", text, flags=re.M), flags=re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading text (lower case, punctuation dropped, spaces to ``-``)."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def doc_of(value: object) -> str:
    doc = value.__doc__ if not isinstance(value, str | int | float | tuple | frozenset) else None
    return inspect.cleandoc(doc) if doc else ""


def attribute_docs(source_of: object) -> dict[str, str]:
    """``name = ...`` or ``name: T = ...`` followed by a string: the string is its docstring."""
    try:
        source = textwrap.dedent(inspect.getsource(source_of))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    body = tree.body
    if len(body) == 1 and isinstance(body[0], ast.ClassDef):
        body = body[0].body
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if not (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            continue
        target = None
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target = node.target.id
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            target = node.targets[0].id
        if target is not None:
            docs[target] = inspect.cleandoc(after.value.value)
    return docs


def constant_docs(module: types.ModuleType) -> dict[str, str]:
    """:func:`attribute_docs` of a module, and of a package's private submodules it re-exports."""
    docs: dict[str, str] = {}
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.startswith("_") and not info.name.startswith("__"):
            found = attribute_docs(importlib.import_module(f"{module.__name__}.{info.name}"))
            docs.update({k: v for k, v in found.items() if k in public_names(module)})
    docs.update(attribute_docs(module))
    return docs


# -- signatures -------------------------------------------------------------------------------

ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def annotation(value: object) -> str:
    if value is inspect.Parameter.empty:
        return ""
    text = value if isinstance(value, str) else inspect.formatannotation(value)
    return text.replace("typing.", "").replace("collections.abc.", "")


def default(value: object) -> str:
    if value is attrs.NOTHING:
        return "<factory>"
    if isinstance(value, attrs.Factory):  # type: ignore[arg-type]
        return "<factory>"
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if inspect.isroutine(value):
        module = getattr(value, "__module__", None) or ""
        name = getattr(value, "__qualname__", None) or value.__name__
        return name if module.startswith(PACKAGE) else f"{module}.{name}".lstrip(".")
    if type(value).__name__ == "_TaskStatusIgnored":
        return "trio.TASK_STATUS_IGNORED"
    return ADDRESS.sub("", repr(value))


def signature(
    value: Callable[..., Any], *, name: str = "", drop_self: bool = False, is_class: bool = False
) -> str:
    """``(params) -> returns``, on one line when ``name`` and it fit in 88 characters."""
    try:
        sig = inspect.signature(value)
    except (TypeError, ValueError):
        return "(...)"
    parts: list[str] = []
    seen_kw_only = False
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not seen_kw_only:
            parts.append("*")
            seen_kw_only = True
        if p.kind is p.VAR_POSITIONAL:
            seen_kw_only = True
        stars = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        text = stars + p.name
        if p.annotation is not p.empty:
            text += f": {annotation(p.annotation)}"
        if p.default is not p.empty:
            equals = " = " if p.annotation is not p.empty else "="
            text += equals + default(p.default)
        parts.append(text)
        if p.kind is p.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not p.POSITIONAL_ONLY
        ):
            parts.append("/")
    returns = ""
    if sig.return_annotation is not sig.empty and not is_class:
        returns = f" -> {annotation(sig.return_annotation)}"
    one_line = f"({', '.join(parts)}){returns}"
    if len(name) + len(one_line) <= 88:
        return one_line
    return "(\n" + "".join(f"    {part},\n" for part in parts) + ")" + returns


PRIVATE = re.compile(r"(?<![\w.])_[a-z]")


def assigned_source(module: types.ModuleType) -> dict[str, str]:
    """Each module-level ``NAME = value`` (or annotated) assignment's value, as written."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    written: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            segment = ast.get_source_segment(source, value)
            if segment is not None:
                written[target.id] = segment
    return written


# -- rendering --------------------------------------------------------------------------------


class Reference:
    """Builds ``api.md``."""

    def __init__(self) -> None:
        self.modules = {name: importlib.import_module(name) for name in public_modules()}
        self.linker = Linker()
        self.sources: dict[str, dict[str, str]] = {}
        self.homes: dict[str, tuple[str, str]] = {}
        """Dotted name as imported -> (module documenting it, name there)."""
        for module_name, module in self.modules.items():
            self.linker.add(module_name)
            for name in public_names(module):
                value = getattr(module, name)
                home = home_of(name, value, self.modules)
                if home is None or home == module_name:
                    self.linker.add(f"{module_name}.{name}")
        for module_name, module in self.modules.items():
            for name in public_names(module):
                value = getattr(module, name)
                home = home_of(name, value, self.modules) or module_name
                real = getattr(value, "__name__", name) if home != module_name else name
                self.homes[f"{module_name}.{name}"] = (home, real)
                if home != module_name:
                    self.linker.anchors.setdefault(f"{module_name}.{name}", slug(f"{home}.{real}"))

    def md(self, text: str, context: str) -> str:
        return self.linker.markdown(text, context)

    def render(self) -> str:
        out = [
            "# API reference",
            "",
            "<!-- Generated by `python docs/generate.py` from the docstrings; do not edit. -->",
            "",
            "Every public module of hybridgen and every name in its `__all__`, with signatures and",
            "docstrings. Names re-exported by a package are listed there and documented where they",
            "are defined. Times are seconds; trio's clock unless a name says otherwise.",
            "",
            "Modules:",
            "",
        ]
        for name, module in self.modules.items():
            summary = doc_of(module).split("\n\n")[0].replace("\n", " ")
            out.append(f"- [`{name}`](#{slug(name)}): {self.md(summary, name)}")
        for name, module in self.modules.items():
            out += ["", *self.module_section(name, module)]
        return "\n".join(out).rstrip() + "\n"

    def module_section(self, module_name: str, module: types.ModuleType) -> Iterator[str]:
        yield f"## `{module_name}`"
        yield ""
        doc = doc_of(module)
        if doc:
            yield self.md(doc, module_name)
            yield ""
        constants = constant_docs(module)
        reexports: list[tuple[str, str, str]] = []
        own: list[str] = []
        for name in public_names(module):
            home, real = self.homes[f"{module_name}.{name}"]
            if home != module_name:
                value = getattr(module, name)
                summary = doc_of(value).split("\n\n")[0].replace("\n", " ")
                reexports.append((name, f"{home}.{real}", summary))
            else:
                own.append(name)
        if reexports:
            yield "| name | documented at | summary |"
            yield "| --- | --- | --- |"
            for name, target, summary in reexports:
                link = f"[`{target}`](#{slug(target)})"
                yield f"| `{name}` | {link} | {self.md(summary, module_name)} |"
            yield ""
        for name in own:
            yield from self.item(module_name, name, getattr(module, name), constants.get(name))

    def item(
        self, module_name: str, name: str, value: object, attr_doc: str | None
    ) -> Iterator[str]:
        dotted = f"{module_name}.{name}"
        yield f"### `{dotted}`"
        yield ""
        if inspect.isclass(value):
            yield from self.klass(dotted, value)
        elif inspect.isfunction(value) or inspect.isbuiltin(value):
            yield "```py"
            prefix = "async def" if inspect.iscoroutinefunction(value) else "def"
            yield f"{prefix} {name}{signature(value, name=f'{prefix} {name}')}"
            yield "```"
            yield ""
            doc = doc_of(value)
            if doc:
                yield self.md(doc, module_name)
                yield ""
        else:
            yield "```py"
            yield f"{name} = {self.value_text(value, module_name, name)}"
            yield "```"
            yield ""
            if attr_doc:
                yield self.md(attr_doc, module_name)
                yield ""

    def value_text(self, value: object, module_name: str, name: str) -> str:
        written = self.sources.setdefault(module_name, assigned_source(self.modules[module_name]))
        text = written.get(name)
        if text and "\n" not in text and len(text) <= 90 and not PRIVATE.search(text):
            return text
        if isinstance(value, types.UnionType):
            return " | ".join(a.__name__ for a in value.__args__)
        if isinstance(value, types.GenericAlias) or "typing" in type(value).__module__:
            return annotation(value)
        if isinstance(value, types.MappingProxyType):
            return f"<mapping of {len(value)} entries>"
        if isinstance(value, dict) and all(callable(v) for v in value.values()):
            return "{" + ", ".join(f"{k!r}: {default(v)}" for k, v in value.items()) + "}"
        text = default(value)
        if len(text) > 90 or "\n" in text:
            return f"<{type(value).__name__}>"
        return text

    def klass(self, dotted: str, cls: type) -> Iterator[str]:
        module_name = cls.__module__
        internal = internal_bases(cls)
        bases = [b for b in cls.__bases__ if b is not object and b not in internal]
        kind = "class"
        if issubclass(cls, enum.Enum):
            kind = "enum"
        head = f"class {cls.__name__}"
        typed_dict = typing.is_typeddict(cls)
        protocol = bool(getattr(cls, "_is_protocol", False))
        yield "```py"
        if kind == "enum":
            yield f"{head}({', '.join(b.__name__ for b in bases)})"
        elif typed_dict:
            yield f"{head}(TypedDict)"
        elif protocol:
            yield f"{head}(Protocol)"
        elif issubclass(cls, BaseException) and "__init__" not in vars(cls):
            yield head
        else:
            yield head + signature(cls, name=head, is_class=True)
        yield "```"
        yield ""
        if bases and not (kind == "enum" or typed_dict or protocol):
            names = ", ".join(f"`{self.short(b)}`" for b in bases)
            yield f"Bases: {names}."
            yield ""
        doc = doc_of(cls)
        if doc:
            yield self.md(doc, module_name)
            yield ""
        if typed_dict:
            yield "| key | type |"
            yield "| --- | --- |"
            for key, hint in cls.__annotations__.items():
                yield f"| `{key}` | `{annotation(hint)}` |"
            yield ""
            return
        member_docs = attribute_docs(cls)
        rows: list[str] = []
        if issubclass(cls, enum.Enum):
            for member in cls:
                text = self.md(member_docs.get(member.name, ""), module_name)
                rows.append(f"| `{member.name}` | `{member.value!r}` | {text} |")
            if rows:
                yield "| member | value | meaning |"
                yield "| --- | --- | --- |"
                yield from rows
                yield ""
            return
        if attrs.has(cls):
            for field in attrs.fields(cls):
                if field.name.startswith("_") or not field.init:
                    continue
                text = member_docs.get(field.name, "")
                if text:
                    rows.append(f"| `{field.name}` | {self.md(text, module_name)} |")
        if rows:
            yield "| field | meaning |"
            yield "| --- | --- |"
            yield from rows
            yield ""
        for name, attribute in self.members(cls):
            yield from self.member(cls, name, attribute, module_name)

    def short(self, cls: type) -> str:
        dotted = f"{cls.__module__}.{cls.__qualname__}"
        if cls.__module__ == "builtins":
            return cls.__qualname__
        return cls.__qualname__ if dotted in self.linker.anchors else dotted

    def members(self, cls: type) -> Iterator[tuple[str, object]]:
        seen: set[str] = set()
        for owner in (cls, *internal_bases(cls)):
            for name, member in vars(owner).items():
                if name in seen or (
                    name.startswith("_") and name not in ("__call__", "__aenter__", "__aiter__")
                ):
                    continue
                if isinstance(member, property | classmethod | staticmethod) or inspect.isfunction(
                    member
                ):
                    seen.add(name)
                    yield name, member

    def member(self, cls: type, name: str, member: object, module_name: str) -> Iterator[str]:
        if isinstance(member, property):
            ret = annotation(inspect.signature(member.fget).return_annotation)  # type: ignore[arg-type]
            head = f"{cls.__name__}.{name}: {ret}" if ret else f"{cls.__name__}.{name}"
            yield f"- **`{head}`** (property)"
            doc = doc_of(member)
        else:
            function = member.__func__ if isinstance(member, classmethod | staticmethod) else member
            assert callable(function)
            prefix = "async " if inspect.iscoroutinefunction(function) else ""
            if isinstance(member, classmethod):
                prefix = "classmethod " + prefix
            label = f"{prefix}{cls.__name__}.{name}"
            sig = signature(function, drop_self=not isinstance(member, staticmethod))
            yield f"- **`{label}{sig}`**"
            doc = doc_of(function)
        if doc:
            yield ""
            yield textwrap.indent(self.md(doc, module_name), "  ")
        yield ""


# -- policy table -----------------------------------------------------------------------------


def policy_table() -> str:
    """The table of every :class:`Policy` field: its value in each preset, unit and meaning."""
    from hybridgen.policy import DURATIONS, PRESETS, Policy

    docs = attribute_docs(Policy)
    linker = Linker()
    presets = {f"`Policy.{make.__name__}()`": make() for make in PRESETS.values()}

    def shown(name: str, value: object) -> str:
        if value is None:
            return "none (no limit)"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if name in DURATIONS:
            return f"{value:g} s"
        if name == "backoff_factor":
            return f"{value:g}x"
        return f"{value:g}" if isinstance(value, float) else str(value)

    units = {"backoff_factor": "factor ≥ 1", "jitter": "fraction in [0, 1)"}
    lines = [
        f"| field | {' | '.join(presets)} | unit | meaning |",
        "| --- |" + " --- |" * (len(presets) + 2),
    ]
    for field in attrs.fields(Policy):
        name = field.name
        if name in DURATIONS:
            unit = "seconds"
        elif field.type in ("bool", bool):
            unit = "flag"
        elif name in units:
            unit = units[name]
        else:
            unit = "count"
        meaning = linker.markdown(docs[name].replace("\n", " "), "hybridgen.policy")
        values = " | ".join(shown(name, getattr(policy, name)) for policy in presets.values())
        lines.append(f"| `{name}` | {values} | {unit} | {meaning} |")
    return "\n".join(lines) + "\n"


def with_policy_table(text: str) -> str:
    """``configuration.md``'s text with a fresh policy table between the markers."""
    start = text.index(POLICY_BEGIN) + len(POLICY_BEGIN)
    end = text.index(POLICY_END)
    return text[:start] + "\n\n" + policy_table() + "\n" + text[end:]


def main() -> int:
    API.write_text(Reference().render(), encoding="utf-8")
    CONFIGURATION.write_text(with_policy_table(CONFIGURATION.read_text()), encoding="utf-8")
    for path in (API, CONFIGURATION):
        print(path.relative_to(DOCS.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
