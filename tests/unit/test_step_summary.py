"""The GitHub step summary: each platform's manifest digest, who signed (and who failed to), and
commands that check the signatures; honest for failed, cancelled and partial builds."""

from __future__ import annotations

from image_builder.ci_output import step_summary
from image_builder.report import (
    AttestationRef,
    BuildReport,
    FailedImage,
    PlatformDigest,
    SignerInfo,
    SigningError,
)

DIGEST = "sha256:" + "a" * 64
AMD64, ARM64 = "sha256:" + "1" * 64, "sha256:" + "2" * 64

SIGNED = BuildReport(
    status="Succeeded",
    pushed=True,
    signed=True,
    image_name="team/app",
    images_list=[
        "r.example/team/app:v1",
        "r.example/team/app:latest",
        "localhost:5000/mirror/team/app:v1",
    ],
    digest=DIGEST,
    tags=["v1", "latest"],
    architectures=["linux/amd64", "linux/arm64"],
    platforms=["linux/amd64", "linux/arm64"],
    stored_in=[f"r.example/team/app@{DIGEST}", f"localhost:5000/mirror/team/app@{DIGEST}"],
    signed_by=["release-key"],
    signers=[SignerInfo(name="release-key", type="cosign")],
    manifests=[
        PlatformDigest(platform="linux/amd64", digest=AMD64),
        PlatformDigest(platform="linux/arm64", digest=ARM64),
    ],
)


def test_each_platform_manifest_digest_is_listed() -> None:
    text = step_summary(SIGNED)
    assert "| Platform | Manifest digest |" in text
    assert f"| linux/amd64 | `{AMD64}` |" in text
    assert f"| linux/arm64 | `{ARM64}` |" in text


def test_signers_and_ready_to_run_verify_commands_per_repository() -> None:
    text = step_summary(SIGNED)
    assert f"- ✅ `release-key` (cosign) signed `{DIGEST}`" in text
    for repository in ("r.example/team/app", "localhost:5000/mirror/team/app"):
        ref = f"{repository}@{DIGEST}"
        assert f"image-builder verify {ref} --key cosign.pub\n" in text
        assert f"cosign verify --key cosign.pub --insecure-ignore-tlog=true {ref}\n" in text
        assert text.count(f"image-builder verify {ref} ") == 1  # per repository, not per tag
    assert "`cosign.pub` for `release-key`: the public key of the signer's key pair" in text


def test_a_failed_signer_is_named_with_its_error_and_gets_no_command() -> None:
    report = SIGNED.model_copy(
        update={
            "status": "Failed",
            "signed": False,
            "signers": [
                SignerInfo(name="release-key", type="cosign"),
                SignerInfo(name="signify", type="notary"),
            ],
            "signing_errors": [SigningError(signer="signify", error="signer signify: HTTP 503")],
            "error": "signer signify: HTTP 503; the images are pushed but not signed",
        }
    )
    text = step_summary(report)
    assert "❌ Failed" in text
    assert "- ✅ `release-key` (cosign) signed" in text
    assert "- ❌ `signify` (notary) failed: signer signify: HTTP 503" in text
    assert "--key cosign.pub" in text  # the one that signed can be checked
    assert "signify.pub" not in text


def test_two_cosign_signers_each_get_their_own_key_name() -> None:
    report = SIGNED.model_copy(
        update={
            "signed_by": ["a", "b"],
            "signers": [SignerInfo(name="a", type="cosign"), SignerInfo(name="b", type="cosign")],
        }
    )
    text = step_summary(report)
    ref = f"r.example/team/app@{DIGEST}"
    assert f"image-builder verify {ref} --key a.pub" in text
    assert f"image-builder verify {ref} --key b.pub" in text


def test_a_cancelled_build_signed_nothing_and_offers_no_command() -> None:
    report = SIGNED.model_copy(
        update={
            "status": "Cancelled",
            "signed": False,
            "signed_by": [],
            "error": "cancelled (SIGTERM) before signing; the image is pushed, unsigned",
        }
    )
    text = step_summary(report)
    assert "⏹ Cancelled" in text
    assert "- ⏹ `release-key` (cosign): not signed, the build was cancelled" in text
    assert "image-builder verify" not in text
    assert "cosign verify" not in text
    assert f"| linux/amd64 | `{AMD64}` |" in text  # what was pushed is still shown


def test_a_push_left_unsigned_with_no_sign_says_how_to_sign() -> None:
    report = SIGNED.model_copy(update={"signed": False, "signed_by": []})
    text = step_summary(report)
    assert "- ⏸ `release-key` (cosign): not signed yet; sign with `image-builder sign" in text


