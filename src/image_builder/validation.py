"""Pydantic's validation errors in plain words: one line per problem, naming the key (as the
input spells it, ``a.b[0].c``) and what is expected there, from the model's own types, field
metadata and examples. For config.yaml, event payloads and anything else a user writes."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, NamedTuple, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from pydantic_core.core_schema import ErrorType

# What a pattern asks for, in words, keyed by the pattern: ``(what, its form if the name says
# too little)``. Messages say this instead of showing the regex.
PatternWords = Mapping[str, tuple[str, str]]


@dataclass(frozen=True)
class Expected:
    """What a value must look like, in words, for messages where the type alone says too little
    (a value that may be one thing or a list of them). Pydantic ignores this metadata."""

    words: str


class Problem(NamedTuple):
    loc: tuple[Any, ...]  # where in the input, as keys and list indexes
    kind: str  # pydantic's error type
    text: str  # one line: the dotted key, what is expected, what was given


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel], *, patterns: PatternWords | None = None
) -> str:
    """One line for the first problem, naming the key and the expected form, and how many more
    there are (for messages that must stay one line: event payloads, say)."""
    # An unknown key usually explains the "required" error next to it (a typo), so it goes first.
    found = sorted(
        problems(exc.errors(include_url=False), model, patterns=patterns),
        key=lambda p: p.kind != "extra_forbidden",
    )
    if not found:
        return "invalid"
    more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
    return found[0].text + more


class _NoExample:
    pass


_NO_EXAMPLE = _NoExample()


@dataclass(frozen=True, kw_only=True)
class _Spot:
    """What an error location points at in a model: the location without the branch tags pydantic
    puts in for unions, and what the type, its metadata and the field's examples say there."""

    loc: tuple[Any, ...]
    annotation: Any = None
    metadata: tuple[object, ...] = ()
    example: object = _NO_EXAMPLE
    union: int | None = None  # len(loc) at which a union's branch tag was left out
    union_metadata: tuple[object, ...] = ()  # what the union's field says


def problems(
    errors: Sequence[ErrorDetails],
    model: type[BaseModel],
    *,
    patterns: PatternWords | None = None,
) -> list[Problem]:
    """Each error as a :class:`Problem`, in pydantic's order; the branches of a union that all
    failed are one problem."""
    words = patterns or {}
    located = [(error, _locate(model, tuple(error["loc"]))) for error in errors]
    # "at least 1 item" after an item failed only repeats that failure.
    locs = [spot.loc for _, spot in located]
    located = [
        (error, spot)
        for error, spot in located
        if not (
            error["type"] == "too_short"
            and any(len(o) > len(spot.loc) and o[: len(spot.loc)] == spot.loc for o in locs)
        )
    ]
    out: list[Problem] = []
    unions_done: set[tuple[Any, ...]] = set()
    for error, spot in located:
        if spot.union is None:
            out.append(_problem(error, spot, model, words))
        elif (at := spot.loc[: spot.union]) not in unions_done:
            unions_done.add(at)
            same = [(e, s) for e, s in located if s.union is not None and s.loc[: s.union] == at]
            out += _union_problems(at, same, model, words)
    return out


def _union_problems(
    at: tuple[Any, ...],
    branches: list[tuple[ErrorDetails, _Spot]],
    model: type[BaseModel],
    patterns: PatternWords,
) -> list[Problem]:
    """Each branch of a union says why the value is not its kind. When one branch took the value's
    shape and failed only inside it (always so for a union with a discriminator), its problems
    are the ones to fix; else say once what fits."""
    by_branch: dict[Any, list[tuple[ErrorDetails, _Spot]]] = {}
    for error, spot in branches:
        tag = error["loc"][len(at)] if len(error["loc"]) > len(at) else None
        by_branch.setdefault(tag, []).append((error, spot))
    for found in by_branch.values():
        if all(len(spot.loc) > len(at) for _, spot in found):
            return [_problem(error, spot, model, patterns) for error, spot in found]
    words = _words(branches[0][1].union_metadata)
    shallow = [(e, s) for e, s in branches if len(s.loc) == len(at)]
    if words is None:
        tops = [_expected(e, s, patterns) for e, s in shallow]
        words = " or ".join(dict.fromkeys(t for t in tops if t)) or "another kind of value"
    key = dotted(at)
    where = f"'{key}': " if key else ""
    text = f"{where}expected {words}; got {_got((shallow or branches)[0][0].get('input'))}"
    return [Problem(at, "union", text)]


