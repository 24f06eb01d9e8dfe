#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside input: AFL++ through cargo-afl, on
# stable Rust (fuzz/README.md lists the targets).
#   scripts/fuzz.sh smoke                 every target for BIKESHARE_FUZZ_SMOKE_SECS (10) s;
#                                         what the test command runs
#   scripts/fuzz.sh run [SECS] [TARGET…]  each target (default: all) for SECS (600) s
# The targets build with overflow checks and debug assertions, so a panic is a crash. Any
# crash fails the run; its input stays in $BIKESHARE_FUZZ_OUT (default: a new temporary
# directory per run, named at the end)/<target>/default/crashes/.
# Corpora start from fuzz/seeds/<target>/ and, when ../shared/data is there, samples of the
# recorded feeds and histories (read at run time, never committed).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

TARGETS=(gbfs envelope xgboost_model sse_cursor replay_files)
AFL_ROOT="$TOOLS_DIR/cargo-afl"
export XDG_DATA_HOME="$TOOLS_DIR/afl-data" # where cargo-afl keeps the AFL++ it builds
export PATH="$AFL_ROOT/bin:$PATH"
FUZZ_TARGET_DIR="${BIKESHARE_FUZZ_TARGET_DIR:-/var/tmp/bikeshare-fuzz-target}"
# Per run unless given: two runs on one machine never share (and delete) each other's output.
OUT="${BIKESHARE_FUZZ_OUT:-$(mktemp -d /tmp/bikeshare-fuzz.XXXXXX)}"
AFL_VERSION=0.18.2

ensure_cargo_afl() {
  if ! cargo afl --version 2>/dev/null | grep -q "$AFL_VERSION"; then
    log "installing cargo-afl $AFL_VERSION into $AFL_ROOT"
    CARGO_TARGET_DIR="$TOOLS_DIR/cargo-afl-build" \
      cargo install cargo-afl --version "$AFL_VERSION" --locked --root "$AFL_ROOT" --quiet
  fi
  # Builds AFL++ once per toolchain (about 30 s); a no-op when it is there.
  if ! ls "$XDG_DATA_HOME"/afl.rs/rustc-*/afl.rs-"$AFL_VERSION"/afl/bin/afl-fuzz >/dev/null 2>&1; then
    log "building AFL++ for this toolchain"
    cargo afl config --build >/dev/null
  fi
}

# Seeds for one target: the committed ones, and samples of ../shared/data when present.
corpus() {
  local target=$1 dir="$OUT/corpus/$1"
  rm -rf "$dir" && mkdir -p "$dir"
  cp fuzz/seeds/"$target"/* "$dir"/
  local shared=../shared/data
  [[ -d $shared ]] || return 0
  case $target in
    gbfs)
      local i=0
      while IFS= read -r f; do
        (( $(stat -c %s "$f") < 200000 )) && cp "$f" "$dir/shared-$((i++))-$(basename "$f")"
      done < <(find "$shared/gbfs-fixtures-entur" -name '*.json' 2>/dev/null | sort | head -40)
      ;;
    replay_files)
      local b="$shared/real/bluebikes-boston-2021"
      [[ -f $b/stations.csv ]] && head -c 20000 "$b/stations.csv" > "$dir/shared-stations.csv"
      [[ -f $b/station_status_2021-01.csv.bz2 ]] &&
        { bzcat "$b/station_status_2021-01.csv.bz2" 2>/dev/null | head -n 200 > "$dir/shared-status.csv" || true; }
      local t="$shared/real/toronto-bikeshare-hourly-2020/station_status_hourly.csv.gz"
      [[ -f $t ]] && { zcat "$t" 2>/dev/null | head -n 200 > "$dir/shared-snapshots.csv" || true; }
      ;;
  esac
}

fuzz_one() {
  local target=$1 secs=$2
  corpus "$target"
  rm -rf "${OUT:?}/$target"
  log "fuzzing $target for ${secs}s"
  AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_FAST_CAL=1 \
    AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SUPPRESS_CRASH_OUTPUT=1 \
    cargo afl fuzz -V "$secs" -t 2000 -i "$OUT/corpus/$target" -o "$OUT/$target" \
    "$FUZZ_TARGET_DIR/release/$target" > "$OUT/$target.log" 2>&1 || {
      tail -n 30 "$OUT/$target.log" >&2
      echo "afl-fuzz could not run $target (log: $OUT/$target.log)" >&2
      return 1
    }
  local stats="$OUT/$target/default/fuzzer_stats"
  local execs crashes
  execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
  crashes=$(find "$OUT/$target/default/crashes" -type f ! -name README.txt | wc -l)
  echo "  $target: ${execs:-?} runs, $(find "$OUT/$target/default/queue" -type f | wc -l) paths in the corpus, $crashes crashes"
  if (( crashes > 0 )); then
    echo "$target crashed; inputs in $OUT/$target/default/crashes/ (replay one with: $FUZZ_TARGET_DIR/release/$target < FILE)" >&2
    return 1
  fi
}

mode=${1:-smoke}
case $mode in
  smoke) secs=${BIKESHARE_FUZZ_SMOKE_SECS:-10}; shift || true; targets=("${TARGETS[@]}") ;;
  run) secs=${2:-600}; shift 2 || shift || true; targets=("${@:-${TARGETS[@]}}") ;;
  *) echo "usage: scripts/fuzz.sh smoke | run [SECS] [TARGET…]" >&2; exit 2 ;;
esac
[[ ${#targets[@]} -gt 0 ]] || targets=("${TARGETS[@]}")

ensure_cargo_afl
mkdir -p "$OUT"
log "building the fuzz targets (target dir: $FUZZ_TARGET_DIR)"
# fuzz/ is its own workspace with its own lock file: built --locked, and held to the same
# licence, ban and source rules as the main one. (A dependency added to a fuzzed crate needs
# `cd fuzz && cargo update -w` in the same commit.)
if command -v cargo-deny >/dev/null 2>&1; then
  cargo deny --log-level error --manifest-path fuzz/Cargo.toml --locked --config deny.toml \
    check licenses bans sources
fi
(cd fuzz && CARGO_TARGET_DIR="$FUZZ_TARGET_DIR" cargo afl build --release --locked --quiet)
failed=0
for t in "${targets[@]}"; do
  fuzz_one "$t" "$secs" || failed=1
done
if [[ $failed == 0 && -z ${BIKESHARE_FUZZ_OUT:-} ]]; then
  rm -rf "$OUT" # a clean run's temporary output says nothing more than the lines above
else
  echo "fuzz output: $OUT"
fi
exit $failed
