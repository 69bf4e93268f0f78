#!/usr/bin/env bash
# Renders a run report and a comparison page in headless Chromium (Debian's `chromium` package)
# and writes the screenshots README links: docs/report.png, docs/compare.png.
# Usage: docs/screenshots.sh [path/to/gradus]   (default: target/release/gradus)
set -euo pipefail
G=${1:-target/release/gradus}
out=$(mktemp -d)
common=(--config configs/pretrain/tiny.toml --set run.dir="$out" --set train.steps=200
  --set eval.every=50 --set 'eval.samples=["Compute 12+7.", "a=5, b="]' --set eval.sample_tokens=12)
"$G" train pretrain "${common[@]}" >/dev/null
"$G" train pretrain "${common[@]}" --set run.name=lr1e-3 --set train.lr=1e-3 >/dev/null
"$G" report "$out/pretrain-tiny" "$out/lr1e-3" --out "$out/compare.html"
shot() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$out/chromium" --window-size=1000,"$2" --screenshot="$3" "file://$1" 2>/dev/null
}
shot "$out/pretrain-tiny/report.html" 2300 docs/report.png
shot "$out/compare.html" 1300 docs/compare.png
echo "wrote docs/report.png docs/compare.png (runs in $out)"
