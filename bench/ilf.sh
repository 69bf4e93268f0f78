#!/usr/bin/env bash
# Times `gradus lab ilf` at its default size (issue 17: "runs on 2 CPU cores at its default size").
# Run on a quiet machine (load average < 0.5): bench/ilf.sh [seed]
# Prints the lab's table (held-out pass@1 per round and arm, 95% Wilson intervals) and
# /usr/bin/time's wall clock, user and system seconds and peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-0}"
cargo build --release --bin gradus
out="$(mktemp -d)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -v target/release/gradus lab ilf --set run.dir="\"$out\"" --set run.seed="$seed" \
  2> "$out/time.txt" | grep -v '^step '
grep -E "Elapsed|User time|System time|Maximum resident" "$out/time.txt"
rm -rf "$out"
