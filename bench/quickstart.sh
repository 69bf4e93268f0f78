#!/usr/bin/env bash
# Times `gradus quickstart` (issue 11: held-out accuracy after SFT and wall/CPU time on 2 cores).
# Run on a quiet machine (load average < 0.5): bench/quickstart.sh [seed]
# Prints the quickstart summary (accuracy per kind before → after SFT, 95% Wilson intervals) and
# /usr/bin/time's wall clock, user and system seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-0}"
cargo build --release --bin gradus
out="$(mktemp -d)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -v target/release/gradus quickstart --dir "$out" --seed "$seed" 2> "$out/time.txt" | grep -v '^step '
grep -E "Elapsed|User time|System time|Maximum resident" "$out/time.txt"
rm -rf "$out"
