#!/usr/bin/env bash
# /metrics requests/s of this tree against an older revision, in one run: builds
# `cargo bench --bench load` at REV (in a temporary worktree, with this tree's benches/load.rs
# where REV has none) and here, then runs the two in turn RUNS times (before, after, before,
# after, ...) and prints, per case, each pair's ratio after/before of requests/s and of the
# exporter's CPU time per answer, and their medians. Pairs, not means: on a shared machine
# requests/s moves by tens of percent between two runs of the same binary, and a pair's two
# runs see about the same machine.
#
#   benches/load-vs.sh 2775664            # RUNS=5 LOAD_SECS=3 by default
#
# BEFORE_TARGET: a target directory for REV's build (default: a temporary one).
set -euo pipefail
rev=${1:?usage: benches/load-vs.sh REV}
runs=${RUNS:-5}
export LOAD_SECS=${LOAD_SECS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$work/before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

git -C "$here" worktree add --detach "$work/before" "$rev" >/dev/null
if [[ ! -f "$work/before/benches/load.rs" ]]; then
  cp "$here/benches/load.rs" "$work/before/benches/"
  printf '\n[[bench]]\nname = "load"\nharness = false\n' >>"$work/before/Cargo.toml"
fi
bench() { # DIR -> the path of its load bench binary
  (cd "$1" && cargo bench --bench load --no-run --message-format=json 2>/dev/null) |
    grep -o '"executable":"[^"]*load-[^"]*"' | tail -n 1 | cut -d'"' -f4
}
before=$(CARGO_TARGET_DIR="${BEFORE_TARGET:-$work/target}" bench "$work/before")
after=$(bench "$here")
for ((i = 0; i < runs; i++)); do
  "$before" >>"$work/before.out" 2>&1
  "$after" >>"$work/after.out" 2>&1
done
awk '
  # "C=1  plain  1497.2 req/s ... CPU/answer: exporter  126.8 µs, ..."
  function read(line, side,   f, k) {
    split(line, f, /[ \t]+/)
    k = f[1] " " f[2]
    n[side, k]++
    rps[side, k, n[side, k]] = f[3]
    for (j = 1; j < length(f); j++) if (f[j] == "exporter") cpu[side, k, n[side, k]] = f[j + 1]
    cases[k] = 1
  }
  function median(a, m,   t, i, j, x) {
    for (i = 1; i <= m; i++) t[i] = a[i]
    for (i = 2; i <= m; i++) { x = t[i]; for (j = i - 1; j >= 1 && t[j] > x; j--) t[j + 1] = t[j]; t[j + 1] = x }
    return m % 2 ? t[(m + 1) / 2] : (t[m / 2] + t[m / 2 + 1]) / 2
  }
  FNR == 1 { side = (FILENAME ~ /before/) ? "b" : "a" }
  /^C=[0-9]+ +(plain|gzip) / { read($0, side) }
  END {
    for (k in cases) {
      m = n["a", k] < n["b", k] ? n["a", k] : n["b", k]
      line = ""
      for (i = 1; i <= m; i++) {
        r[i] = rps["a", k, i] / rps["b", k, i]; c[i] = cpu["a", k, i] / cpu["b", k, i]
        line = line sprintf(" %.2f", r[i])
      }
      printf "%-9s requests/s after/before per pair:%s; median %.2f; CPU per answer after/before median %.2f\n", k, line, median(r, m), median(c, m)
    }
  }' "$work/before.out" "$work/after.out" | sort
