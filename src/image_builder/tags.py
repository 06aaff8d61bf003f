"""The tag engine: a safe evaluator for the Go-template subset tag templates use, named tags,
the default tag per event, and validation.

Supported actions: the fields in :data:`FIELDS` (``{{ .ShortSHA }}``, ``{{ .Version }}``, ...)
and ``{{ .Env "NAME" }}``, with ``{{-``/``-}}`` trimming. Anything else is refused by name.

Which tags a build gets follows the event table (:mod:`image_builder.events`): the event's default
tag, the user's tags, and for a version tag (``refs/tags/v1.2.3``) the ``semver-tags``.
Release-only tags (``latest``) are kept only on release builds of the default branch and of
version tags; elsewhere they are dropped, with the reason.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from image_builder.config import Config, TagTemplate
from image_builder.context import CIContext
from image_builder.errors import TagError, TemplateError

if TYPE_CHECKING:
    import semver

FIELDS = (
    "CommitSHA",
    "ShortSHA",
    "PRNumber",
    "Date",
    "Ref",
    "Branch",
    "Tag",
    "Version",
    "Major",
    "Minor",
    "Patch",
    "Event",
)
_SUPPORTED = ", ".join(f"{{{{ .{f} }}}}" for f in FIELDS) + ', {{ .Env "NAME" }}'
_NOT_IN_TAG = re.compile(r"[^A-Za-z0-9_.-]")
DIRTY_SUFFIX = "-dirty"
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
    rule: str = field(default="", compare=False)  # what made it: --tag, default-commit-tag, ...

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
    default: bool = False  # the event's default tag: always applied


@dataclass(frozen=True, kw_only=True)
class DroppedTag:
    """A tag this build does not apply, and why."""

    tag: Tag
    reason: str

    def notice(self) -> str:
        return f"tag {self.tag.value!r} ({self.tag.rule}) is not applied: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class TagSet:
    """The tags a build applies, in order, and those it drops with the reason."""

    tags: tuple[Tag, ...]
    dropped: tuple[DroppedTag, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TemplateValues:
    """What a template can see. ``env`` holds only the names ``.Env`` is allowed to read."""

    commit_sha: str | None
    pr_number: int | None
    date: str
    env: Mapping[str, str]
    allowed_env: frozenset[str]
    ref: str | None = None
    branch: str | None = None
    git_tag: str | None = None
    version: semver.Version | None = None
    event: str = ""


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
            f"tag template {template!r} uses unknown field '.{field}'; supported: {_SUPPORTED}"
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
        f"use only {_SUPPORTED}"
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


def uses_field(template: str, name: str) -> bool:
    return any(isinstance(n, _FieldRef) and n.field == name for n in parse_template(template))


def _field_value(field: str, template: str, values: TemplateValues) -> str:
    if field == "Date":
        return values.date
    if field == "Event":
        return values.event
    if field in ("Ref", "Branch", "Tag"):
        return _ref_value(field, template, values)
    if field in ("Version", "Major", "Minor", "Patch"):
        if values.version is None:
            raise TemplateError(
                f"tag template {template!r} uses .{field}, which is only set when building a "
                f"version tag such as refs/tags/v1.2.3; this build is of {values.ref or 'no ref'}"
            )
        if field == "Version":
            # Build metadata (1.2.3+build.5) cannot be in an OCI tag; '_' stands for '+', as Helm does.
            return str(values.version).replace("+", "_")
        return str(getattr(values.version, field.lower()))
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


def _ref_value(field: str, template: str, values: TemplateValues) -> str:
    """``.Ref``, ``.Branch`` and ``.Tag``, with every character an OCI tag cannot hold made
    ``-``, as docker/metadata-action does (``refs/heads/feat/x`` -> ``refs-heads-feat-x``)."""
    value = {"Ref": values.ref, "Branch": values.branch, "Tag": values.git_tag}[field]
    if value is None:
        what = {
            "Ref": "the git ref being built is known",
            "Branch": "building a branch",
            "Tag": "building a git tag (refs/tags/...)",
        }[field]
        raise TemplateError(
            f"tag template {template!r} uses .{field}, which is only set when {what}; this "
            f"build is of {values.ref or 'no known ref'}"
        )
    return _NOT_IN_TAG.sub("-", value)


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


def spec_from_config(template: TagTemplate, key: str, *, default: bool = False) -> TagSpec:
    return TagSpec(
        name=template.name or derive_name(template.value),
        template=template.value,
        validation=template.validation,
        source=key,
        default=default,
    )


def default_spec(config: Config, ctx: CIContext) -> TagSpec:
    """The event's default tag, from the config key the event table names."""
    key = ctx.rule.default_tag_key
    template = {
        "default-pr-tag": config.default_pr_tag,
        "default-merge-group-tag": config.default_merge_group_tag,
        "default-commit-tag": config.default_commit_tag,
    }[key]
    return spec_from_config(template, key, default=True)


def additional_specs(config: Config, ctx: CIContext) -> list[TagSpec]:
    """``additional-pr-tag``, on pull request builds only."""
    if ctx.is_pull_request and config.additional_pr_tag is not None:
        return [spec_from_config(config.additional_pr_tag, "additional-pr-tag")]
    return []


def version_of(ref: str | None) -> semver.Version | None:
    """The semantic version a git tag ref names (``refs/tags/v1.2.3`` or ``refs/tags/1.2.3``)."""
    if not ref or not ref.startswith("refs/tags/"):
        return None
    import semver  # 15 ms of start-up, for tag builds only

    name = ref.removeprefix("refs/tags/")
    try:
        return semver.Version.parse(name[1:] if name[:1] == "v" else name)
    except (ValueError, TypeError):
        return None


