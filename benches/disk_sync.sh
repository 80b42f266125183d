#!/usr/bin/env bash
# Fill at the disk's speed (issue 13 item 7): `blockcache fetch` of a file
# from a loopback nginx and then `sync`, against `cp` of the same file and
# then `sync`, on the same disk, rounds interleaved. The time of each side
# includes its `sync`: what counts is when the bytes are on the disk.
#
#   benches/disk_sync.sh [--size SIZE] [--runs N] [--bin PATH] [--dir DIR]
#                        [--against PATH] [--ceiling]
#
# --against PATH measures a second blockcache binary in the same rounds
# (an A/B of a change, same disk, same moment).
# --ceiling then runs benches/examples/copy_ceiling against the same nginx
# and file: the same work plan without blockcache, once with the bytes
# copied through user space (recv + pwrite, as any HTTP client library
# does) and once moved in the kernel (splice). It shows how far the
# machine's CPU lets a fill go on each path (built with cargo if needed).
#
# Prints each round, the medians and fetch/cp as a ratio of throughputs
# (target >= 0.8x). Env: BLOCKCACHE (binary; default target/release),
# COMPARE_DIR (parent of the temp dir; default $TMPDIR or /tmp: keep it on
# the disk you want to measure). Needs nginx, python3, timeout.
set -euo pipefail

SCRIPT=disk_sync.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_ARG=1GiB
RUNS=3
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BLOCKCACHE:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/blockcache}
PARENT=${COMPARE_DIR:-${TMPDIR:-/tmp}}
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}
BIN2=
CEILING=0

while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --dir) PARENT=$2; shift 2 ;;
    --against) BIN2=$2; shift 2 ;;
    --ceiling) CEILING=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$SCRIPT: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for tool in nginx python3 timeout sync; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p cache-cli (or set BLOCKCACHE)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
SIZE=$(to_bytes "$SIZE_ARG")

make_work_dir "$PARENT"
FILE=image.raw
ROOT=$WORK/origin
mkdir -p "$ROOT"
log "work dir $WORK ($(df -h --output=source,fstype "$WORK" | tail -1 | tr -s ' '))"
generate_file "$ROOT/$FILE" "$SIZE"
PORT=$(free_port)
PORT_SLOW=$(free_port)
while [ "$PORT_SLOW" = "$PORT" ]; do PORT_SLOW=$(free_port); done
sed -e "s|@DIR@|$WORK|g" -e "s|@ROOT@|$ROOT|g" -e "s|@PORT@|$PORT|g" \
    -e "s|@PORT_SLOW@|$PORT_SLOW|g" -e "s|@WORKERS@|$NGINX_WORKERS|g" \
    "$ROOT_DIR/benches/compare-nginx.conf.in" >"$WORK/nginx.conf"
bg nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
URL=http://127.0.0.1:$PORT/$FILE
wait_http "$URL"
sync

# The same start for every timed side: the origin file in the page cache.
# On this VM kind, reclaim drops pages of a file left idle for a while
# (978 of 1024 MiB were left after a minute), and nginx then waited on
# disk reads (`perf sched`: nginx in D state, the fill's sockets waiting
# for data), which is not what is measured here. cp reads the same file,
# so both sides get this; it is not timed.
prepare_side() {
    cat "$ROOT/$FILE" >/dev/null
    sync
}

fetch_sync() { # [binary] -> seconds
    local bin=${1:-$BIN} store=$WORK/store t0 t1
    drop_store "$store"
    prepare_side
    t0=$(now)
    timeout 600 "$bin" --store "$store" -q fetch "$URL" >/dev/null
    sync
    t1=$(now)
    drop_store "$store"
    calc "$t1 - $t0"
}
cp_sync() { # -> seconds
    local dest=$WORK/copy.raw t0 t1
    rm -f "$dest"
    prepare_side
    t0=$(now)
    cp "$ROOT/$FILE" "$dest"
    sync
    t1=$(now)
    rm -f "$dest"
    calc "$t1 - $t0"
}

F=() C=() G=()
for i in $(seq "$RUNS"); do
    f=$(fetch_sync)
    c=$(cp_sync)
    F+=("$f") C+=("$c")
    line="round $i: fetch+sync $(calc "round($SIZE / $f / 1e6)") MB/s, cp+sync $(calc "round($SIZE / $c / 1e6)") MB/s"
    if [ -n "$BIN2" ]; then
        g=$(fetch_sync "$BIN2")
        G+=("$g")
        line="$line, --against fetch+sync $(calc "round($SIZE / $g / 1e6)") MB/s"
    fi
    log "$line"
done
fm=$(median "${F[@]}")
cm=$(median "${C[@]}")
printf 'fetch+sync %s MB/s | cp+sync %s MB/s | ratio %sx (target >= 0.8x) | %s x %s, %s\n' \
    "$(calc "round($SIZE / $fm / 1e6)")" "$(calc "round($SIZE / $cm / 1e6)")" \
    "$(calc "round($cm / $fm, 2)")" "$RUNS" "$SIZE_ARG" "$(nproc) cores"
if [ -n "$BIN2" ]; then
    gm=$(median "${G[@]}")
    printf -- '--against: fetch+sync %s MB/s | ratio to cp+sync %sx | to --bin %sx\n' \
        "$(calc "round($SIZE / $gm / 1e6)")" "$(calc "round($cm / $gm, 2)")" "$(calc "round($fm / $gm, 2)")"
fi
if [ "$CEILING" = 1 ]; then
    log "copy ceiling (benches/examples/copy_ceiling, $RUNS rounds)"
    (cd "$ROOT_DIR" && cargo build --release -q -p benches --example copy_ceiling)
    "${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/examples/copy_ceiling" \
        --url "$URL" --len "$SIZE" --dir "$WORK" --rounds "$RUNS"
fi
