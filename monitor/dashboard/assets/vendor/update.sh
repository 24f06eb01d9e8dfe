#!/usr/bin/env bash
# Re-vendors Leaflet and uPlot from their npm packages into this folder.
#   monitor/dashboard/assets/vendor/update.sh [leaflet-version] [uplot-version]
# After a version change: rename the folders in src/assets.rs and index.html, update README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
leaflet="${1:-1.9.4}"
uplot="${2:-1.6.32}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "leaflet@$leaflet" "uplot@$uplot" >/dev/null
mkdir l u
tar xzf "leaflet-$leaflet.tgz" -C l
tar xzf "uplot-$uplot.tgz" -C u
mkdir -p "$here/leaflet-$leaflet/images" "$here/uplot-$uplot"
cp l/package/dist/leaflet.js l/package/dist/leaflet.css l/package/LICENSE "$here/leaflet-$leaflet/"
cp l/package/dist/images/*.png "$here/leaflet-$leaflet/images/"
cp u/package/dist/uPlot.iife.min.js u/package/dist/uPlot.min.css u/package/LICENSE "$here/uplot-$uplot/"
npm view "leaflet@$leaflet" dist.integrity
npm view "uplot@$uplot" dist.integrity
