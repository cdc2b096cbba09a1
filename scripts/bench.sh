#!/usr/bin/env bash
# Latency by rate: builds release, starts `ironmatch serve` on a temporary journal (loopback,
# a free port), runs `ironmatch load --baseline` at each rate, and writes per rate the JSON
# results, the HdrHistogram distributions (engine and baseline), a summary table
# (results.md) and a PNG plot of latency by percentile (latency.png).
#
# Usage: scripts/bench.sh [RATE...]            (default: 10000 50000 100000 150000)
# Environment: DURATION seconds per rate (10), SESSIONS (all users), OUT (target/bench),
# THREADING (the shipped "auto"; or "shared", "dedicated"; "omit" drops the key, for builds
# older than it), SNAPSHOT_SOURCE (the shipped "auto", or "matcher", "follower"; "omit" drops the key),
# BIN: the engine to serve (./target/release/ironmatch; e.g. an older build to
# compare in the same session; the load generator is always this tree's), CONFIG: the
# configuration to start from (config/ironmatch.toml; e.g. a copy with one setting changed).
set -euo pipefail
cd "$(dirname "$0")/.."
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10000 50000 100000 150000)
duration=${DURATION:-10}
out=${OUT:-target/bench}
threading=${THREADING:-auto}
bin=${BIN:-./target/release/ironmatch}
sessions=()
[ -n "${SESSIONS:-}" ] && sessions=(--sessions "$SESSIONS")

cargo build --release --quiet
tmp=$(mktemp -d)
# The shipped config without its [venue] table: the venue has no day, so the figures do not
# depend on the hour the bench runs at (outside New York's hours every order is refused).
sed -e "s#dir = \"./data\"#dir = \"$tmp/journal\"#" -e 's#"127.0.0.1:15000"#"127.0.0.1:0"#' -e 's#"127.0.0.1:15002"#"127.0.0.1:0"#' \
    -e 's#"127.0.0.1:15080"#"127.0.0.1:0"#' \
    -e "s#^session_store_bytes = .*#session_store_bytes = ${STORE_BYTES:-134217728}#" \
    -e "s#^segment_bytes_max = .*#segment_bytes_max = ${SEGMENT_BYTES:-1073741824}#" \
    -e "s#^threading = \"auto\"#threading = \"$threading\"#" -e '/^threading = "omit"/d' \
    -e "s#^snapshot_source = \"auto\"#snapshot_source = \"${SNAPSHOT_SOURCE:-auto}\"#" \
    -e '/^snapshot_source = "omit"/d' \
    -e '/^\[venue\]/,/^\[marketdata\]/{/^\[marketdata\]/!d}' \
    "${CONFIG:-config/ironmatch.toml}" >"$tmp/ironmatch.toml"
"$bin" serve --config "$tmp/ironmatch.toml" >"$tmp/serve.out" 2>"$tmp/serve.err" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; cp "$tmp/serve.err" "$out/serve.err" 2>/dev/null; rm -rf "$tmp"' EXIT
addr=""
for _ in $(seq 100); do
    addr=$(grep -o 'on 127\.0\.0\.1:[0-9]*' "$tmp/serve.out" | head -1 | cut -d' ' -f2 || true)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "bench: the engine did not start:" >&2; cat "$tmp/serve.err" >&2; exit 1; }
mkdir -p "$out"
# Results of an earlier run in the same directory would join this run's table and plot.
rm -f "$out"/load-*.json "$out"/load-*.hgrm "$out"/load-*.txt
head -1 "$tmp/serve.out" | tee "$out/serve.txt" >&2 || true

status=0
for rate in "${rates[@]}"; do
    echo "== rate $rate msg/s, $duration s, engine at $addr" >&2
    ./target/release/ironmatch load --config "$tmp/ironmatch.toml" --connect "$addr" "${sessions[@]}" \
        --rate "$rate" --duration "$duration" --baseline --quiet \
        --json "$out/load-$rate.json" --hgrm "$out/load-$rate.hgrm" | tee "$out/load-$rate.txt" || status=$?
done

# The plot needs matplotlib; a private virtualenv under target/ keeps the system clean. Its
# install fetches from PyPI: offline, the plot is skipped and the runs' results stand.
python=python3
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    if { [ -x target/plot-venv/bin/python ] || python3 -m venv target/plot-venv; } &&
        target/plot-venv/bin/python -m pip install --quiet matplotlib; then
        python=target/plot-venv/bin/python
    else
        python=""
        echo "bench: matplotlib could not be installed: latency.png skipped" >&2
    fi
fi
if [ -n "$python" ]; then
    "$python" scripts/plot_latency.py "$out" || status=$?
else
    python3 scripts/plot_latency.py --no-plot "$out" || status=$?
fi
echo "bench: results in $out (results.md, latency.png)" >&2
exit $status
