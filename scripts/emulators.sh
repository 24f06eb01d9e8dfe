#!/usr/bin/env bash
# AWS emulators for the integration tests, sourced by scripts/test.sh (after lib.sh).
#
#   start_emulators     installs (once, cached under $TOOLS_DIR) and starts kinesis-mock and
#                       moto server on free 127.0.0.1 ports, waits until both answer, exports
#                       their endpoints and stops them when the shell exits:
#                         BIKESHARE_TEST_KINESIS_ENDPOINT   http://127.0.0.1:PORT (plain HTTP/1.1)
#                         BIKESHARE_TEST_MOTO_ENDPOINT      http://127.0.0.1:PORT
#                         BIKESHARE_TEST_MOTO_PYTHON        moto's venv python (boto3), for
#                                                           infra/emulator_deploy.py
#                       and an MLflow tracking server (PyPI `mlflow`, SQLite backend store,
#                       artifacts proxied by the server into a temporary directory):
#                         BIKESHARE_TEST_MLFLOW_URI         http://127.0.0.1:PORT
#                       and (no server: an embedded database) a Python with PyPI `duckdb`, for
#                       the tests that run the Athena analyst queries on the local lake:
#                         BIKESHARE_TEST_DUCKDB_PYTHON      $TOOLS_DIR/duckdb-VERSION/bin/python
#
# kinesis-mock (npm `kinesis-local`) binds 0.0.0.0 and has no host option: a `--require`
# preload rewrites the host of every `net.Server#listen` to 127.0.0.1. Its *_DURATION delays
# (stream creation, resharding, ...) are shortened so tests do not wait seconds per step.
# Logs go to $EMULATOR_LOG_DIR (printed when an emulator does not come up).

KINESIS_LOCAL_VERSION="0.6.2"
MOTO_VERSION="5.2.5"
MLFLOW_VERSION="3.17.2"
DUCKDB_VERSION="2.0.0"
EMULATOR_LOG_DIR="${EMULATOR_LOG_DIR:-$TOOLS_DIR/logs}"
EMULATOR_PIDS=()

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ensure_kinesis_mock() {
  local dir="$TOOLS_DIR/kinesis-local-$KINESIS_LOCAL_VERSION"
  KINESIS_MOCK_MAIN="$dir/node_modules/kinesis-local/main.js"
  KINESIS_MOCK_PRELOAD="$dir/bind-loopback.js"
  [ -f "$KINESIS_MOCK_MAIN" ] && [ -f "$dir/bind-loopback.js" ] && return 0
  if ! command -v node >/dev/null; then apt_install nodejs npm; fi
  if ! command -v npm >/dev/null; then apt_install npm; fi
  log "installing kinesis-mock (npm kinesis-local@$KINESIS_LOCAL_VERSION) into $dir"
  mkdir -p "$dir"
  (cd "$dir" && npm install --no-audit --no-fund --silent --prefix "$dir" "kinesis-local@$KINESIS_LOCAL_VERSION" </dev/null >/dev/null)
  cat >"$dir/bind-loopback.js" <<'EOF'
// Preloaded with `node --require`: every server this process starts listens on 127.0.0.1.
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args[0] !== null && typeof args[0] === "object" && !Array.isArray(args[0])) {
    args[0] = Object.assign({}, args[0], { host: "127.0.0.1" });
  } else if (typeof args[0] === "number" || typeof args[0] === "string") {
    if (typeof args[1] === "string") args[1] = "127.0.0.1";
    else args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
EOF
  [ -f "$KINESIS_MOCK_MAIN" ] || { log "kinesis-mock install failed: $KINESIS_MOCK_MAIN missing"; exit 1; }
}

# pip_venv VENV LABEL REQUIREMENT: a new venv at VENV with the PyPI REQUIREMENT installed.
pip_venv() {
  local venv=$1 label=$2 requirement=$3
  if ! python3 -m venv --help >/dev/null 2>&1; then apt_install python3-venv; fi
  log "installing $label (PyPI $requirement) into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement" </dev/null
}

ensure_moto() {
  local venv="$TOOLS_DIR/moto-$MOTO_VERSION"
  MOTO_SERVER="$venv/bin/moto_server"
  [ -x "$MOTO_SERVER" ] && return 0
  pip_venv "$venv" "moto server" "moto[server]==$MOTO_VERSION"
  [ -x "$MOTO_SERVER" ] || { log "moto install failed: $MOTO_SERVER missing"; exit 1; }
}

ensure_mlflow() {
  local venv="$TOOLS_DIR/mlflow-$MLFLOW_VERSION"
  MLFLOW_BIN="$venv/bin/mlflow"
  [ -x "$MLFLOW_BIN" ] && return 0
  pip_venv "$venv" MLflow "mlflow==$MLFLOW_VERSION"
  [ -x "$MLFLOW_BIN" ] || { log "MLflow install failed: $MLFLOW_BIN missing"; exit 1; }
}

# ensure_duckdb: a venv with PyPI duckdb; exports BIKESHARE_TEST_DUCKDB_PYTHON (its python).
ensure_duckdb() {
  local venv="$TOOLS_DIR/duckdb-$DUCKDB_VERSION"
  if ! "$venv/bin/python" -c "import duckdb" 2>/dev/null; then
    pip_venv "$venv" DuckDB "duckdb==$DUCKDB_VERSION"
    "$venv/bin/python" -c "import duckdb" || { log "DuckDB install failed in $venv"; exit 1; }
  fi
  export BIKESHARE_TEST_DUCKDB_PYTHON="$venv/bin/python"
}

