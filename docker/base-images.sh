#!/bin/sh
# The Dockerfile's base images as build arguments, pinned by digest:
#   docker/base-images.sh [FILE]     (FILE: docker/base-images.env)
# prints
#   RUST_IMAGE=rust:1.95-bookworm@sha256:<64 hex digits>
#   RUNTIME_IMAGE=debian:bookworm-slim@sha256:<64 hex digits>
# from each image's tag and recorded digest (<NAME>_TAG, <NAME>_DIGEST in FILE). A digest not
# recorded yet is resolved from the registry only with BIKESHARE_RESOLVE_BASE_IMAGES=1 (the
# image workflow, which records what it used); otherwise it fails and says how to pin one. A
# placeholder (all zeros) or a malformed digest always fails: nothing is built on a guess.
set -eu

FILE="${1:-$(dirname "$0")/base-images.env}"
[ -f "$FILE" ] || { echo "base-images: $FILE is missing" >&2; exit 1; }

# KEY=value lines only (the file is read, never executed).
value() {
  sed -n "s/^$1=//p" "$FILE" | tail -n 1 | tr -d ' \r'
}

pin() {
  name="$1"
  tag="$(value "${name}_TAG")"
  digest="$(value "${name}_DIGEST")"
  [ -n "$tag" ] || { echo "base-images: no ${name}_TAG in $FILE" >&2; exit 1; }
  case "$tag" in
    *@*) echo "base-images: ${name}_TAG=$tag: give the tag alone, the digest in ${name}_DIGEST" >&2; exit 1 ;;
  esac
  if [ -z "$digest" ]; then
    if [ "${BIKESHARE_RESOLVE_BASE_IMAGES:-0}" != 1 ]; then
      echo "base-images: no digest recorded for $tag (${name}_DIGEST in $FILE): resolve it with" >&2
      echo "  docker buildx imagetools inspect $tag --format '{{.Manifest.Digest}}'" >&2
      echo "review it, and record it there (or set BIKESHARE_RESOLVE_BASE_IMAGES=1 to resolve it now)" >&2
      exit 1
    fi
    digest="$(docker buildx imagetools inspect "$tag" --format '{{.Manifest.Digest}}')"
    echo "base-images: resolved $tag to $digest; record it: ${name}_DIGEST=$digest" >&2
  fi
  case "$digest" in
    sha256:0000000000000000000000000000000000000000000000000000000000000000)
      echo "base-images: ${name}_DIGEST is the all-zero placeholder, not a digest: record the reviewed one" >&2
      exit 1 ;;
  esac
  if ! printf '%s\n' "$digest" | grep -Eq '^sha256:[0-9a-f]{64}$'; then
    echo "base-images: ${name}_DIGEST=$digest is not sha256:<64 hex digits>" >&2
    exit 1
  fi
  echo "${name}=${tag}@${digest}"
}

pin RUST_IMAGE
pin RUNTIME_IMAGE
