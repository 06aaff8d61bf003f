#!/usr/bin/env bash
# One stage of the trusted pipeline (oci-image-builder.yml), as a script so that tests run exactly
# what the pipeline runs. Every value arrives in an environment variable, never spliced into
# script text. Stages:
#   setup    install Image Builder from this checkout, runtime only (scripts/setup --runtime)
#   verify   check the caller's token (AUTHORIZATION) against the run's parameters and the image
#            name, and set the verified values as output variables of the step (the token is not
#            spent: publish spends its build, sign its signing)
#   fetch    fetch the verified commit of the caller's repository into SOURCE_DIR
#   build    build in the sandbox into the OCI layout LAYOUT_DIR (no token, no credentials, no keys)
#   publish  verify the layout in LAYOUT_DIR and push it; the report goes to REPORT_DIR
#   sign     sign what the publish report REPORT_IN lists; the report goes to REPORT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
ib=${IMAGE_BUILDER:-$here/.venv/bin/image-builder}

common_args() {
  args=(build --backend local --config "$IMAGE_BUILDER_CONFIG" --name "$IB_NAME"
        --checkout "$SOURCE_DIR" --context "${IB_CONTEXT:-.}"
        --dockerfile "${IB_DOCKERFILE:-Dockerfile}"
        --platform "${IB_PLATFORMS:-linux/amd64,linux/arm64}")
  [[ -n ${IB_TAGS:-} ]] && args+=(--tag-base64 "$IB_TAGS")
  [[ ${IB_EXPORT_TAGS:-false} == true ]] && args+=(--export-tags)
  [[ -n ${IB_TARGET:-} ]] && args+=(--target "$IB_TARGET")
  [[ -n ${IB_ENV_FILE:-} ]] && args+=(--env-file "$IB_ENV_FILE")
  [[ ${IB_USE_RESTRICTED_REGISTRY:-false} == true ]] && args+=(--use-restricted-registry)
  [[ ${IB_USE_GO_INTERNAL_SAP_MODULES:-false} == true ]] && args+=(--use-go-internal-sap-modules)
  if [[ -n ${IB_BUILD_ARGS:-} ]]; then
    local build_args arg
    IFS=',' read -r -a build_args <<< "$IB_BUILD_ARGS"
    for arg in "${build_args[@]}"; do args+=(--build-arg "$arg"); done
  fi
  return 0
}

# Registry credentials from the variable group, in a file only this account can read.
registry_auth() {
  if [[ -n ${REGISTRY_AUTH:-} ]]; then
    local file="${AGENT_TEMPDIRECTORY:?}/auth.json"
    (umask 077 && printf '%s' "$REGISTRY_AUTH" > "$file")
    export REGISTRY_AUTH_FILE=$file
  fi
  unset REGISTRY_AUTH
}

# The caller's token: the secret variable AUTHORIZATION, else the Authorization parameter of a
# client that sends it the Go tool's way (masked from here on). An unset variable reaches the
# step as its literal macro text.
caller_token() {
  # shellcheck disable=SC2016  # the literal text of an unset macro
  if [[ -z ${AUTHORIZATION:-} || $AUTHORIZATION == '$(AUTHORIZATION)' ]]; then
    AUTHORIZATION=${AUTHORIZATION_PARAMETER:-}
    [[ -n $AUTHORIZATION ]] && echo "##vso[task.setsecret]$AUTHORIZATION"
  fi
  export AUTHORIZATION
  unset AUTHORIZATION_PARAMETER
}

# The state variables, from a report that image-builder wrote outside any checkout.
state_variables() {
  python3 - "$1" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    report = {"status": "Failed", "pushed": False, "signed": False}
for name, value in (("build_success", report.get("status") == "Succeeded"),
                    ("push_success", report.get("pushed") is True),
                    ("signing_success", report.get("signed") is True)):
    print(f"##vso[task.setvariable variable={name};isOutput=true]{str(value).lower()}")
PY
}

stage=${1:?stage: setup, verify, fetch, build, publish or sign}
case $stage in
  setup)
    "$here/scripts/setup" --runtime
    ;;
  verify)
    caller_token
    "$ib" verify-token --config "${IMAGE_BUILDER_CONFIG:?}" --name "${IB_NAME:?}" --ado-outputs
    ;;
  fetch)
    : "${SOURCE_DIR:?}" "${SOURCE_BASE_URL:?}" "${REPO_OWNER:?}" "${REPO_NAME:?}" "${COMMIT:?}"
    rm -rf "$SOURCE_DIR"
    git init -q "$SOURCE_DIR"
    git -C "$SOURCE_DIR" fetch -q --depth 1 "$SOURCE_BASE_URL/$REPO_OWNER/$REPO_NAME.git" "$COMMIT"
    git -C "$SOURCE_DIR" -c advice.detachedHead=false checkout -q FETCH_HEAD
    ;;
  build)
    : "${LAYOUT_DIR:?}"
    common_args
    cd "$SOURCE_DIR"
    exec "$ib" "${args[@]}" --layout-out "$LAYOUT_DIR"
    ;;
  publish)
    : "${LAYOUT_DIR:?}" "${REPORT_DIR:?}"
    rm -rf "$REPORT_DIR" && mkdir -p "$REPORT_DIR"
    caller_token
    registry_auth
    common_args
    cd "$SOURCE_DIR"
    status=0
    "$ib" "${args[@]}" --from-layout "$LAYOUT_DIR" --no-sign \
      --build-report-path "$REPORT_DIR/report.json" || status=$?
    state_variables "$REPORT_DIR/report.json"
    exit "$status"
    ;;
  sign)
    : "${REPORT_IN:?}" "${REPORT_DIR:?}"
    rm -rf "$REPORT_DIR" && mkdir -p "$REPORT_DIR"
    caller_token
    registry_auth
    status=0
    "$ib" sign --config "${IMAGE_BUILDER_CONFIG:?}" --from-report "$REPORT_IN" \
      --build-report-path "$REPORT_DIR/report.json" || status=$?
    state_variables "$REPORT_DIR/report.json"
    exit "$status"
    ;;
  *)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
