#!/usr/bin/env bash
# Compare the built-in Python validator (`filter --mode code`) with each version's own compile()
# (`--python-compile`, python3 of that version first on the PATH) on CPython stdlib rows.
# Usage: bench/curate/syntax_agreement.sh GRADUS_BIN CORPUS_DIR OUT_DIR   (CORPUS_DIR/py3.1x.jsonl)
set -euo pipefail
G=$1; C=$2; O=$3
# Only the syntax rule: every other limit relaxed.
RELAX=(--set max_line_len=1000000000 --set max_mean_line_len=1e300 --set min_alnum_frac=0
       --set max_dup_line_frac=1 --set max_comment_frac=1 --set max_chars=1000000000000 --lang python)
for f in "$C"/py3.*.jsonl; do
  v=$(basename "$f" .jsonl); v=${v#py}
  bin=$(ls -d "$(pyenv root)"/versions/"$v".*/bin | head -1)
  "$G" data filter "$f" --mode code "${RELAX[@]}" --out "$O/rust-$v" --quiet > /dev/null
  PATH="$bin:$PATH" "$G" data filter "$f" --mode code --python-compile "${RELAX[@]}" --out "$O/cpython-$v" --quiet > /dev/null
  python3 - "$O/rust-$v/removed.jsonl" "$O/cpython-$v/removed.jsonl" "$v" <<'PY'
import json, sys
def ids(p):
    return {json.loads(l)["row"]["id"]: json.loads(l)["detail"]["value"] for l in open(p) if l.strip()}
r, c = ids(sys.argv[1]), ids(sys.argv[2])
both = set(r) & set(c)
print(json.dumps({"version": sys.argv[3], "rejected_by_rust": len(r), "rejected_by_cpython": len(c), "both": len(both),
                  "only_rust": sorted(set(r) - set(c))[:10], "only_cpython": {k: c[k] for k in sorted(set(c) - set(r))[:10]}}))
PY
done
