#!/usr/bin/env bash
# Counts what the matching core does per command, by commit: instructions, level-1 data
# cache misses (reads and writes), last-level misses (instruction and data) and
# mispredicted branches (conditional, indirect), under
# valgrind's callgrind with its cache and branch simulation. Unlike a timing, the counts
# do not move with the load of a shared machine (two runs of one binary agree to the
# instruction), so a change of a few percent is readable; they are a model of the CPU, not
# the CPU: quote them beside timings (scripts/core-ab.sh), not instead of them.
#
#   scripts/core-ir.sh [-b "BENCH..."] COMMIT...
#
# BENCH: add cancel match mixed deep keyed keyed_seq wide burst (default: add cancel mixed deep
# wide burst). Each commit's `book` bench binary is built as scripts/core-ab.sh builds it
# (and in the same place); the bench applies the flow's setup, then its timed commands once
# in `apply_all`, the only function collected (IRONMATCH_BOOK_ONCE in benches/book.rs;
# commits before it cannot be measured this way). Needs valgrind (apt-get install
# valgrind). About a minute per bench and commit.
set -euo pipefail
benches="add cancel mixed deep wide burst"
while getopts "b:" opt; do
  case "$opt" in
    b) benches="$OPTARG" ;;
    *) echo "usage: $0 [-b \"BENCH...\"] COMMIT..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ "$#" -lt 1 ]; then
  echo "usage: $0 [-b \"BENCH...\"] COMMIT..." >&2
  exit 2
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
for bench in $benches; do
  case " add cancel match mixed deep keyed keyed_seq wide burst " in
    *" $bench "*) ;;
    *) echo "no once-mode for '$bench': add cancel match mixed deep keyed keyed_seq wide burst" >&2; exit 2 ;;
  esac
done
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${IRONMATCH_AB_DIR:-/tmp/ironmatch-ab}"
"$repo/scripts/core-ab.sh" -n "$@"

printf '%-10s %-8s %9s %8s %8s %8s %8s %8s\n' bench commit Ir/cmd D1mr D1mw LLmiss Bcm Bim
for bench in $benches; do
  seen=" "
  for rev in "$@"; do
    sha="$(git -C "$repo" rev-parse --short=7 "$rev^{commit}")"
    [[ "$seen" == *" $sha "* ]] && continue
    seen+="$sha "
    bin="$(ls -t "$dir/$sha-target"/release/deps/book-* | grep -v '\.d$' | head -n 1)"
    out="$dir/callgrind-$bench-$sha.out"
    log="$dir/callgrind-$bench-$sha.log"
    IRONMATCH_BOOK_ONCE="$bench" valgrind --tool=callgrind --cache-sim=yes --branch-sim=yes \
      --collect-atstart=no --toggle-collect='*apply_all*' --callgrind-out-file="$out" \
      "$bin" --bench 'book/none$' >"$log" 2>&1 || {
      echo "== $bench on $sha failed: $log" >&2
      tail -n 20 "$log" >&2
      exit 1
    }
    cmds="$(sed -n 's/^apply_all: \([0-9]*\) commands$/\1/p' "$log")"
    if [ -z "$cmds" ]; then
      echo "== $sha's bench has no IRONMATCH_BOOK_ONCE: not measured" >&2
      continue
    fi
    # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim
    awk -v b="$bench" -v s="$sha" -v n="$cmds" '/^totals:/ {
      printf "%-10s %-8s %9.1f %8.2f %8.2f %8.3f %8.2f %8.2f\n", b, s, $2/n, $6/n, $7/n, ($8+$9+$10)/n, $12/n, $14/n
    }' "$out"
  done
done