# wait_http NAME URL PID LOG: waits up to 90 s (MLflow migrates its store first) for URL to answer.
wait_http() {
  local name="$1" url="$2" pid="$3" logfile="$4"
  for _ in $(seq 1 900); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited while starting; its log:"; tail -n 40 "$logfile" >&2; exit 1
    fi
    if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "$name did not answer $url within 90 s; its log:"; tail -n 40 "$logfile" >&2; exit 1
}

stop_emulators() {
  local pid
  for pid in "${EMULATOR_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${EMULATOR_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  EMULATOR_PIDS=()
  if [ -n "${MLFLOW_STATE_DIR:-}" ]; then rm -rf "$MLFLOW_STATE_DIR"; MLFLOW_STATE_DIR=""; fi
}

start_emulators() {
  ensure_kinesis_mock
  ensure_moto
  ensure_mlflow
  ensure_duckdb
  mkdir -p "$EMULATOR_LOG_DIR"
  trap stop_emulators EXIT

  local kplain ktls moto mlflow
  kplain="$(free_port)"; ktls="$(free_port)"; moto="$(free_port)"; mlflow="$(free_port)"
  log "starting kinesis-mock on 127.0.0.1:$kplain, moto on 127.0.0.1:$moto, MLflow on 127.0.0.1:$mlflow"
  (
    cd "$(dirname "$KINESIS_MOCK_MAIN")"
    export KINESIS_MOCK_PLAIN_PORT="$kplain" KINESIS_MOCK_TLS_PORT="$ktls" AWS_REGION=us-east-1 \
      SHARD_LIMIT="${BIKESHARE_TEST_KINESIS_SHARD_LIMIT:-1000}" SHOULD_PERSIST_DATA=false \
      CREATE_STREAM_DURATION=100ms DELETE_STREAM_DURATION=100ms \
      REGISTER_STREAM_CONSUMER_DURATION=100ms DEREGISTER_STREAM_CONSUMER_DURATION=100ms \
      START_STREAM_ENCRYPTION_DURATION=100ms STOP_STREAM_ENCRYPTION_DURATION=100ms \
      MERGE_SHARDS_DURATION=100ms SPLIT_SHARD_DURATION=100ms UPDATE_SHARD_COUNT_DURATION=100ms \
      UPDATE_STREAM_MODE_DURATION=100ms LOG_LEVEL=WARN
    exec node --require "$KINESIS_MOCK_PRELOAD" main.js </dev/null
  ) >"$EMULATOR_LOG_DIR/kinesis-mock.log" 2>&1 &
  EMULATOR_PIDS+=("$!")
  local kpid="$!"
  # moto's server with SageMaker's UpdateModelPackage semantics (infra/moto_server.py).
  "$(dirname "$MOTO_SERVER")/python" "$ROOT/infra/moto_server.py" -H 127.0.0.1 -p "$moto" \
    </dev/null >"$EMULATOR_LOG_DIR/moto.log" 2>&1 &
  EMULATOR_PIDS+=("$!")
  local mpid="$!"
  # A fresh store per run: tests see only their own runs and versions. No telemetry, and no
  # background job runner (its worker pool is not needed by the registry and costs cores).
  MLFLOW_STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bikeshare-mlflow.XXXXXX")"
  MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$MLFLOW_BIN" server --host 127.0.0.1 --port "$mlflow" \
    --workers 1 --backend-store-uri "sqlite:///$MLFLOW_STATE_DIR/mlflow.db" \
    --serve-artifacts --artifacts-destination "$MLFLOW_STATE_DIR/artifacts" \
    </dev/null >"$EMULATOR_LOG_DIR/mlflow.log" 2>&1 &
  EMULATOR_PIDS+=("$!")
  local flpid="$!"

  wait_http kinesis-mock "http://127.0.0.1:$kplain/healthcheck" "$kpid" "$EMULATOR_LOG_DIR/kinesis-mock.log"
  wait_http moto "http://127.0.0.1:$moto/moto-api/" "$mpid" "$EMULATOR_LOG_DIR/moto.log"
  wait_http mlflow "http://127.0.0.1:$mlflow/health" "$flpid" "$EMULATOR_LOG_DIR/mlflow.log"
  export BIKESHARE_TEST_KINESIS_ENDPOINT="http://127.0.0.1:$kplain"
  export BIKESHARE_TEST_MOTO_ENDPOINT="http://127.0.0.1:$moto"
  export BIKESHARE_TEST_MOTO_PYTHON="$(dirname "$MOTO_SERVER")/python"
  export BIKESHARE_TEST_MLFLOW_URI="http://127.0.0.1:$mlflow"
  log "emulators up: kinesis $BIKESHARE_TEST_KINESIS_ENDPOINT, moto $BIKESHARE_TEST_MOTO_ENDPOINT, MLflow $BIKESHARE_TEST_MLFLOW_URI"
}

# Run directly, it starts the emulators around one command, e.g.
#   scripts/emulators.sh cargo test -p bikeshare-aws
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  source "$(dirname "$0")/lib.sh"
  cd "$ROOT"
  start_emulators
  if [ $# -gt 0 ]; then "$@"; else log "no command given: emulators stop now"; fi
fi