def _problem(
    error: ErrorDetails, spot: _Spot, model: type[BaseModel], patterns: PatternWords
) -> Problem:
    loc = spot.loc
    kind = error["type"]
    key = dotted(loc)
    if kind == "extra_forbidden" and loc:
        # The location as pydantic gave it: its branch tags say which branch's keys are known.
        known = known_keys(model, tuple(error["loc"])[:-1])
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        parent = dotted(loc[:-1])
        hint = (
            f"did you mean '{dotted((*loc[:-1], guess[0]))}'?"
            if guess
            else f"known keys{' under ' + repr(parent) if parent else ''}: {', '.join(known)}"
        )
        return Problem(loc, kind, f"unknown key '{key}'; {hint}")
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return _tag_problem(error, spot)
    if kind == "missing":
        text = f"'{key}' is required"
        if spot.example is not _NO_EXAMPLE and loc and isinstance(loc[-1], str):
            text += f", e.g. {dotted(loc[-1:])}: {_example(spot.example)}"
        return Problem(loc, kind, text)
    where = f"'{key}': " if key else ""
    got = error.get("input")
    expected = _expected(error, spot, patterns)
    if expected is not None:
        return Problem(loc, kind, f"{where}expected {expected}; got {_got(got)}")
    # Our validators' own words (they say what is expected), or a kind not worded here.
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    # A custom error words its own problem and is not shown the value, which may be a secret
    # (a password in a registry name).
    quiet = "got" in message or isinstance(got, (dict, list)) or _custom(kind)
    shown = "" if quiet else f"; got {_got(got)}"
    return Problem(loc, kind, f"{where}{_lower_first(message)}{shown}")


def _tag_problem(error: ErrorDetails, spot: _Spot) -> Problem:
    """A union with a discriminator (``type: notary`` or ``type: cosign``) found no tag, or one
    that no branch has: worded as a problem of the discriminating key."""
    field = _discriminator(spot.metadata)
    tags = _tags(spot.annotation, field)
    if field is None or not tags:
        return Problem(spot.loc, error["type"], f"'{dotted(spot.loc)}': expected {_either(tags)}")
    loc = (*spot.loc, field)
    if error["type"] == "union_tag_not_found":
        return Problem(loc, "missing", f"'{dotted(loc)}' is required, e.g. {field}: {tags[0]}")
    given = error.get("input")
    got = given.get(field) if isinstance(given, dict) else given
    return Problem(
        loc, "literal_error", f"'{dotted(loc)}': expected {_either(tags)}; got {_got(got)}"
    )


def _discriminator(metadata: tuple[object, ...]) -> str | None:
    """The key a union's ``Field(discriminator=...)`` names."""
    names = (getattr(m, "discriminator", None) for m in metadata)
    return next((name for name in names if isinstance(name, str)), None)


def _tags(union: Any, field: str | None) -> list[str]:
    """The values of ``field`` that pick each branch of ``union``."""
    if field is None:
        return []
    return [tag for branch in typing.get_args(union) for tag in _tags_of(branch, field)]


def _tags_of(branch: Any, field: str) -> list[str]:
    """The values of ``field`` that pick ``branch``, a model whose ``field`` is a ``Literal``."""
    base = _peel(branch)[0]
    if not (isinstance(base, type) and issubclass(base, BaseModel)):
        return []
    for name, info in base.model_fields.items():
        if field in (name, info.alias):
            return [str(v) for v in typing.get_args(info.annotation)]
    return []


def _either(values: Sequence[str]) -> str:
    quoted = [repr(v) for v in values]
    if len(quoted) < 2:
        return "".join(quoted) or "another kind of value"
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


_LIST_KINDS = frozenset({"tuple_type", "list_type", "set_type", "frozen_set_type", "iterable_type"})
_MAPPING_KINDS = frozenset(
    {"dict_type", "model_type", "model_attributes_type", "mapping_type", "dataclass_type"}
)
_OWN_WORDS = frozenset({"value_error", "assertion_error"})
_PYDANTIC_KINDS = frozenset(typing.get_args(ErrorType))


def _custom(kind: str) -> bool:
    """A ``PydanticCustomError`` of a validator here, not one of pydantic's own kinds."""
    return kind not in _PYDANTIC_KINDS


def _expected(error: ErrorDetails, spot: _Spot, patterns: PatternWords) -> str | None:
    """What the value should have been, in plain words; None for messages of our own."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _OWN_WORDS or _custom(kind):
        return None
    words = _words(spot.metadata)
    if words is not None:
        return words
    example = _example(spot.example) if spot.example is not _NO_EXAMPLE else ""
    such = f" such as {example}" if example and len(example) <= 100 else ""
    if kind in ("bool_parsing", "bool_type"):
        return "true or false"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "a whole number" + _bounds(spot.metadata)
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "a number" + _bounds(spot.metadata)
    if kind == "greater_than_equal":
        return f"a number of at least {ctx.get('ge')}"
    if kind == "greater_than":
        return f"a number above {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"a number of at most {ctx.get('le')}"
    if kind == "less_than":
        return f"a number below {ctx.get('lt')}"
    if kind == "string_type":
        return "a string" + such
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return ("a non-empty string" if least == 1 else f"at least {least} characters") + such
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        what, form = patterns.get(pattern, ("a string", f"matching {pattern}"))
        return what + such + (f" ({form})" if form else "")
    if kind == "literal_error":
        return str(ctx.get("expected", "one of the documented values"))
    if kind in _LIST_KINDS:
        return "a list" + such
    if kind in _MAPPING_KINDS:
        return "a mapping of keys" + such
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return f"a list of at least {least} {'entry' if least == 1 else 'entries'}" + such
    if kind == "too_long":
        return f"a list of at most {ctx.get('max_length')} entries"
    if kind.startswith("url_"):
        return "a URL" + such
    if kind == "none_required":
        return "nothing (null)"
    return None


def _bounds(metadata: tuple[object, ...]) -> str:
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


def _words(metadata: tuple[object, ...]) -> str | None:
    return next((m.words for m in metadata if isinstance(m, Expected)), None)


def _got(value: object) -> str:
    """The given value as the user wrote it, briefly: containers by kind only."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return _short(value) if value else "an empty string"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    if isinstance(value, (date, datetime)):
        return f"the date {value.isoformat()}"
    return _short(value)


