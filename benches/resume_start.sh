#!/usr/bin/env bash
# How long a resume of a big partial object takes to start (issue 13 item
# 6): the time from starting `blockcache fetch` until the origin sends the
# first body byte of the resumed download (store open, probe, the lease
# with its index read, the first request). What depends on the chunk count
# and the length of the index log, without the disk for the bytes: the
# partial object is made by `fetch` for about a second (generated origin,
# benches/examples/gen_origin.rs), then benches/examples/index_fill.rs
# appends made-up chunk records up to --done % (in batches of 4096 with a
# snapshot after each, as the filler does); the data file stays sparse.
# Each round copies that store (sparse) and times one resume, SIGKILLed
# at its first byte; with --against, a second binary in the same rounds,
# interleaved. Also times `blockcache ls` of the partial object.
#
#   benches/resume_start.sh [--size SIZE] [--chunk-size SIZE] [--done PCT]
#                           [--runs N] [--bin PATH] [--against PATH]
#                           [--dir DIR]
#
# Defaults: --size 64GiB --chunk-size 64KiB (1 Mi chunks) --done 60
# --runs 7. --against a build from before snapshot version 2 (it cannot
# read them) gets the snapshot rewritten in version 1 (python3, b3sum).
# Env: BLOCKCACHE, GEN_ORIGIN, INDEX_FILL (default
# target/release/examples/index_fill: cargo build --release -p benches
# --example gen_origin --example index_fill), COMPARE_DIR. Needs python3,
# curl, timeout.
set -euo pipefail

SCRIPT=resume_start.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_ARG=64GiB
CHUNK_ARG=64KiB
DONE_PCT=60
RUNS=7
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
BIN=${BLOCKCACHE:-$TARGET/release/blockcache}
GEN=${GEN_ORIGIN:-$TARGET/release/examples/gen_origin}
FILL=${INDEX_FILL:-$TARGET/release/examples/index_fill}
PARENT=${COMPARE_DIR:-${TMPDIR:-/tmp}}
BIN2=

while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --chunk-size) CHUNK_ARG=$2; shift 2 ;;
    --done) DONE_PCT=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --against) BIN2=$2; shift 2 ;;
    --dir) PARENT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$SCRIPT: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for tool in python3 curl timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
for b in "$BIN" "$GEN" "$FILL" ${BIN2:+"$BIN2"}; do
    [ -x "$b" ] || die "$b not found (see --help)"
done
[ -z "$BIN2" ] || command -v b3sum >/dev/null || die "b3sum not found (needed by --against)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
if ! [[ $DONE_PCT =~ ^[0-9]+$ ]] || [ "$DONE_PCT" -gt 100 ]; then
    die "--done must be 0..100"
fi
SIZE=$(to_bytes "$SIZE_ARG")
CHUNK=$(to_bytes "$CHUNK_ARG")
CHUNKS=$(((SIZE + CHUNK - 1) / CHUNK))
DONE_CHUNKS=$((CHUNKS * DONE_PCT / 100))

make_work_dir "$PARENT"
start_gen_origin "$GEN" "$SIZE"
first_body() { curl -sf --max-time 5 "$BASE/_stats" | awk '$1 == "first_body_ms" {print $2}'; }

# The partial object: a real fetch for about a second, then made-up records.
TMPL=$WORK/template
BLOCKCACHE_STORE=$TMPL bg "$BIN" -q fetch "$URL" --chunk-size "$CHUNK" >/dev/null 2>&1
sleep 1
kill -9 "$LAST_PID"
wait "$LAST_PID" 2>/dev/null || true
KEY=$(ls "$TMPL/objects")
INDEX=$TMPL/objects/$KEY/index
timeout 600 "$FILL" "$INDEX" "$DONE_CHUNKS" >/dev/null
log "$SIZE_ARG in $CHUNK_ARG chunks ($CHUNKS), $DONE_CHUNKS done ($DONE_PCT %): log $(($(stat -c %s "$INDEX") >> 20)) MiB, store $(du -sm "$TMPL" | cut -f1) MiB on disk"
if [ -n "$BIN2" ]; then
    # The same store with the snapshot in version 1 (no records digest):
    # fields up to the digest, then the rest, and a new checksum.
    TMPL2=$WORK/template-v1
    cp -a --sparse=always "$TMPL" "$TMPL2"
    SNAP=$TMPL2/objects/$KEY/index.snap
    python3 - "$SNAP" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
assert b[8:10] == b"\x02\x00", "not a version 2 snapshot"
body = b[:-32]
v1 = body[:8] + b"\x01\x00" + bytes([body[10] & 1, 0]) + body[12:112] + body[144:]
open(sys.argv[1] + ".body", "wb").write(v1)
PY
    { cat "$SNAP.body"; b3sum --raw "$SNAP.body"; } >"$SNAP.new"
    mv "$SNAP.new" "$SNAP"
    rm "$SNAP.body"
fi

# one BIN TEMPLATE: prints the ms from start to the first body byte.
one() {
    local bin=$1 run=$WORK/run pid t0 f=0 i
    rm -rf "$run"
    cp -a --sparse=always "$2" "$run"
    curl -sf --max-time 5 -o /dev/null "$BASE/_stats/reset"
    t0=$(now_ms)
    BLOCKCACHE_STORE=$run bg "$bin" -q fetch "$URL" --chunk-size "$CHUNK" >/dev/null 2>&1
    pid=$LAST_PID
    for i in $(seq 1000); do
        f=$(first_body)
        [ "${f:-0}" = 0 ] || break
        alive "$pid" || die "$bin: the resume ended without a request"
        sleep 0.01
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$run"
    [ "${f:-0}" != 0 ] || die "$bin: no body byte after $i polls"
    echo $((f - t0))
}
# ls_ms BIN TEMPLATE: wall ms of `blockcache ls` (the object's index opened).
ls_ms() {
    local t0
    t0=$(now_ms)
    BLOCKCACHE_STORE=$2 timeout 60 "$1" ls >/dev/null
    echo $(($(now_ms) - t0))
}

A=() B=() LA=() LB=()
for r in $(seq "$RUNS"); do
    A+=("$(one "$BIN" "$TMPL")")
    LA+=("$(ls_ms "$BIN" "$TMPL")")
    line="round $r: ${A[-1]} ms (ls ${LA[-1]} ms)"
    if [ -n "$BIN2" ]; then
        B+=("$(one "$BIN2" "$TMPL2")")
        LB+=("$(ls_ms "$BIN2" "$TMPL2")")
        line="$line | against: ${B[-1]} ms (ls ${LB[-1]} ms)"
    fi
    log "$line"
done
summary="resume start (first body byte): median $(median "${A[@]}") ms, ls $(median "${LA[@]}") ms"
if [ -n "$BIN2" ]; then
    summary="$summary | against: median $(median "${B[@]}") ms, ls $(median "${LB[@]}") ms"
fi
echo "$summary | $SIZE_ARG in $CHUNK_ARG chunks ($CHUNKS), $DONE_CHUNKS done, $RUNS rounds, $(nproc) cores, load $(load1)"
