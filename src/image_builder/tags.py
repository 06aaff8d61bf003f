"""The tag engine: a safe evaluator for the Go-template subset tag templates use, named tags,
the default tag per event, and validation.

Supported actions: ``{{ .CommitSHA }}``, ``{{ .ShortSHA }}``, ``{{ .PRNumber }}``, ``{{ .Date }}``
and ``{{ .Env "NAME" }}``, with ``{{-``/``-}}`` trimming. Anything else is refused by name.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from image_builder.config import Config, TagTemplate
from image_builder.context import CIContext
from image_builder.errors import TagError, TemplateError

FIELDS = ("CommitSHA", "ShortSHA", "PRNumber", "Date")
OCI_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
TAG_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SIGNATURE_TAG = re.compile(r"sha256-[0-9a-fA-F]+\.(sig|att|sbom)")
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_-]+")
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")
_ENV_CALL = re.compile(r'\.Env\s+(?:"([^"\\]*)"|`([^`]*)`)')
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRIM_SPACE = " \t\r\n"


@dataclass(frozen=True, kw_only=True)
class Tag:
    """A rendered tag: the name used for ``TAG_<name>`` and the value that goes on the image."""

    name: str
    value: str
    validation: str | None = None  # the config's regex the value matched, as the Go tool reports

    def to_json(self) -> dict[str, str]:
        """The Go tool's form: ``name``, ``value``, and ``validation`` when there is one."""
        out = {"name": self.name, "value": self.value}
        if self.validation:
            out["validation"] = self.validation
        return out


@dataclass(frozen=True, kw_only=True)
class TagSpec:
    """A tag before rendering. ``source`` says where it came from, for error messages."""

    name: str
    template: str
    validation: str | None = None
    source: str = "--tag"


@dataclass(frozen=True, kw_only=True)
class TemplateValues:
    """What a template can see. ``env`` holds only the names ``.Env`` is allowed to read."""

    commit_sha: str | None
    pr_number: int | None
    date: str
    env: Mapping[str, str]
    allowed_env: frozenset[str]


# --- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _FieldRef:
    field: str


@dataclass(frozen=True)
class _EnvRef:
    name: str


_Node = _Text | _FieldRef | _EnvRef


def parse_template(template: str) -> list[_Node]:
    """Split a template into text and actions; refuse any construct outside the subset."""
    nodes: list[_Node] = []
    pos = 0
    trim_next = False
    while True:
        start = template.find("{{", pos)
        text = template[pos:] if start < 0 else template[pos:start]
        if trim_next:
            text = text.lstrip(_TRIM_SPACE)
        if start < 0:
            if text:
                nodes.append(_Text(text))
            return nodes
        inner_start = start + 2
        if template[inner_start : inner_start + 2] in ("- ", "-\t", "-\n", "-\r"):
            text = text.rstrip(_TRIM_SPACE)
            inner_start += 1
        if text:
            nodes.append(_Text(text))
        end = template.find("}}", inner_start)
        if end < 0:
            raise TemplateError(f"tag template {template!r} has '{{{{' without a closing '}}}}'")
        inner_end = end
        trim_next = False
        if (
            end - 1 >= inner_start
            and template[end - 1] == "-"
            and template[end - 2 : end - 1]
            in (
                " ",
                "\t",
                "\n",
                "\r",
            )
        ):
            inner_end = end - 1
            trim_next = True
        nodes.append(_parse_action(template[inner_start:inner_end].strip(_TRIM_SPACE), template))
        pos = end + 2


