#!/usr/bin/env bash
# Followers cost nothing (issue 13 item 2): one `blockcache fetch` of a
# file from a loopback nginx, then 8 concurrent fetches of the same URL
# into one store (one leader downloads, 7 processes follow its index),
# rounds interleaved. Prints per round: wall time of the 8 against the
# 1 (target <= 1.15x) and the CPU time (user + system) of the 7 followers
# together against the leader's (target <= 10 %). The leader is the
# process with the most CPU time (it hashes and writes every chunk).
#
#   benches/followers.sh [--size SIZE] [--runs N] [--bin PATH] [--dir DIR]
#
# Env: BLOCKCACHE (binary; default target/release), COMPARE_DIR, RATE
# (nginx limit_rate per connection, default 60m). Needs nginx, python3,
# /usr/bin/time.
set -euo pipefail

SCRIPT=followers.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_ARG=1GiB
RUNS=3
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BLOCKCACHE:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/blockcache}
PARENT=${COMPARE_DIR:-${TMPDIR:-/tmp}}
RATE=${RATE:-60m}

while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --dir) PARENT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$SCRIPT: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for tool in nginx python3 /usr/bin/time timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p cache-cli (or set BLOCKCACHE)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
SIZE=$(to_bytes "$SIZE_ARG")

make_work_dir "$PARENT"
ROOT=$WORK/origin
mkdir -p "$ROOT"
generate_file "$ROOT/image.raw" "$SIZE"
PORT=$(free_port)
cat >"$WORK/nginx.conf" <<CONF
worker_processes $(nproc);
error_log $WORK/nginx-error.log;
pid $WORK/nginx.pid;
events {}
http {
    access_log off;
    sendfile on;
    server { listen 127.0.0.1:$PORT; root $ROOT; location / { limit_rate $RATE; } }
}
CONF
bg nginx -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon off;'
URL=http://127.0.0.1:$PORT/image.raw
wait_http "$URL"

timed_fetch() { # store tag -> writes $WORK/cpu.tag
    /usr/bin/time -f "%U %S" -o "$WORK/cpu.$2" timeout 600 "$BIN" --store "$1" -q fetch "$URL" >/dev/null
}

# Every phase starts alike: no writeback pending and a free pool just
# touched (see warm_free_memory). Without this, round 1's 8 fetches ran
# 1.5-2.0x and the leader's system time was 3.9 s against 1.5 s, all of it
# in page-cache copies, and which side gained from the last delete
# depended on the order of the phases.
settle() { sync; warm_free_memory "$SIZE"; }
W=() F=()
for i in $(seq "$RUNS"); do
    settle
    t0=$(now)
    timed_fetch "$WORK/one" one
    one=$(calc "$(now) - $t0")
    drop_store "$WORK/one"
    rm -f "$WORK"/cpu.p*
    settle
    t0=$(now)
    pids=()
    for p in 0 1 2 3 4 5 6 7; do
        timed_fetch "$WORK/eight" "p$p" &
        pids+=("$!")
    done
    wait "${pids[@]}"
    eight=$(calc "$(now) - $t0")
    drop_store "$WORK/eight"
    share=$(python3 - "$WORK" <<'PY'
import glob, sys
cpu = [sum(map(float, open(f).read().split())) for f in glob.glob(sys.argv[1] + "/cpu.p*")]
lead = max(cpu)
print(round((sum(cpu) - lead) / lead * 100, 1))
PY
)
    W+=("$(calc "$eight / $one")") F+=("$share")
    log "round $i: 1 fetch $(calc "round($one, 2)") s, 8 fetches $(calc "round($eight, 2)") s ($(calc "round($eight / $one, 2)")x), 7 followers' CPU ${share} % of the leader's"
done
printf '8 vs 1 fetch: wall %sx (target <= 1.15x) | followers CPU %s %% of the leader (target <= 10 %%) | medians of %s x %s, %s cores, limit_rate %s\n' \
    "$(calc "round($(median "${W[@]}"), 2)")" "$(median "${F[@]}")" "$RUNS" "$SIZE_ARG" "$(nproc)" "$RATE"
