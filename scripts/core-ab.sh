#!/usr/bin/env bash
# Compares the matching core of several commits the way the README's figures were taken:
# each commit's `book` bench binary is built in its own worktree, then the binaries run in
# interleaved rounds, pinned to one core, and the script prints each bench's rounds and
# the ratio of the medians against the last commit. On a shared, noisy machine a round of
# one binary can move by tens of percent; read a change only where it exceeds the spread
# of the rounds.
#
#   scripts/core-ab.sh [-r ROUNDS] [-f FILTER] [-c CORE] [-n] COMMIT...
#
# -n: build only (e.g. while something else holds the machine), run later.
# e.g. scripts/core-ab.sh -r 3 d4fbe13 main HEAD   (HEAD: the working tree's commit)
# Worktrees and their target directories are kept under ${IRONMATCH_AB_DIR:-/tmp/ironmatch-ab}
# and reused (remove them with `git worktree remove <dir>`, then their -target directories);
# a dirty working tree is not measured, only commits.
set -euo pipefail
rounds=3
filter='book/(add|cancel|match|mixed|deep|wide|burst)$'
core=1
build_only=0
while getopts "r:f:c:n" opt; do
  case "$opt" in
    r) rounds="$OPTARG" ;;
    f) filter="$OPTARG" ;;
    c) core="$OPTARG" ;;
    n) build_only=1 ;;
    *) echo "usage: $0 [-r ROUNDS] [-f FILTER] [-c CORE] [-n] COMMIT..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ "$#" -lt 1 ]; then
  echo "usage: $0 [-r ROUNDS] [-f FILTER] [-c CORE] [-n] COMMIT..." >&2
  exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${IRONMATCH_AB_DIR:-/tmp/ironmatch-ab}"
mkdir -p "$dir"

names=()
bins=()
# A worktree directory removed by hand stays registered until pruned.
git -C "$repo" worktree prune
for rev in "$@"; do
  sha="$(git -C "$repo" rev-parse --short=7 "$rev^{commit}")"
  if [[ " ${names[*]} " == *" $sha "* ]]; then
    echo "== $rev is $sha, already listed: measured once" >&2
    continue
  fi
  tree="$dir/$sha"
  if [ ! -d "$tree" ]; then
    git -C "$repo" worktree add --detach "$tree" "$sha" >/dev/null
  fi
  echo "== building the book bench of $rev ($sha)" >&2
  log="$dir/$sha-build.log"
  if ! (cd "$tree" && CARGO_TARGET_DIR="$dir/$sha-target" cargo bench --bench book --no-run) \
    >"$log" 2>&1; then
    echo "== the build of $rev ($sha) failed: $log" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  bin="$(ls -t "$dir/$sha-target"/release/deps/book-* | grep -v '\.d$' | head -n 1)"
  names+=("$sha")
  bins+=("$bin")
done

if [ "$build_only" = 1 ]; then
  exit 0
fi

out="$dir/rounds-$(date +%Y%m%d-%H%M%S).txt"
echo "== $rounds rounds of '$filter' on core $core; raw output in $out" >&2
n="${#bins[@]}"
for r in $(seq "$rounds"); do
  # Each round starts with the next commit, so a drift in load over a round does not always
  # fall on the same one.
  for k in $(seq 0 $((n - 1))); do
    i=$(((r - 1 + k) % n))
    echo "== round $r ${names[$i]} $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out" >&2
    taskset -c "$core" "${bins[$i]}" --bench "$filter" --warm-up-time 1 --measurement-time 2 \
      >"$dir/last-run.txt" 2>&1 || {
      echo "== ${names[$i]}'s bench binary failed: $dir/last-run.txt" >&2
      exit 1
    }
    grep -E '^book/' "$dir/last-run.txt" >>"$out" ||
      echo "== no bench of ${names[$i]} matches '$filter'" >&2
  done
done

python3 - "$out" "${names[@]}" <<'EOF'
import re, statistics, sys
from collections import defaultdict
path, names = sys.argv[1], sys.argv[2:]
unit = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
rounds = defaultdict(lambda: defaultdict(list))
benches = []
current = None
for line in open(path):
    m = re.match(r"== round \d+ (\S+)", line)
    if m:
        current = m.group(1)
        continue
    m = re.match(r"(book/\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+)", line)
    if m and current:
        bench = m.group(1)
        if bench not in benches:
            benches.append(bench)
        rounds[bench][current].append(float(m.group(2)) * unit[m.group(3)])
last = names[-1]
print(f"ns per command (book/state: per snapshot), the rounds of each commit; then {last}'s"
      f" speed-up over each (their median / {last}'s median)")
for bench in benches:
    cells = [" / ".join(f"{v:.3g}" for v in rounds[bench][n]) or "-" for n in names]
    line = f"{bench:16} " + " | ".join(f"{n}: {c}" for n, c in zip(names, cells))
    if rounds[bench][last]:
        base = statistics.median(rounds[bench][last])
        for n in names[:-1]:
            if rounds[bench][n]:
                line += f" | {n}/{last} {statistics.median(rounds[bench][n]) / base:.2f}x"
    print(line)
EOF
