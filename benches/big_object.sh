#!/usr/bin/env bash
# Big objects (issue 13 item 6): `blockcache fetch` of a generated object
# (benches/examples/gen_origin.rs: bytes computed from their offset, never
# stored on the origin side) into a temp store, SIGKILL at --kill-at %,
# then, each timed with its peak RSS (/usr/bin/time):
#
#   ls          `blockcache ls` of the partial object (Store::list opens
#               every index)
#   cat-near    `cat --range` of 16 MiB at the start (present)
#   cat-far     `cat --range` of the last 16 MiB (missing: a demand fill
#               from the origin, lease and index replay included)
#   resume      `blockcache fetch` again until complete (or SIGKILL at
#               --resume-to %); how many bytes the origin served for it
#               (should be ~(100 - kill-at) %), and how long after its
#               start the origin sent the first body byte (store open,
#               probe, lease with its index replay, first request)
#   ls          `blockcache ls` of the complete object
#   manifest    `blockcache manifest` (every chunk's CV from the index)
#   verify      `blockcache verify` (re-hashes every stored byte)
#
# and checks the object's BLAKE3 against the generator's own
# (`gen_origin --blake3`). The store needs the real bytes: the script
# checks free space first (object size x the larger of --kill-at and
# --resume-to %, plus --margin) and removes the store when done.
#
#   benches/big_object.sh [--size SIZE] [--chunk-size SIZE] [--kill-at PCT]
#                         [--resume-to PCT] [--margin SIZE] [--bin PATH]
#                         [--origin PATH] [--dir DIR] [--timeout SECS]
#
# Defaults: --size 45GiB --chunk-size 1MiB --kill-at 60 --resume-to 100
# --margin 8GiB --timeout 3600 (per step). With --resume-to below 100 the
# resume is SIGKILLed there too and the complete-object steps are skipped:
# that measures a resume of an object bigger than the disk could hold
# whole (e.g. --size 64GiB --chunk-size 64KiB: 1 Mi chunks). Env:
# BLOCKCACHE (binary; default target/release/blockcache), GEN_ORIGIN
# (default target/release/examples/gen_origin: cargo build --release -p
# benches --example gen_origin), INDEX_OPEN (default .../examples/index_open,
# same; the index timings are skipped without it), COMPARE_DIR (parent of the temp dir;
# default $TMPDIR or /tmp). Needs python3, timeout, /usr/bin/time, curl,
# pgrep.
set -euo pipefail

SCRIPT=big_object.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_ARG=45GiB
CHUNK_ARG=1MiB
KILL_AT=60
RESUME_TO=100
MARGIN_ARG=8GiB
STEP_TIMEOUT=3600
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
BIN=${BLOCKCACHE:-$TARGET/release/blockcache}
GEN=${GEN_ORIGIN:-$TARGET/release/examples/gen_origin}
INDEX_OPEN=${INDEX_OPEN:-$TARGET/release/examples/index_open}
PARENT=${COMPARE_DIR:-${TMPDIR:-/tmp}}

while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --chunk-size) CHUNK_ARG=$2; shift 2 ;;
    --kill-at) KILL_AT=$2; shift 2 ;;
    --resume-to) RESUME_TO=$2; shift 2 ;;
    --margin) MARGIN_ARG=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --origin) GEN=$2; shift 2 ;;
    --dir) PARENT=$2; shift 2 ;;
    --timeout) STEP_TIMEOUT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$SCRIPT: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for tool in python3 timeout /usr/bin/time curl df pgrep; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p cache-cli (or set BLOCKCACHE)"
[ -x "$GEN" ] || die "$GEN not found: cargo build --release -p benches --example gen_origin (or set GEN_ORIGIN)"
for n in "$KILL_AT" "$RESUME_TO"; do
    if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 100 ]; then
        die "percentages must be 1..100"
    fi
