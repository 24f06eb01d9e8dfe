#!/usr/bin/env bash
# Regenerates the README's dashboard screenshot (docs/images/dashboard.png): runs `bikeshare
# up` on a fresh data directory (the default simulated city, bootstrap model included) for a
# few minutes, then has headless Chromium photograph the whole page, with one station's
# drill-down open. Offline: no base tiles (`[dashboard] tile_url` unset).
#   scripts/dashboard-screenshot.sh [seconds of `up` before the photo, default 150]
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_build_deps
ensure_chromium
wait_s="${1:-150}"
out="$ROOT/docs/images/dashboard.png"
log "building (debug)"
cargo build --locked --bin bikeshare
data="$(mktemp -d)"
port=18088
trap 'kill "$up_pid" 2>/dev/null || true; wait "$up_pid" 2>/dev/null || true; rm -rf "$data"' EXIT
BIKESHARE_DATA_DIR="$data" BIKESHARE_DASHBOARD__BIND="127.0.0.1:$port" \
  BIKESHARE_METRICS__BIND=127.0.0.1:0 BIKESHARE_API__BIND=127.0.0.1:0 \
  BIKESHARE_SIMULATOR__BIND=127.0.0.1:0 BIKESHARE_DASHBOARD__SAMPLE_EVERY_MS=2000 RUST_LOG=warn \
  "$CARGO_TARGET_DIR/debug/bikeshare" up --duration "$((wait_s + 60))s" --summary-every 600 \
  >"$data/up.out" 2>"$data/up.err" &
up_pid=$!
log "up is running (dashboard http://127.0.0.1:$port/); photographing in $wait_s s"
sleep "$wait_s"
# `#station=riskiest` opens the riskiest station's popup and drill-down.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
  --disable-background-networking --user-data-dir="$data/chrome" --window-size=1400,2300 \
  --virtual-time-budget=8000 --screenshot="$out" \
  "http://127.0.0.1:$port/#station=riskiest" >/dev/null 2>&1
log "wrote $out ($(stat -c %s "$out") bytes)"
