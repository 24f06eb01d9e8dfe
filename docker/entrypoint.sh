#!/bin/sh
# The image's entrypoint: one image, every command, both SageMaker contracts.
#
#   serve            SageMaker inference: `bikeshare serve-model` on 0.0.0.0:8080 over the model
#                    SageMaker unpacked into /opt/ml/model (GET /ping, POST /invocations). Beyond
#                    loopback the server needs BIKESHARE_MODEL_TOKEN (the Model's environment).
#   train            SageMaker training: rows from the `train` channel
#                    (/opt/ml/input/data/train/*.csv, `bikeshare backfill` output), XGBoost
#                    parameters from /opt/ml/input/config/hyperparameters.json, the model
#                    directory written to /opt/ml/model; on failure the reason goes to
#                    /opt/ml/output/failure and the exit code is non-zero. Metrics are printed
#                    one per line as `metric <target>_<name>=<value>`, e.g. `metric empty_pr_auc=0.91`
#                    (SageMaker regex `metric empty_pr_auc=([0-9.eE+-]+)`).
#   anything else    `bikeshare <args>` (ECS tasks: ingest, process, lake write, dashboard).
#
# BIKESHARE_CONFIG (a file, e.g. /app/environments/dev.toml) becomes `--config`. Each task
# gets a unique lake writer id and lease owner from its host name unless they are set.
# For tests: SM_ROOT (default /opt/ml) and BIKESHARE_BIN (default bikeshare).
set -eu

SM_ROOT="${SM_ROOT:-/opt/ml}"
BIN="${BIKESHARE_BIN:-bikeshare}"

set_config() {
  if [ -n "${BIKESHARE_CONFIG:-}" ]; then
    CONFIG_ARGS="--config $BIKESHARE_CONFIG"
  else
    CONFIG_ARGS=""
  fi
}

# A writer id and lease owner per task: letters, digits, '-' and '_' of the host name.
task_identity() {
  id="$(hostname 2>/dev/null | tr -c 'A-Za-z0-9_-' '-' | cut -c1-40)"
  id="${id%-}"
  [ -n "$id" ] || id="task-$$"
  export BIKESHARE_LAKE__INSTANCE="${BIKESHARE_LAKE__INSTANCE:-$id}"
  export BIKESHARE_RUNNER__LEASES__OWNER="${BIKESHARE_RUNNER__LEASES__OWNER:-$id}"
}

fail() {
  mkdir -p "$SM_ROOT/output"
  printf '%s\n' "$1" > "$SM_ROOT/output/failure"
  echo "entrypoint: $1" >&2
  exit 1
}

# hyperparameters.json: {"max_rounds": "200", "max_depth": "6", ...} (SageMaker sends every
# value as a string) -> BIKESHARE_TRAIN__PARAMS__MAX_ROUNDS=200, ... Keys are letters, digits
# and '_' only; values without quotes, backslashes or newlines.
export_hyperparameters() {
  file="$SM_ROOT/input/config/hyperparameters.json"
  [ -f "$file" ] || return 0
  pairs="$(tr -d '\n\r{}' < "$file" | tr ',' '\n')"
  old_ifs="$IFS"; IFS='
'
  for pair in $pairs; do
    key="$(printf '%s' "$pair" | sed -n 's/^[[:space:]]*"\([A-Za-z0-9_]*\)"[[:space:]]*:.*$/\1/p')"
    value="$(printf '%s' "$pair" | sed -n 's/^[^:]*:[[:space:]]*"\{0,1\}\([^"\\]*\)"\{0,1\}[[:space:]]*$/\1/p')"
    if [ -z "$key" ] || [ -z "$value" ]; then
      IFS="$old_ifs"; fail "hyperparameters.json: cannot read \"$pair\" (want \"name\": \"value\")"
    fi
    upper="$(printf '%s' "$key" | tr 'a-z' 'A-Z')"
    export "BIKESHARE_TRAIN__PARAMS__$upper=$value"
  done
  IFS="$old_ifs"
}

case "${1:-}" in
  serve)
    set_config
    export BIKESHARE_SERVE_MODEL__MODEL_DIR="$SM_ROOT/model"
    # shellcheck disable=SC2086
    exec "$BIN" $CONFIG_ARGS serve-model --model-dir "$SM_ROOT/model" \
      --bind "${SAGEMAKER_BIND_TO_ADDRESS:-0.0.0.0}:${SAGEMAKER_BIND_TO_PORT:-8080}"
    ;;
  train)
    set_config
    channel="$SM_ROOT/input/data/train"
    [ -d "$channel" ] || fail "no training channel: $channel is missing"
    # One file of rows (a backfill's `.parquet` or `.csv`): `train --rows` reads one file, so
    # several are refused rather than all but one silently left out.
    files="$(find "$channel" -maxdepth 1 -type f \( -name '*.parquet' -o -name '*.csv' \) | sort)"
    [ -n "$files" ] || fail "no rows: $channel holds no .parquet or .csv file (bikeshare backfill output)"
    [ "$(printf '%s\n' "$files" | wc -l)" -eq 1 ] ||
      fail "several row files in $channel: give the training channel one (bikeshare backfill -o rows.parquet)"
    rows="$files"
    export_hyperparameters
    work="$(mktemp -d)"
    log="$work/train.log"
    # shellcheck disable=SC2086
    if ! "$BIN" $CONFIG_ARGS train --rows "$rows" --output "$work/model" 2> "$log"; then
      cat "$log" >&2
      fail "bikeshare train failed: $(grep 'bikeshare:' "$log" | tail -n 1)"
    fi
    cat "$log" >&2
    mkdir -p "$SM_ROOT/model"
    cp -R "$work/model/." "$SM_ROOT/model/"
    # The model's test-day evaluation from the card (pretty-printed JSON, two spaces per
    # level), one line per number: `metric empty_pr_auc=0.91`, `metric full_log_loss=0.09`,
    # `metric empty_best_valid_log_loss=0.07`.
    awk '
      { match($0, /^ */); depth = RLENGTH / 2 }
      /^ *"[a-z_]+": *[{]/ { k = $0; sub(/^ *"/, "", k); sub(/".*/, "", k); path[depth] = k; next }
      /^ *"[a-z_]+": *-?[0-9]/ {
        k = $0; sub(/^ *"/, "", k); sub(/".*/, "", k)
        v = $0; sub(/^[^:]*: */, "", v); sub(/,$/, "", v)
        if (depth == 4 && path[1] == "evaluation" && path[2] == "model") print "metric " path[3] "_" k "=" v
        if (depth == 2 && k == "best_valid_log_loss") print "metric " path[1] "_" k "=" v
      }' "$SM_ROOT/model/card.json"
    rm -rf "$work"
    ;;
  *)
    set_config
    task_identity
    # shellcheck disable=SC2086
    exec "$BIN" $CONFIG_ARGS "$@"
    ;;
esac