def test_a_failed_push_has_no_platforms_and_no_verify_commands() -> None:
    report = BuildReport(
        status="Failed",
        pushed=False,
        signed=False,
        image_name="team/app",
        architectures=["linux/amd64"],
        failed_images=[
            FailedImage(image="127.0.0.1:5999/team/app:v1", error="registry is unreachable")
        ],
        signers=[SignerInfo(name="release-key", type="cosign")],
        error="registry 127.0.0.1:5999 is unreachable (connection refused)",
    )
    text = step_summary(report)
    assert "Manifest digest" not in text
    assert "- ⏭ `release-key` (cosign): not signed, the push did not complete" in text
    assert "```" not in text
    assert "**Error:** registry 127.0.0.1:5999 is unreachable (connection refused)" in text


def test_a_partial_push_lists_only_the_repositories_that_hold_the_image() -> None:
    report = SIGNED.model_copy(
        update={
            "status": "Failed",
            "pushed": False,
            "signed": False,
            "signed_by": [],
            "images_list": [],
            "stored_in": [f"r.example/team/app@{DIGEST}"],
            "failed_images": [FailedImage(image="b.example/team/app:v1", error="refused")],
        }
    )
    text = step_summary(report)
    assert f"| linux/arm64 | `{ARM64}` |" in text
    assert "| `b.example/team/app:v1` | not pushed: refused | - |" in text
    assert "image-builder verify" not in text


def test_an_older_report_without_the_new_fields_still_renders() -> None:
    old = BuildReport.model_validate(
        {
            "status": "Succeeded",
            "pushed": True,
            "signed": True,
            "image_name": "team/app",
            "images_list": ["r.example/team/app:v1"],
            "digest": DIGEST,
            "signed_by": ["release-key"],
        }
    )
    text = step_summary(old)
    assert "- ✅ `release-key` signed" in text
    assert "Manifest digest" not in text
    assert "image-builder verify" not in text  # its kind is unknown: no key to name


def test_error_text_from_a_registry_cannot_shape_the_summary() -> None:
    """A registry's error body is quoted in failures; in Markdown it could end the table cell,
    start a new line, or add HTML and links."""
    answer = "DENIED: no | way\n### Approved <img src=https://e/x> [click](https://e)"
    report = BuildReport(
        status="Failed",
        pushed=False,
        signed=False,
        image_name="team/app",
        failed_images=[FailedImage(image="r.example/team/app:v1", error=answer)],
        signing_errors=[SigningError(signer="release-key", error=answer)],
        signers=[SignerInfo(name="release-key", type="cosign")],
        error=answer,
    )
    summary = step_summary(report)
    escaped = r"DENIED: no \| way \#\#\# Approved \<img src=https://e/x\> \[click\](https://e)"
    assert f"| `r.example/team/app:v1` | not pushed: {escaped} | - |" in summary
    assert f"- ❌ `release-key` (cosign) failed: {escaped}" in summary
    assert f"**Error:** {escaped}" in summary
    assert "<img" not in summary.replace(r"\<img", "")
    assert "\n### Approved" not in summary


def _attested(signer: str | None) -> BuildReport:
    repository = "r.example/team/app"
    refs = [
        AttestationRef(
            image=f"{repository}@{d}",
            reference=f"{repository}:{d.replace(':', '-')}.att",
            signer=signer,
        )
        for d in (DIGEST, AMD64, ARM64)
    ]
    return SIGNED.model_copy(update={"attestations": refs})


def test_each_attestation_is_listed_with_commands_that_verify_it() -> None:
    text = step_summary(_attested("release-key"))
    assert "**Provenance** (SLSA v1" in text
    for digest in (DIGEST, AMD64, ARM64):
        hexa = digest.removeprefix("sha256:")
        assert (
            f"| `r.example/team/app:sha256-{hexa}.att` | `r.example/team/app@{digest}` | "
            "`release-key` |"
        ) in text
    ref = f"r.example/team/app@{DIGEST}"
    assert f"image-builder verify {ref} --key cosign.pub --provenance\n" in text
    assert (
        "cosign verify-attestation --key cosign.pub --type slsaprovenance1 "
        f"--insecure-ignore-tlog=true {ref}\n"
    ) in text
    assert "--provenance" not in text.replace(f"verify {ref} --key cosign.pub --provenance", "")


def test_an_unsigned_attestation_gets_no_verify_command() -> None:
    text = step_summary(_attested(None))
    assert "| unsigned |" in text
    assert "verify-attestation" not in text
    assert "--provenance" not in text