def semver_specs(config: Config, version: semver.Version | None, ref: str | None) -> list[TagSpec]:
    """``semver-tags`` for a version tag. A pre-release gets only the templates that use
    ``.Version``: it never moves ``1`` or ``1.3``."""
    if version is None:
        return []
    return [
        TagSpec(
            name=derive_name(template),
            template=template,
            source=f"semver-tags ({ref})",
        )
        for template in config.semver_tags
        if not version.prerelease or uses_field(template, "Version")
    ]


def release_tags_withheld(config: Config, ctx: CIContext, values: TemplateValues) -> str | None:
    """Why this build may not move release-only tags, or ``None`` when it may: a release build
    (push, schedule, manual run) of the default branch, or of a version tag that is no
    pre-release, from a clean tree."""
    if not ctx.is_release:
        return f"{ctx.event} builds never move release-only tags ({ctx.job_type})"
    if ctx.dirty:
        return ctx.dirty
    if values.version is not None:
        if values.version.prerelease:
            return f"{values.git_tag} is a pre-release"
        return None
    # Where neither config nor the CI system names the default branch (Jenkins, Azure DevOps, a
    # clone without origin/HEAD), both customary names count.
    known = config.default_branch or ctx.default_branch
    defaults = (known,) if known else ("main", "master")
    # An unknown ref (a folder outside git, a pipeline run without BASE_REF) is not held
    # against the build: the Go tool applied every tag there, and what protects release tags
    # from pull requests is the event, which is always known.
    if ctx.ref is None or ctx.ref in {f"refs/heads/{b}" for b in defaults}:
        return None
    return f"{ctx.ref} is neither the default branch ({' or '.join(defaults)}) nor a version tag"


def event_specs(
    config: Config,
    ctx: CIContext,
    *,
    tags: Sequence[str],
    tag_base64: str | None,
    version: semver.Version | None,
) -> list[TagSpec]:
    """Every tag the build asks for, in the Go tool's order: ``--tag``, ``additional-pr-tag``,
    ``--tag-base64``; then ``semver-tags`` and the event's default tag last."""
    specs = [parse_tag_arg(text) for text in tags]
    specs += additional_specs(config, ctx)
    if tag_base64:
        specs += decode_tags_base64(tag_base64)
    specs += semver_specs(config, version if ctx.is_release else None, ctx.ref)
    specs.append(default_spec(config, ctx))
    return specs


def resolve_tags(
    config: Config, ctx: CIContext, specs: Sequence[TagSpec], values: TemplateValues
) -> TagSet:
    """Render the specs and drop the release-only ones this build may not move; the default tag
    (also when a user tag repeats it) is always kept. A tree not known to be the commit marks
    every tag ``-dirty``, so that it overwrites no tag a clean build made."""
    withheld = release_tags_withheld(config, ctx, values)
    release_only = {"latest", *config.release_only_tags}
    defaults = {spec.name for spec in specs if spec.default}
    kept: list[Tag] = []
    dropped: list[DroppedTag] = []
    for spec, tag in zip(specs, _render(specs, values), strict=True):
        if tag is None:
            continue
        if (
            tag.name not in defaults
            and withheld is not None
            and release_only & {tag.name, tag.value}
        ):
            dropped.append(DroppedTag(tag=tag, reason=withheld))
            continue
        if ctx.dirty:
            value = tag.value + DIRTY_SUFFIX
            check_tag_value(value, replace(spec, validation=None))  # the suffix is ours
            tag = replace(tag, value=value, validation=None, rule=f"{tag.rule}, {DIRTY_SUFFIX}")
        kept.append(tag)
    return TagSet(tags=tuple(kept), dropped=tuple(dropped))


# --- rendering and validation -----------------------------------------------------------------


def render_tags(specs: Sequence[TagSpec], values: TemplateValues) -> list[Tag]:
    """Render, normalise and validate. Every name is kept, so ``--export-tags`` passes each
    ``TAG_<name>`` even when two names share a value; only a repeated name/value pair is
    merged. (The image gets each distinct value once: see :func:`tag_values`.)"""
    return [tag for tag in _render(specs, values) if tag is not None]


def _render(specs: Sequence[TagSpec], values: TemplateValues) -> list[Tag | None]:
    """One entry per spec; ``None`` where it repeats an earlier name with the same value."""
    tags: list[Tag | None] = []
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
            tags.append(None)
            continue
        names[spec.name] = value
        tags.append(Tag(name=spec.name, value=value, validation=spec.validation, rule=spec.source))
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
    ref = ctx.ref
    branch = ctx.head_branch if ctx.is_pull_request else None
    if branch is None and ref and ref.startswith("refs/heads/"):
        branch = ref.removeprefix("refs/heads/")
    git_tag = ref.removeprefix("refs/tags/") if ref and ref.startswith("refs/tags/") else None
    return TemplateValues(
        commit_sha=ctx.commit_sha,
        pr_number=ctx.pr_number,
        date=utc_date(now),
        env=visible,
        allowed_env=allowed,
        ref=ref,
        branch=branch,
        git_tag=git_tag,
        version=version_of(ref),
        event=ctx.event,
    )


def dirty_notice(why: str, commit_sha: str | None) -> str:
    return (
        f"{why}: the image may not be the commit {(commit_sha or '')[:8]}, so its tags end in "
        f"{DIRTY_SUFFIX}, release-only tags are dropped and nothing is signed; commit or stash "
        "the changes for a release build"
    )


def utc_date(now: datetime) -> str:
    """``YYYYMMDD`` in UTC; a naive datetime is taken to be UTC already."""
    return (now.astimezone(UTC) if now.tzinfo is not None else now).strftime("%Y%m%d")