def _example(value: object) -> str:
    """An example value as YAML would write it, on one line."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20)
    return text.removesuffix("\n...\n").strip()


def dotted(loc: tuple[Any, ...]) -> str:
    """``a.b[0].c``: a location as the input spells it, on one line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # Keys come from the user's input: control characters are escaped to keep one line.
            out += ("." if out else "") + str(part).encode("unicode_escape").decode("ascii")
    return out


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model knows at ``loc``, a location as pydantic gives it (branch tags and
    all)."""
    target = _locate(model, loc).annotation
    if isinstance(target, type) and issubclass(target, BaseModel):
        return [field.alias or name for name, field in target.model_fields.items()]
    return []


def clean_loc(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` as pydantic gives it, without the branch tags of unions: keys and indexes of the
    input."""
    return _locate(model, loc).loc


def _locate(model: type[BaseModel], loc: tuple[Any, ...]) -> _Spot:
    """Follow a pydantic error location through the model's type annotations."""
    annotation: Any = model
    metadata: tuple[object, ...] = ()
    example: object = _NO_EXAMPLE
    clean: list[Any] = []
    union: int | None = None
    union_metadata: tuple[object, ...] = ()
    tag = False
    for part in loc:
        base, more = _peel(annotation)
        metadata += more
        tag = not tag and _is_union(base)
        if tag:
            # This part is the tag of a branch (e.g. 'tuple[str, ...]', or the discriminator's
            # value), not a key of the input.
            if union is None:
                union, union_metadata = len(clean), metadata
            annotation = _branch(base, part, metadata) or annotation
            continue
        clean.append(part)
        annotation, metadata, example = _step(base, part, example)
    base, more = _peel(annotation)
    return _Spot(
        loc=tuple(clean),
        annotation=base,
        metadata=metadata + more,
        example=example,
        union=union,
        union_metadata=union_metadata,
    )


def _branch(union: Any, tag: object, metadata: tuple[object, ...]) -> Any:
    """The branch of ``union`` that pydantic's branch tag names: a model by its class name, or
    by its discriminator's value; None when the tag names no model."""
    field = _discriminator(metadata)
    for branch in typing.get_args(union):
        base = _peel(branch)[0]
        if isinstance(base, type) and issubclass(base, BaseModel) and base.__name__ == tag:
            return branch
        if field is not None and str(tag) in _tags_of(branch, field):
            return branch
    return None


def _step(base: Any, part: Any, example: object) -> tuple[Any, tuple[object, ...], object]:
    """The annotation, metadata and example one element of a location further in."""
    if _is_union(base):  # below a branch tag: the first branch that has such a part
        for branch in typing.get_args(base):
            found = _step(_peel(branch)[0], part, example)
            if found[0] is not None:
                return found
        return None, (), _NO_EXAMPLE
    if isinstance(base, type) and issubclass(base, BaseModel):
        for name, field in base.model_fields.items():
            if part in (field.alias, name):
                examples = field.examples or []
                return (
                    field.annotation,
                    tuple(field.metadata),
                    (examples[0] if examples else _NO_EXAMPLE),
                )
        return None, (), _NO_EXAMPLE
    origin = typing.get_origin(base)
    args = typing.get_args(base)
    if origin in (list, tuple, set, frozenset) and args and isinstance(part, int):
        item = example[0] if isinstance(example, list) and example else _NO_EXAMPLE
        return args[0], (), item
    if origin in (dict, Mapping) and len(args) == 2:
        value = next(iter(example.values())) if isinstance(example, dict) and example else None
        return args[1], (), _NO_EXAMPLE if value is None else value
    return None, (), _NO_EXAMPLE


def _peel(annotation: Any) -> tuple[Any, tuple[object, ...]]:
    """``annotation`` without ``Annotated`` (its metadata returned) and without ``| None``."""
    metadata: tuple[object, ...] = ()
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *more = typing.get_args(annotation)
            metadata += tuple(more)
        elif origin in (Union, types.UnionType):
            branches = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(branches) != 1:
                return annotation, metadata
            annotation = branches[0]
        else:
            return annotation, metadata


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)