done
[ "$KILL_AT" -lt 100 ] || die "--kill-at must be below 100"
[ "$RESUME_TO" -gt "$KILL_AT" ] || die "--resume-to must be above --kill-at"
[[ $STEP_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer"
SIZE=$(to_bytes "$SIZE_ARG")
CHUNK=$(to_bytes "$CHUNK_ARG")
MARGIN=$(to_bytes "$MARGIN_ARG")
CHUNKS=$(((SIZE + CHUNK - 1) / CHUNK))

# Disk: the store holds the bytes fetched so far (the data file is sparse).
NEED=$((SIZE * RESUME_TO / 100 + MARGIN))
AVAIL=$(df -B1 --output=avail "$PARENT" | tail -1 | tr -d ' ')
if [ "$AVAIL" -lt "$NEED" ]; then
    die "$PARENT has $((AVAIL >> 30)) GiB free; ${RESUME_TO} % of $SIZE_ARG plus a $MARGIN_ARG margin needs $((NEED >> 30)) GiB (try --resume-to, a smaller --size or --dir)"
fi

make_work_dir "$PARENT"
STORE=$WORK/store
export BLOCKCACHE_STORE=$STORE
log "work dir $WORK; $SIZE_ARG in $CHUNK_ARG chunks = $CHUNKS chunks; $((AVAIL >> 30)) GiB free, needs up to $((NEED >> 30)) GiB"

start_gen_origin "$GEN" "$SIZE"

stat_of() { # stats-url field
    curl -sf --max-time 5 "$1" | awk -v k="$2" '$1 == k {print $2}'
}
served() { stat_of "$BASE/_stats" body_bytes; }
reset_stats() { curl -sf --max-time 5 -o /dev/null "$BASE/_stats/reset"; }
gib() { calc "round($1 / 2**30, 2)"; }
mib() { calc "round($1 / 2**20, 1)"; }

RESULTS=()
result() { RESULTS+=("$(printf '| %s | %s |' "$1" "$2")"); log "$1: $2"; }

# anon_kib PID: its resident anonymous memory (heap, stacks) in KiB. RSS
# also counts the pages of the data file's memory map a process touched:
# page cache the kernel can drop, not memory the process holds.
anon_kib() { awk '/^RssAnon/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# disk_read PID: bytes it made the kernel read from the disk (page cache
# misses), from /proc/PID/io.
disk_read() { awk '/^read_bytes/{print $2}' "/proc/$1/io" 2>/dev/null || true; }
mem() { echo "peak RSS $(calc "round($1 / 1024, 1)") MiB (anonymous $(calc "round($2 / 1024, 1)") MiB)"; }
# io_words BYTES: ", read N GiB from the disk" (nothing when unknown).
io_words() { [ -z "$1" ] || echo ", read $(gib "$1") GiB from the disk"; }

# measure NAME CMD...: runs CMD under /usr/bin/time (wall time, peak RSS)
# and samples its anonymous memory every 50 ms; sets T (seconds) and MEM
# (words). CMD's stdout goes to $WORK/NAME.out, stderr to $WORK/NAME.err.
measure() {
    local name=$1 pid child='' anon=0 a deadline wall rss io='' r
    shift
    deadline=$(($(date +%s) + STEP_TIMEOUT))
    bg /usr/bin/time -f '%e %M' -o "$WORK/time.$name" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    pid=$LAST_PID
    while alive "$pid"; do
        [ -n "$child" ] || child=$(pgrep -P "$pid" || true)
        if [ -n "$child" ]; then
            a=$(anon_kib "$child")
            [ "${a:-0}" -le "$anon" ] || anon=$a
            r=$(disk_read "$child")
            [ -z "$r" ] || io=$r
            if [ "$(date +%s)" -ge "$deadline" ]; then
                kill -9 "$child"
                die "$name: not done after $STEP_TIMEOUT s"
            fi
        fi
        sleep 0.05
    done
    if ! wait "$pid"; then
        tail -5 "$WORK/$name.err" >&2
        die "$name failed"
    fi
    read -r wall rss <"$WORK/time.$name"
    T=$wall
    MEM="$(mem "$rss" "$anon")$(io_words "$io")"
}

# fetch_until PCT NAME: starts a fetch and SIGKILLs it once its progress
# lines reach PCT %; sets T and MEM (memory peaks until the kill).
fetch_until() {
    local pct=$1 name=$2 t0 pid cur=0 hwm=0 h anon=0 a deadline io='' r
    t0=$(now)
    deadline=$(($(date +%s) + STEP_TIMEOUT))
    bg "$BIN" fetch "$URL" --chunk-size "$CHUNK" 2>"$WORK/$name.err" >/dev/null
    pid=$LAST_PID
    while :; do
        alive "$pid" || die "$name: fetch ended before $pct % ($(tail -2 "$WORK/$name.err"))"
        [ "$(date +%s)" -lt "$deadline" ] || die "$name: not at $pct % after $STEP_TIMEOUT s"
        cur=$(grep -o "[0-9]*%" "$WORK/$name.err" | tail -1 | tr -d % || true)
        h=$(awk '/^VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ "${h:-0}" -le "$hwm" ] || hwm=$h
        a=$(anon_kib "$pid")
        [ "${a:-0}" -le "$anon" ] || anon=$a
        r=$(disk_read "$pid")
        [ -z "$r" ] || io=$r
        [ "${cur:-0}" -ge "$pct" ] && break
        sleep 0.2
    done
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
    T=$(calc "round($(now) - $t0, 1)")
    MEM="$(mem "$hwm" "$anon")$(io_words "$io")"
}

# Object state from `ls --json`: prints "key bytes_done chunks_done state blake3".
object_state() {
    timeout 60 "$BIN" ls --json | python3 -c '
import json, sys
o = json.load(sys.stdin)[0]
print(o["key"], o["bytes_done"], o["chunks_done"], o["state"], o["blake3"] or "-")'
}

# 1. Fetch, SIGKILL at KILL_AT %.
reset_stats
fetch_until "$KILL_AT" fetch
sent=$(served)
read -r KEY DONE_B DONE_C _ _ < <(object_state)
result "fetch to $KILL_AT %, SIGKILL" "$T s ($(calc "round($sent / 2**20 / $T)") MiB/s served), $MEM; durable after the kill: $(gib "$DONE_B") GiB, $DONE_C / $CHUNKS chunks ($(calc "round(100 * $DONE_B / $SIZE, 1)") %); origin sent $(gib "$sent") GiB"

# The index alone, on a copy (open_replayed may write): see index_open.rs.
index_times() { # label
    [ -x "$INDEX_OPEN" ] || { log "no $INDEX_OPEN: index timings skipped"; return 0; }
    mkdir -p "$WORK/idx"
    cp "$STORE/objects/$KEY/index" "$WORK/idx/index"
    cp "$STORE/objects/$KEY/index.snap" "$WORK/idx/index.snap" 2>/dev/null || true
    timeout "$STEP_TIMEOUT" "$INDEX_OPEN" "$WORK/idx/index" >"$WORK/idx.out"
    rm -rf "$WORK/idx"
    local line
    while read -r line; do result "index ($1)" "$line"; done <"$WORK/idx.out"
}
index_times partial

# 2. The partial object: ls, a present range, a missing far range.
measure ls-partial "$BIN" ls
result "ls (partial, $DONE_C records)" "$T s, $MEM"
measure cat-near "$BIN" cat "$KEY" --range 0-16777215
[ "$(stat -c %s "$WORK/cat-near.out")" -eq 16777216 ] || die "cat-near: wrong length"
result "cat --range 0-16777215 (present)" "$T s, $MEM"
reset_stats
measure cat-far "$BIN" cat "$KEY" --range -16777216
[ "$(stat -c %s "$WORK/cat-far.out")" -eq 16777216 ] || die "cat-far: wrong length"
result "cat --range -16777216 (last 16 MiB, missing)" "$T s, $MEM; origin sent $(mib "$(served)") MiB"
rm -f "$WORK"/cat-*.out
read -r _ DONE_B DONE_C _ _ < <(object_state)

# 3. Resume.
reset_stats
t0_ms=$(now_ms)
if [ "$RESUME_TO" -lt 100 ]; then
    fetch_until "$RESUME_TO" resume
    what="resume to $RESUME_TO %, SIGKILL"
else
    measure resume "$BIN" fetch "$URL" --chunk-size "$CHUNK"
    what="resume to complete"
fi
first=$(stat_of "$BASE/_stats" first_body_ms)
sent=$(served)
result "$what" "$T s, $MEM; origin sent $(gib "$sent") GiB = $(calc "round(100 * $sent / $SIZE, 1)") % of the object ($(calc "round(100 * ($SIZE - $DONE_B) / $SIZE, 1)") % was missing); first body byte $((first - t0_ms)) ms after the start"

if [ "$RESUME_TO" -ge 100 ]; then
    read -r _ _ _ state b3 < <(object_state)
    [ "$state" = complete ] || die "not complete after the resume: $state"
    index_times complete
    measure ls-complete "$BIN" ls
    result "ls (complete)" "$T s, $MEM"
    measure manifest "$BIN" manifest "$KEY" -o "$WORK/manifest"
    result "manifest ($CHUNKS CVs from the index)" "$T s, $MEM"
    measure verify "$BIN" verify "$KEY"
    result "verify" "$T s ($(calc "round($SIZE / 2**20 / $T)") MiB/s), $MEM"
    drop_store "$STORE" # free the disk before the long hash
    t0=$(now)
    want=$(timeout "$STEP_TIMEOUT" "$GEN" --size "$SIZE" --blake3)
    [ "$b3" = "$want" ] || die "BLAKE3 mismatch: store $b3, generator $want"
    result "BLAKE3" "$b3 = generator's ($(calc "round($(now) - $t0, 1)") s to compute)"
else
    read -r _ DONE_B DONE_C _ _ < <(object_state)
    measure ls-partial2 "$BIN" ls
    result "ls (partial, $DONE_C records)" "$T s, $MEM"
fi
drop_store "$STORE"

echo "$SIZE_ARG in $CHUNK_ARG chunks ($CHUNKS chunks), kill at $KILL_AT %, $(nproc) cores, load $(load1):"
echo "| step | result |"
echo "| --- | --- |"
printf '%s\n' "${RESULTS[@]}"
