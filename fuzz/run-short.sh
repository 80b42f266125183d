#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 20) from its committed seed
# corpus. Exits non-zero if any target finds a crash (the reproducer is left
# in fuzz/artifacts/<target>/). New corpus entries go to a scratch dir so the
# committed corpus only changes on purpose.
#
#   fuzz/run-short.sh [SECONDS]
set -euo pipefail
secs="${1:-20}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
targets=(chunk_index_decode chunk_index_ops range_header content_range manifest_decode prefix_decode)
cargo +nightly fuzz build
status=0
for t in "${targets[@]}"; do
  work="$(mktemp -d)"
  scratch="$(mktemp -d -p "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")")"
  cp -r "corpus/$t/." "$work/" 2>/dev/null || true
  echo "== $t (${secs}s)"
  if ! BLOCKCACHE_FUZZ_DIR="$scratch" cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$secs" -print_final_stats=1 2>"$work.log"; then
    status=1
    echo "!! $t: crash; see fuzz/artifacts/$t/ and the log below"
    # The panic and the input that caused it: the tail alone is mostly the
    # input's Debug dump and the backtrace of cargo-fuzz itself.
    grep -m1 -A6 "panicked at" "$work.log" || true
    grep -A3 "^Failing input" "$work.log" || true
    tail -n 20 "$work.log"
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs" "$work.log" || true
  rm -rf "$work" "$work.log" "$scratch"
done
exit "$status"
