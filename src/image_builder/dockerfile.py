"""What a Dockerfile pulls: the images its FROM, COPY --from and RUN --mount=...,from= name, after
build arguments, read as docker and buildah 1.28 read them. Pure: text in, references out.

This is the static half of ``--use-restricted-registry``; the containers policy that buildah gets
is the other half, since a parser can be fooled. Where this reader and buildah could disagree
(an unknown variable, a transport prefix, a substitution form it does not know), the image
counts as unreadable, which the restricted check refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from image_builder.errors import InputError
from image_builder.oci import parse_reference

# containers/image transports that buildah accepts in FROM as `<transport>:<reference>`.
_TRANSPORTS = frozenset(
    {
        "containers-storage",
        "dir",
        "docker",
        "docker-archive",
        "docker-daemon",
        "oci",
        "oci-archive",
        "ostree",
        "sif",
        "tarball",
    }
)
_DIRECTIVE = re.compile(r"#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*")
# The instructions buildah reads; any other stops the build when it gets there.
INSTRUCTIONS = frozenset(
    {
        "ADD",
        "ARG",
        "CMD",
        "COPY",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "FROM",
        "HEALTHCHECK",
        "LABEL",
        "MAINTAINER",
        "ONBUILD",
        "RUN",
        "SHELL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)
_HEREDOC = re.compile(r"<<-?\s*[\"']?\w")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, kw_only=True)
class Instruction:
    line: int  # where the instruction starts, 1-based
    keyword: str  # upper-case
    flags: tuple[str, ...]  # leading --name[=value] words, as written
    args: str  # the rest, continuation lines joined
    escape: str = "\\"  # the file's escape character (# escape=)


@dataclass(frozen=True, kw_only=True)
class ImageUse:
    """An image the build pulls, or tries to: ``reference`` is its normalised form, or ``None``
    with ``problem`` saying why it cannot be known before the build."""

    line: int
    shown: str  # the instruction's part that names it, e.g. "FROM golang:1.22"
    reference: str | None
    problem: str | None = None
    platform: str | None = (
        None  # FROM --platform=..., expanded: the platform pulled, if not the target
    )


class Unresolvable(Exception):
    """A word whose value depends on something this reader cannot know."""


class BadReference(ValueError):
    pass


class DockerfileSyntaxError(InputError):
    """A Dockerfile that buildah cannot read."""


def check_syntax(text: str, *, label: str) -> None:
    """Refuse, naming the line, a Dockerfile that no build can get through: an unknown
    instruction, an instruction other than ARG before the first FROM, or no FROM at all. buildah
    finds an unknown instruction only when the build reaches it; this finds it before anything
    runs. A heredoc (``RUN <<EOF``) ends the check: a buildah that reads heredocs takes its body
    as text, and one that does not says so itself."""
    import difflib

    seen_from = False
    for instruction in parse(text):
        keyword = instruction.keyword
        where = f"{label} line {instruction.line}"
        if keyword not in INSTRUCTIONS:
            close = difflib.get_close_matches(keyword, sorted(INSTRUCTIONS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise DockerfileSyntaxError(
                f"{where}: unknown instruction {_printable(keyword, 40)}{hint}; fix the Dockerfile"
            )
        if not seen_from and keyword not in ("ARG", "FROM"):
            raise DockerfileSyntaxError(
                f"{where}: {keyword} comes before any FROM; fix the Dockerfile: it starts with "
                "FROM <image> (only ARG may come before it)"
            )
        seen_from = seen_from or keyword == "FROM"
        if _HEREDOC.search(instruction.args):
            return
    if not seen_from:
        raise DockerfileSyntaxError(
            f"{label} has no FROM instruction; fix the Dockerfile: it starts with FROM <image>"
        )


# --- reading ------------------------------------------------------------------------------------


def parse(text: str) -> list[Instruction]:
    """The instructions of ``text``: parser directives (``# escape=``), comments, empty lines and
    line continuations handled as docker does. Heredocs are not read, as buildah 1.28 does not."""
    # Lines end at "\n" alone, as for docker's scanner: str.splitlines would also break at
    # characters docker keeps inside a line, and so see instructions that docker does not.
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    escape = "\\"
    start = 0
    for line in lines:
        match = _DIRECTIVE.fullmatch(line.strip())
        if match is None:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            escape = match.group(2)
        start += 1
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    logical = ""
    first = 0
    for number, line in enumerate(lines[start:], start=start + 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continued instruction: docker drops such lines there
        if not logical:
            first = number
        if continuation.search(line):
            logical += continuation.sub("", line)
            continue
        out.append(_instruction(first, logical + line, escape))
        logical = ""
    if logical.strip():
        out.append(_instruction(first, logical, escape))
    return out


def _instruction(line: int, text: str, escape: str) -> Instruction:
    keyword, _, rest = text.strip().replace("\t", " ").partition(" ")
    rest = rest.strip()
    flags: list[str] = []
    for word in _words(rest, escape):
        if not word.startswith("--"):
            break
        flags.append(word)
    args = rest
    for flag in flags:
        args = args[args.index(flag) + len(flag) :].lstrip()
    return Instruction(
        line=line, keyword=keyword.upper(), flags=tuple(flags), args=args, escape=escape
    )


def _words(text: str, escape: str) -> Iterator[str]:
    """Whitespace-separated words, quotes and escapes kept (they are resolved on expansion)."""
    word = ""
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == escape and quote != "'" and i + 1 < len(text):
            word += text[i : i + 2]
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch.isspace():
            if word:
                yield word
            word = ""
            i += 1
            continue
        word += ch
        i += 1
    if word:
        yield word


# --- variables ----------------------------------------------------------------------------------


def expand(word: str, variables: Mapping[str, str | None], escape: str = "\\") -> str:
    """``word`` with quotes removed and ``$NAME``, ``${NAME}``, ``${NAME:-word}``,
    ``${NAME:+word}`` and ``${NAME:?word}`` substituted, as buildah 1.28's shell lexer does. A
    variable that is not declared, or declared without a value, is :class:`Unresolvable`, and so
    is any other substitution form. The message says how to fix it."""
    out, _ = _expand(word, variables, escape, stop="", strict=True)
    return out


def _expand(
    text: str, variables: Mapping[str, str | None], escape: str, *, stop: str, strict: bool
) -> tuple[str, str]:
    """The expansion of ``text`` up to ``stop`` (outside quotes), and what follows from there.
    Without ``strict``, unknown values expand to nothing: for finding where a word ends."""
    out = ""
    i = 0
    quote = ""
    while i < len(text):
        ch = text[i]
        if not quote and stop and ch == stop:
            return out, text[i:]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                out += ch
            i += 1
            continue
        if ch == escape and i + 1 < len(text):
            nxt = text[i + 1]
            if quote == '"' and nxt not in ('"', "$", escape):
                out += ch
            out += nxt
            i += 2
            continue
        if ch == '"' or (ch == "'" and not quote):
            quote = "" if quote else ch
            i += 1
            continue
        if ch == "$":
            value, used = _dollar(text[i + 1 :], variables, escape, strict=strict)
            out += value
            i += 1 + used
            continue
        out += ch
        i += 1
    if quote:
        raise Unresolvable(f"it has an unclosed {quote} quote; close it")
    if stop:
        raise Unresolvable("it has an unclosed ${; close it with }")
    return out, ""


def _dollar(
    text: str, variables: Mapping[str, str | None], escape: str, *, strict: bool
) -> tuple[str, int]:
    """The value of the substitution at the start of ``text`` (after ``$``), and its length."""
    plain = _NAME.match(text)
    if plain:
        return _value(plain.group(0), variables, strict=strict), plain.end()
    if not text.startswith("{"):
        return "$", 0
    match = _NAME.match(text, 1)
    if match is None:
        raise Unresolvable(
            f"${text[:12]} is not a substitution buildah 1.28 supports; use ${{NAME}}"
        )
    name, at = match.group(0), match.end()
    if at == len(text):
        raise Unresolvable("it has an unclosed ${; close it with }")
    if text[at] == "}":
        return _value(name, variables, strict=strict), at + 1
    modifier = text[at : at + 2]
    if modifier not in (":-", ":+", ":?"):
        raise Unresolvable(
            f"${{{name}{text[at]}...}} is a substitution buildah 1.28 does not support; use "
            f"${{{name}}}, ${{{name}:-default}} or ${{{name}:+word}}"
        )
    word, rest = _expand(text[at + 2 :], variables, escape, stop="}", strict=False)
    used = len(text) - len(rest) + 1
    current = variables.get(name)
    uses_word = not current if modifier == ":-" else bool(current) and modifier == ":+"
    if uses_word and strict:
        word, _ = _expand(text[at + 2 :], variables, escape, stop="}", strict=True)
    if modifier == ":?" and not current and strict:
        raise Unresolvable(_no_value(name))
    if modifier == ":+":
        return (word if current else ""), used
    return (word if uses_word else current or ""), used


def _value(name: str, variables: Mapping[str, str | None], *, strict: bool) -> str:
    value = variables.get(name)
    if value is None and strict:
        if name not in variables:
            raise Unresolvable(
                f"{name} is not declared with ARG; declare it with a default (ARG {name}=...)"
            )
        raise Unresolvable(_no_value(name))
    return value or ""


def _no_value(name: str) -> str:
    return f"{name} has no value; give it a default (ARG {name}=...) or pass --build-arg {name}=..."


def platform_args(target: str, build: str) -> dict[str, str]:
    """The automatic platform arguments: their values where the Dockerfile declares them."""
    out: dict[str, str] = {}
    for prefix, platform in (("TARGET", target), ("BUILD", build)):
        parts = [*platform.split("/"), "", ""]
        out[f"{prefix}PLATFORM"] = platform
        out[f"{prefix}OS"], out[f"{prefix}ARCH"], out[f"{prefix}VARIANT"] = parts[:3]
    return out


def _declare(
    instruction: Instruction,
    scope: dict[str, str | None],
    outer: Mapping[str, str | None],
    given: Mapping[str, str],
) -> None:
    """``ARG a=1 b``: each name gets the build argument, else its default (expanded), else, for a
    stage's redeclaration of a global ARG, the global value, else no value."""
    for word in _words(instruction.args, instruction.escape):
        name, sep, default = word.partition("=")
        if not _NAME.fullmatch(name):
            continue  # docker refuses the build; nothing is pulled through it
        if name in given:
            scope[name] = given[name]
        elif sep:
            try:
                scope[name] = expand(default, scope, instruction.escape)
            except Unresolvable:
                scope[name] = None
        else:
            scope[name] = outer.get(name)


# --- images -------------------------------------------------------------------------------------


def image_uses(
    instructions: Sequence[Instruction],
    build_args: Mapping[str, str],
    platform: Mapping[str, str] | None = None,
) -> list[ImageUse]:
    """Every image the build would pull, for one target platform: each FROM that is not
    ``scratch`` or an earlier stage, each ``COPY --from`` and ``RUN --mount=...,from=`` that does
    not name an earlier stage (by name or index). Build arguments (and ``platform``'s automatic
    ones) apply to declared ARGs only; FROM sees the ARGs above the first FROM, the others see
    their stage's ARGs (a global one only when declared again), as in buildah 1.28."""
    given = {**(platform or {}), **build_args}
    global_scope: dict[str, str | None] = {}
    stage_scope: dict[str, str | None] = {}
    stages: list[str | None] = []  # the stages so far by name (None: unnamed), this one last
    uses: list[ImageUse] = []
    for instruction in instructions:
        keyword = instruction.keyword
        if keyword == "ARG":
            _declare(instruction, stage_scope if stages else global_scope, global_scope, given)
        elif keyword == "FROM":
            uses.extend(_from(instruction, global_scope, stages, platform or {}))
            stage_scope = {}
        elif keyword in ("COPY", "ADD", "RUN") and stages:
            # A stage is only ever an earlier one: buildah pulls an image of the name otherwise.
            earlier = stages[:-1]
            for flag in instruction.flags:
                name, sep, value = flag.partition("=")
                name = name.lower()
                if name == "--from" and sep and keyword != "RUN":
                    shown = f"{keyword} {flag}"
                    uses.extend(_image(instruction, shown, value, stage_scope, earlier))
                elif name == "--mount" and sep and keyword == "RUN":
                    for field in value.split(","):
                        key, eq, source = field.partition("=")
                        if key.strip().lower() == "from" and eq:
                            shown = f"RUN {flag}"
                            uses.extend(_image(instruction, shown, source, stage_scope, earlier))
    return uses


def _from(
    instruction: Instruction,
    scope: Mapping[str, str | None],
    stages: list[str | None],
    automatic: Mapping[str, str],
) -> Iterator[ImageUse]:
    words = list(_words(instruction.args, instruction.escape))
    pulled: str | None = None
    for flag in instruction.flags:
        key, sep, value = flag.partition("=")
        if key.lower() == "--platform" and sep:
            try:  # the automatic platform arguments serve here undeclared
                pulled = expand(value, {**scope, **automatic}, instruction.escape) or None
            except Unresolvable:
                pulled = None
    name = words[2].lower() if len(words) == 3 and words[1].lower() == "as" else None
    if len(words) != 1 and name is None:
        yield ImageUse(
            line=instruction.line,
            shown=f"FROM {instruction.args}",
            reference=None,
            problem="it is not FROM [--platform=...] <image> [AS <name>]; fix the line",
        )
    else:
        for use in _image(instruction, f"FROM {words[0]}", words[0], scope, stages):
            yield replace(use, platform=pulled) if pulled else use
    stages.append(name)


def _image(
    instruction: Instruction,
    shown: str,
    written: str,
    scope: Mapping[str, str | None],
    stages: Sequence[str | None],
) -> Iterator[ImageUse]:
    line = instruction.line
    try:
        value = expand(written, scope, instruction.escape)
    except Unresolvable as exc:
        yield ImageUse(line=line, shown=shown, reference=None, problem=str(exc))
        return
    if instruction.keyword == "FROM" and value == "scratch":
        return
    if instruction.keyword != "FROM" and value.isdecimal() and int(value) < len(stages):
        return  # an earlier stage by its index
    if value.lower() in {name for name in stages if name}:
        return
    try:
        reference = normalise(value)
    except BadReference as exc:
        yield ImageUse(line=line, shown=shown, reference=None, problem=str(exc))
        return
    yield ImageUse(line=line, shown=shown, reference=reference)


# --- references ---------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """``busybox`` → ``docker.io/library/busybox``, ``org/x:1`` → ``docker.io/org/x:1``, as
    docker does (:func:`image_builder.oci.parse_reference`). A ``docker://`` prefix is dropped;
    another transport (``oci:``, ``docker-archive:``, ...) is a :class:`BadReference`, since
    buildah then reads no registry at all (and ``oci:latest`` is such a transport to buildah,
    not an image)."""
    transport, colon, rest = text.partition(":")
    if colon and transport in _TRANSPORTS:
        if transport != "docker":
            raise BadReference(
                f"buildah reads it through the {transport}: transport, not from a registry; "
                "name an image in one of the listed registries"
            )
        if rest.startswith("//"):
            text = rest[2:]
    try:
        ref = parse_reference(text, default_tag=None)
    except InputError:
        raise BadReference(f"{text!r} is not a valid image reference; correct it") from None
    return ref.name + (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")


def normalise_prefix(prefix: str) -> str:
    """A registry prefix as references are normalised: ``index.docker.io`` is ``docker.io``."""
    host, slash, path = prefix.strip("/").partition("/")
    return ("docker.io" if host == "index.docker.io" else host) + slash + path


def under(reference: str, prefix: str) -> bool:
    """Whether the normalised ``reference`` lies under the registry ``prefix`` on path-component
    boundaries: ``cgr.dev/sap`` holds ``cgr.dev/sap/go`` but not ``cgr.dev/sapper/x``."""
    name = parse_reference(reference).name
    prefix = normalise_prefix(prefix)
    return name == prefix or name.startswith(prefix + "/")


def check_restricted(
    text: str,
    *,
    label: str,
    build_args: Mapping[str, str],
    platforms: Iterable[str],
    build_platform: str,
    prefixes: Sequence[str],
) -> None:
    """Refuse, naming the line, any image the Dockerfile ``text`` would pull from outside
    ``prefixes``, or whose origin cannot be known before the build."""
    instructions = parse(text)
    listed = ", ".join(prefixes)
    for target in platforms:
        for use in image_uses(instructions, build_args, platform_args(target, build_platform)):
            shown = _printable(use.shown)
            if use.reference is None:
                raise InputError(
                    f"{label} line {use.line}: {shown} cannot be checked against "
                    f"restricted-registries ({listed}): {use.problem}"
                )
            if not any(under(use.reference, prefix) for prefix in prefixes):
                resolved = "" if use.reference in use.shown else f" ({use.reference})"
                raise InputError(
                    f"{label} line {use.line}: {shown}{_printable(resolved)} is not in "
                    f"restricted-registries ({listed}); take it from one of those registries, "
                    "or build without --use-restricted-registry"
                )


def _printable(text: str, limit: int = 200) -> str:
    """Dockerfile text for a one-line message: no control characters, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