def _parse_action(action: str, template: str) -> _Node:
    if not action:
        raise TemplateError(f"tag template {template!r} has an empty action '{{{{ }}}}'")
    if m := _FIELD.fullmatch(action):
        field = m.group(1)
        if field in FIELDS:
            return _FieldRef(field)
        if field == "Env":
            raise TemplateError(
                f'tag template {template!r}: .Env needs a variable name, e.g. {{{{ .Env "BUILD_ID" }}}}'
            )
        raise TemplateError(
            f"tag template {template!r} uses unknown field '.{field}'; "
            f'supported: {", ".join("." + f for f in FIELDS)}, .Env "NAME"'
        )
    if m := _ENV_CALL.fullmatch(action):
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if not _ENV_NAME.fullmatch(name):
            raise TemplateError(
                f"tag template {template!r}: {name!r} is not an environment variable name"
            )
        return _EnvRef(name)
    construct = action.split()[0] if action.split() else action
    if construct.startswith("/*"):
        construct = "comment"
    elif "|" in action:
        construct = "pipeline '|'"
    elif construct.startswith("."):
        construct = f"'{action}'"
    else:
        construct = f"'{construct}'"
    raise TemplateError(
        f"tag template {template!r} uses {construct}, which tag templates do not support; "
        'use only {{ .CommitSHA }}, {{ .ShortSHA }}, {{ .PRNumber }}, {{ .Date }} or {{ .Env "NAME" }}'
    )


def render_template(template: str, values: TemplateValues) -> str:
    out: list[str] = []
    for node in parse_template(template):
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _FieldRef):
            out.append(_field_value(node.field, template, values))
        else:
            out.append(_env_value(node.name, template, values))
    return "".join(out)


def _field_value(field: str, template: str, values: TemplateValues) -> str:
    if field == "Date":
        return values.date
    if field == "PRNumber":
        if values.pr_number is None:
            raise TemplateError(
                f"tag template {template!r} uses .PRNumber, which is only set for pull request "
                "builds; use it only in default-pr-tag or additional-pr-tag"
            )
        return str(values.pr_number)
    if values.commit_sha is None:
        raise TemplateError(
            f"tag template {template!r} uses .{field}, but the commit being built is unknown; "
            "run inside a git checkout or a supported CI system"
        )
    return values.commit_sha if field == "CommitSHA" else values.commit_sha[:8]


def _env_value(name: str, template: str, values: TemplateValues) -> str:
    if name not in values.allowed_env:
        raise TemplateError(
            f'tag template {template!r} reads .Env "{name}", which tag templates may not read; '
            f"list it under 'tag-template-env' in config.yaml (an env file gives values, it "
            "never makes a name readable)"
        )
    value = values.env.get(name)
    if value is None:
        raise TemplateError(f'tag template {template!r} reads .Env "{name}", but {name} is not set')
    return value


# --- named tags -------------------------------------------------------------------------------


def derive_name(value: str) -> str:
    """The Go tool's rule: drop everything but letters, digits, ``_`` and ``-``."""
    return _NOT_NAME.sub("", value)


def parse_tag_arg(text: str, *, source: str = "--tag") -> TagSpec:
    """``name=value`` or a bare value whose name is derived from it."""
    if "=" in text:
        name, _, value = text.partition("=")
        if "=" in value:
            raise TagError(f"{source} {text!r} has more than one '='; use name=value")
        if not TAG_NAME.fullmatch(name):
            raise TagError(
                f"{source} {text!r}: tag name {name!r} may hold only letters, digits, '_', '.' "
                "and '-'"
            )
    else:
        name, value = derive_name(text), text
    if not value.strip():
        raise TagError(f"{source} {text!r} has an empty value; use name=value or a plain value")
    if not name:
        raise TagError(f"{source} {text!r}: cannot derive a tag name from it; use name=value")
    return TagSpec(name=name, template=value, source=source)


def decode_tags_base64(encoded: str) -> list[TagSpec]:
    """``--tag-base64``: base64 of comma-separated tags, as the Go tool's Tags.String() writes."""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise TagError(
            "--tag-base64 is not valid base64 of UTF-8 text; encode the comma-separated tags "
            "with e.g. `printf %s 'a=1,b=2' | base64 -w0`"
        ) from None
    return [
        parse_tag_arg(part, source="--tag-base64") for part in decoded.split(",") if part.strip()
    ]


