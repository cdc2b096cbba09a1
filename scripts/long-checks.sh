#!/usr/bin/env bash
# Checks too long for CI: the 10,000,000-command model check and two timed fuzz runs.
#   scripts/long-checks.sh [SEED] [FUZZ_SECONDS]
# The seed defaults to the time; it is printed so a failure can be rerun exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
seed="${1:-$(date +%s)}"
fuzz_seconds="${2:-300}"

echo "== model check, 10,000,000 commands, seed $seed"
IRONMATCH_SEED="$seed" cargo test --release --test model -- --ignored --nocapture

if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
  echo "== fuzz book_vs_model for ${fuzz_seconds}s"
  cargo +nightly fuzz run book_vs_model -- -max_total_time="$fuzz_seconds"
  # Long inputs from the start: the large-pool setups then grow the book past one chunk.
  echo "== fuzz book_vs_model with inputs up to 64 KiB for ${fuzz_seconds}s"
  cargo +nightly fuzz run book_vs_model -- -max_total_time="$fuzz_seconds" \
    -max_len=65536 -len_control=0
else
  echo "== fuzz skipped: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)"
fi
