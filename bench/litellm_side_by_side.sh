#!/usr/bin/env bash
# This proxy beside LiteLLM in one run of ../shared/bench/litellm_overhead (its README: what it measures),
# in modes off and gated, with the keyword scorer and a remote corrector URL so no model loads.
#   bench/litellm_side_by_side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS="${HARNESS:-../shared/bench/litellm_overhead/run.sh}"
PROXY="$(pwd)/.venv/bin/aligner-proxy"
for mode in ${MODES:-off gated}; do
  echo "=== mode $mode"
  OTHER_NAME=aligner-$mode OTHER_MODEL=fake \
  OTHER_CMD="env ALIGNER_CORRECTOR_BACKEND=remote ALIGNER_CORRECTOR_URL=http://127.0.0.1:9/v1 $PROXY serve --host 127.0.0.1 --port {PORT} --upstream-url {UPSTREAM_BASE} --upstream-model fake --served-model-name fake --scorer heuristic --mode $mode --log-level warning" \
  "$HARNESS" 2>&1 | tail -25
done