def spec_from_config(template: TagTemplate, key: str) -> TagSpec:
    return TagSpec(
        name=template.name or derive_name(template.value),
        template=template.value,
        validation=template.validation,
        source=key,
    )


def default_spec(config: Config, ctx: CIContext) -> TagSpec:
    """The event's default tag."""
    if ctx.job_type == "presubmit":
        return spec_from_config(config.default_pr_tag, "default-pr-tag")
    if ctx.job_type == "merge_group":
        return spec_from_config(config.default_merge_group_tag, "default-merge-group-tag")
    return spec_from_config(config.default_commit_tag, "default-commit-tag")


def additional_specs(config: Config, ctx: CIContext) -> list[TagSpec]:
    """``additional-pr-tag``, on pull request builds only."""
    if ctx.job_type == "presubmit" and config.additional_pr_tag is not None:
        return [spec_from_config(config.additional_pr_tag, "additional-pr-tag")]
    return []


# --- rendering and validation -----------------------------------------------------------------


def render_tags(specs: Sequence[TagSpec], values: TemplateValues) -> list[Tag]:
    """Render, normalise and validate. Every name is kept, so ``--export-tags`` passes each
    ``TAG_<name>`` even when two names share a value; only a repeated name/value pair is
    merged. (The image gets each distinct value once: see :func:`tag_values`.)"""
    tags: list[Tag] = []
    names: dict[str, str] = {}
    for spec in specs:
        value = render_template(spec.template, values).strip().replace(" ", "-")
        check_tag_value(value, spec)
        if spec.name in names:
            if names[spec.name] != value:
                raise TagError(
                    f"two tags are named {spec.name!r} ({names[spec.name]!r} and {value!r}); "
                    "give one another name with --tag name=value"
                )
            continue
        names[spec.name] = value
        tags.append(Tag(name=spec.name, value=value, validation=spec.validation))
    return tags


def tag_values(tags: Iterable[Tag]) -> tuple[str, ...]:
    """The distinct tag values, in order: what goes on the image."""
    return tuple(dict.fromkeys(t.value for t in tags))


def check_tag_value(value: str, spec: TagSpec) -> None:
    where = f"{spec.source} {spec.template!r}"
    if not OCI_TAG.fullmatch(value):
        raise TagError(
            f"{where} renders to {value!r}, which is not a valid OCI tag: use letters, digits, "
            "'_', '.' and '-', start with a letter, digit or '_', at most 128 characters"
        )
    if _SIGNATURE_TAG.fullmatch(value):
        raise TagError(
            f"{where} renders to {value!r}, which looks like a signature, attestation or SBOM tag; "
            "choose a tag that does not start with sha256-"
        )
    if spec.validation is not None and not re.fullmatch(spec.validation, value):
        raise TagError(
            f"{where} renders to {value!r}, which does not match its validation {spec.validation!r}"
        )


def template_values(
    ctx: CIContext,
    *,
    now: datetime,
    env: Mapping[str, str],
    env_file: Mapping[str, str],
    allowed_env: Iterable[str],
) -> TemplateValues:
    """Values for templates. ``.Env`` serves only the names that the config allows: the variable
    if it is set, else the env file's entry. An env file can give a value to an allowed name; it
    can never make a name readable, so a caller cannot ask for a secret of this machine."""
    allowed = frozenset(allowed_env)
    visible = {
        name: env[name] if name in env else env_file[name]
        for name in allowed
        if name in env or name in env_file
    }
    return TemplateValues(
        commit_sha=ctx.commit_sha,
        pr_number=ctx.pr_number,
        date=utc_date(now),
        env=visible,
        allowed_env=allowed,
    )


def utc_date(now: datetime) -> str:
    """``YYYYMMDD`` in UTC; a naive datetime is taken to be UTC already."""
    return (now.astimezone(UTC) if now.tzinfo is not None else now).strftime("%Y%m%d")
