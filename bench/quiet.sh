# Sourced by bench/compare.sh and bench/dpo_compare.sh: what machine this is, and how loaded it was
# around each timed run, so that a ratio is only ever printed from quiet-machine runs.
#
# For every run, `measured LOG cmd...` appends one JSON line to LOG:
#   load_before   1-minute load average just before the run (after waiting up to QUIET_WAIT s for it
#                 to fall to QUIET_MAX)
#   load_after    1-minute load average just after it. This includes the benchmark's own threads (a
#                 2-thread run lifts it towards 2 within a minute), so it is recorded, not gated on.
#   foreign_cores CPU time used by *other* processes during the run, in cores: (busy jiffies of the
#                 whole machine from /proc/stat − the run's own user+system time) / wall time.
#   wall_s, cmd
# A run counts as evidence when load_before ≤ QUIET_MAX and foreign_cores ≤ QUIET_MAX
# (bench/summarize.py and dpo_compare.sh check every run of both sides before printing a ratio).

QUIET_MAX=${QUIET_MAX:-0.5}
QUIET_WAIT=${QUIET_WAIT:-180}
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

cpu_model() { lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1; }
load1() { cut -d' ' -f1 /proc/loadavg; }
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# Cumulative user+system seconds of this shell's finished children: bash `times` (2nd line), run
# in this shell (a command substitution would fork and see no children), parsed from a file.
QUIET_TIMES=$(mktemp)
child_cpu_s() {
  tail -1 "$QUIET_TIMES" | awk '{t=0; for(i=1;i<=2;i++){split($i,a,"m"); sub("s","",a[2]); t+=a[1]*60+a[2]}; print t}'
}

wait_quiet() {
  local waited=0
  while awk -v l="$(load1)" -v m="$QUIET_MAX" 'BEGIN{exit !(l>=m)}'; do
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      echo "bench: load average $(load1) is still above $QUIET_MAX after ${QUIET_WAIT}s; running anyway - THIS RUN IS NOT EVIDENCE" >&2
      return 0
    fi
    sleep 5
    waited=$((waited + 5))
  done
}

# Writes OUT/machine.json: CPU model (lscpu), cores, kernel, git revision, load at the start.
machine_json() {
  local out=$1
  printf '{"cpu_model": "%s", "nproc": %s, "kernel": "%s", "git_rev": "%s", "load_at_start": %s, "quiet_max": %s}\n' \
    "$(cpu_model)" "$(nproc)" "$(uname -r)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$(load1)" "$QUIET_MAX" >"$out/machine.json"
}

measured() {
  local log=$1
  shift
  wait_quiet
  local lb j0 c0 t0 la j1 c1 t1
  times >"$QUIET_TIMES"
  lb=$(load1); j0=$(busy_jiffies); c0=$(child_cpu_s); t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  times >"$QUIET_TIMES"
  c1=$(child_cpu_s); j1=$(busy_jiffies); la=$(load1)
  awk -v lb="$lb" -v la="$la" -v j0="$j0" -v j1="$j1" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" \
      -v hz="$HZ" -v cmd="$*" 'BEGIN{
        w = t1 - t0; if (w <= 0) w = 1e-9
        f = ((j1 - j0) / hz - (c1 - c0)) / w; if (f < 0) f = 0
        gsub(/\n/, " ", cmd); gsub(/"/, "\\\"", cmd)
        printf "{\"load_before\": %s, \"load_after\": %s, \"foreign_cores\": %.3f, \"wall_s\": %.3f, \"cmd\": \"%s\"}\n", lb, la, f, w, cmd
      }' >>"$log"
  local lvl
  lvl=$(tail -1 "$log")
  echo "bench: $lvl" >&2
}
