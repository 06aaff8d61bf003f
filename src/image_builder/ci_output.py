"""CI outputs: GitHub step outputs (multi-line-safe form), the step summary, and Azure DevOps
output variables."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from image_builder.report import BuildReport


def github_outputs(report: BuildReport) -> dict[str, str]:
    return {
        "images": json.dumps(report.images_list),
        "digest": report.digest or "",
        "architectures": json.dumps(report.architectures),
        "build-report": report.to_json(),
    }


def format_outputs(values: Mapping[str, str]) -> str:
    """``name<<DELIM`` blocks with a random delimiter that does not occur in any value."""
    out = []
    for name, value in values.items():
        delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
        while delimiter in value:
            delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
        out.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(out)


def append(path: Path, text: str) -> None:
    # GitHub's files are appended to by every step; one write call keeps this step's block whole.
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


# Any control character (a carriage return too) would end the value and start a line, and with
# it, perhaps, a logging command of whoever chose the value.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def vso_variables(values: Mapping[str, str]) -> list[str]:
    """``##vso[task.setvariable]`` lines for an Azure DevOps step's outputs."""
    return [
        f"##vso[task.setvariable variable={name};isOutput=true]{_CONTROL.sub(' ', value)}"
        for name, value in values.items()
    ]


def signing_success(succeeded: bool) -> str:
    """The Go tool's ``--ado-state-output`` variable, in its exact form."""
    value = "true" if succeeded else "false"
    return f"##vso[task.setvariable variable=signing_success;issecret=false;isoutput=true]{value}"


def step_summary(report: BuildReport | None, *, link: str | None = None) -> str:
    run = [f"Azure DevOps run: {link}", ""] if link else []
    if report is None:
        return "\n".join(["### Image build — ❌ no build report", "", *run]) + "\n"
    status = {"Succeeded": "✅ Succeeded", "Cancelled": "⏹ Cancelled"}.get(
        report.status, "❌ Failed"
    )
    lines = [
        f"### Image build: {report.image_name} — {status}",
        "",
        *run,
        "| Image | Digest | Architectures |",
        "|---|---|---|",
    ]
    for image in report.images_list:
        lines.append(
            f"| `{image}` | `{report.digest or '-'}` | {', '.join(report.architectures) or '-'} |"
        )
    for moved in report.superseded_images:
        now = f"`{moved.digest}`" if moved.digest else "nothing (deleted)"
        lines.append(
            f"| `{moved.image}` | superseded: another build moved it; it holds {now} | - |"
        )
    for failed in report.failed_images:
        lines.append(f"| `{failed.image}` | not pushed: {_text(failed.error)} | - |")
    if not report.images_list and not report.failed_images and not report.superseded_images:
        lines.append(
            f"| {report.image_name} | not pushed | {', '.join(report.architectures) or '-'} |"
        )
    if report.manifests:
        lines += ["", "| Platform | Manifest digest |", "|---|---|"]
        lines += [f"| {m.platform} | `{m.digest}` |" for m in report.manifests]
    lines += _signing(report)
    lines += _attestations(report)
    if report.error:
        lines += ["", f"**Error:** {_text(report.error)}"]
    return "\n".join(lines) + "\n\n"


def _text(message: str) -> str:
    """An error message (it may quote a registry's or a service's answer) as inert Markdown on
    one table line: no line break, no cell separator, no HTML, no link or image syntax."""
    one_line = " ".join(message.split())
    return re.sub(r"([\\`*_\[\]<>|!#])", r"\\\1", one_line)


def _signing(report: BuildReport) -> list[str]:
    """Who signed, who failed to and why, and how to check the signatures."""
    types = {s.name: s.type for s in report.signers}
    errors = {e.signer: e.error for e in report.signing_errors}
    names = list(dict.fromkeys([*types, *report.signed_by, *errors]))
    if not names:
        return []
    lines = ["", "**Signers**", ""]
    for name in names:
        kind = f" ({types[name]})" if name in types else ""
        if name in report.signed_by:
            lines.append(f"- ✅ `{name}`{kind} signed `{report.digest}`")
        elif name in errors:
            lines.append(f"- ❌ `{name}`{kind} failed: {_text(errors[name])}")
        elif report.status == "Cancelled":
            lines.append(f"- ⏹ `{name}`{kind}: not signed, the build was cancelled")
        elif not report.pushed:
            lines.append(f"- ⏭ `{name}`{kind}: not signed, the push did not complete")
        else:
            lines.append(
                f"- ⏸ `{name}`{kind}: not signed yet; sign with "
                "`image-builder sign --from-report <build report>`"
            )
    cosign = [n for n in report.signed_by if types.get(n) == "cosign"]
    references = _signed_references(report)
    if not cosign or not references:
        return lines
    keys = {n: "cosign.pub" if len(cosign) == 1 else f"{n}.pub" for n in cosign}
    shown = ", ".join(f"`{key}` for `{name}`" for name, key in keys.items())
    lines += [
        "",
        f"**Verify** ({shown}: the public key of the signer's key pair; `image-builder keygen` "
        "wrote it next to the private key, as `<prefix>.pub`. The signatures are in cosign's "
        "format, without a transparency-log entry.)",
        "",
        "```sh",
    ]
    for name in cosign:
        for ref in references:
            lines.append(f"image-builder verify {ref} --key {keys[name]}")
            lines.append(f"cosign verify --key {keys[name]} --insecure-ignore-tlog=true {ref}")
    lines.append("```")
    return lines


def _attestations(report: BuildReport) -> list[str]:
    """Each stored provenance attestation, and how to verify it."""
    if not report.attestations:
        return []
    lines = [
        "",
        "**Provenance** (SLSA v1, in cosign's attestation layout; see docs/provenance.md)",
        "",
        "| Attestation | About | Signed by |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{a.reference}` | `{a.image}` | {f'`{a.signer}`' if a.signer else 'unsigned'} |"
        for a in report.attestations
    ]
    signers = list(dict.fromkeys(a.signer for a in report.attestations if a.signer))
    images = [a.image for a in report.attestations if a.image.endswith(f"@{report.digest}")]
    if not signers or not images:
        return lines
    from image_builder.provenance import COSIGN_TYPE

    keys = {n: "cosign.pub" if len(signers) == 1 else f"{n}.pub" for n in signers}
    lines += ["", "```sh"]
    for name in signers:
        for image in dict.fromkeys(images):
            lines.append(f"image-builder verify {image} --key {keys[name]} --provenance")
            lines.append(
                f"cosign verify-attestation --key {keys[name]} --type {COSIGN_TYPE} "
                f"--insecure-ignore-tlog=true {image}"
            )
    lines.append("```")
    return lines


def _signed_references(report: BuildReport) -> list[str]:
    """``repository@digest`` of every repository that holds the signed digest."""
    if not report.digest:
        return []
    tagged = [image.rpartition(":")[0] for image in report.images_list]
    stored = [image.partition("@")[0] for image in report.stored_in]
    return [f"{name}@{report.digest}" for name in dict.fromkeys([*tagged, *stored])]
