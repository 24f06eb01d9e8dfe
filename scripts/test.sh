#!/usr/bin/env bash
# The one command that runs every test: set-up, format and lint gates, then the suites.
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh -E 'test(gbfs)'   extra arguments go to cargo nextest
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/emulators.sh"
cd "$ROOT"

# A test run builds once; incremental caches would only grow the shared target dir
# (47 GB of them filled a CI disk).
export CARGO_INCREMENTAL=0
ensure_disk_space
ensure_rust
ensure_build_deps
ensure_chromium
ensure_cargo_deny

log "format and lint gates"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The workspace build above turns every feature on (the CLI enables them); the libraries as
# other crates link them (monitor and runtime without `aws`, models without the registry) too.
cargo clippy -p bikeshare-monitor -p bikeshare-models -p bikeshare-runtime --lib --locked -- -D warnings
cargo deny --locked check licenses bans sources
bash scripts/lint-infra.sh

log "emulators (kinesis-mock, moto) for the integration tests"
start_emulators

log "fuzz smoke: every parser of outside input, 10 s each (scripts/fuzz.sh run 600 for longer)"
bash scripts/fuzz.sh smoke

log "doc tests (target dir: $CARGO_TARGET_DIR)"
cargo test --workspace --locked --doc
# Last, so the run closes on the test runner's summary line.
log "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
