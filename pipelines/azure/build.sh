#!/usr/bin/env bash
# The trusted pipeline's build job, as one script so that tests run exactly what the pipeline
# runs. Every value arrives in an environment variable (never spliced into the script):
#   IMAGE_BUILDER_CONFIG, AUTHORIZATION, REPO_OWNER, REPO_NAME, JOB_TYPE, PULL_NUMBER,
#   PULL_BASE_SHA, PULL_PULL_SHA, BASE_REF, IB_NAME, IB_DOCKERFILE, IB_CONTEXT, IB_EXPORT_TAGS,
#   IB_BUILD_ARGS, IB_TAGS, IB_PLATFORMS, IB_TARGET, IB_ENV_FILE, and SOURCE_DIR (the checkout).
# Steps: verify the caller's token, decode the tags, build with the local backend (which
# pushes, signs and prints the report), then set the state variables.
set -euo pipefail
ib=${IMAGE_BUILDER:-image-builder}
: "${IMAGE_BUILDER_CONFIG:?}" "${SOURCE_DIR:?}" "${IB_NAME:?}"

echo "==> verify the caller's OIDC token"
"$ib" verify-token --config "$IMAGE_BUILDER_CONFIG"

echo "==> tags requested by the caller"
if [[ -n ${IB_TAGS:-} ]]; then
  printf '%s' "$IB_TAGS" | base64 -d | tr ',' '\n' | sed 's/^/  /'
fi

args=(build --backend local --config "$IMAGE_BUILDER_CONFIG" --name "$IB_NAME"
      --context "$SOURCE_DIR/${IB_CONTEXT:-.}" --dockerfile "${IB_DOCKERFILE:-Dockerfile}"
      --platform "${IB_PLATFORMS:-linux/amd64,linux/arm64}" --build-report-path "$SOURCE_DIR/.image-builder-report.json")
[[ -n ${IB_TAGS:-} ]] && args+=(--tag-base64 "$IB_TAGS")
[[ ${IB_EXPORT_TAGS:-false} == true ]] && args+=(--export-tags)
[[ -n ${IB_TARGET:-} ]] && args+=(--target "$IB_TARGET")
[[ -n ${IB_ENV_FILE:-} ]] && args+=(--env-file "$IB_ENV_FILE")
if [[ -n ${IB_BUILD_ARGS:-} ]]; then
  IFS=',' read -r -a build_args <<< "$IB_BUILD_ARGS"
  for arg in "${build_args[@]}"; do args+=(--build-arg "$arg"); done
fi

echo "==> build, push, sign"
status=0
"$ib" "${args[@]}" || status=$?

report="$SOURCE_DIR/.image-builder-report.json"
if [[ -f $report ]]; then
  python3 - "$report" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for name, value in (("build_success", report["status"] == "Succeeded"),
                    ("push_success", report["pushed"]),
                    ("signing_success", report["signed"])):
    print(f"##vso[task.setvariable variable={name};isOutput=true]{str(value).lower()}")
PY
else
  echo "##vso[task.setvariable variable=build_success;isOutput=true]false"
fi
exit "$status"
