#!/usr/bin/env bash
# The one command that runs the main job on the embedded default: no AWS, no internet.
# The built-in GBFS city simulator is served over real HTTP on 127.0.0.1 and everything
# lands under ./var. Extra arguments go to `bikeshare up` (try --help).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_build_deps
log "building (release; the first build takes a few minutes)"
cargo build --release --locked --bin bikeshare
exec "$CARGO_TARGET_DIR/release/bikeshare" up "$@"
