#!/usr/bin/env bash
# Downloads over a realistic WAN, in one go: blockcache fetch vs curl vs
# aria2c -x4 and -x16 through a userspace WAN link (examples/wan_link.rs,
# the model in benches/src/wan.rs: per-connection RTT and rate cap, one
# link cap for all connections) in front of a loopback nginx.
#
#   benches/wan.sh [--size SIZE] [--runs N] [--rtt-ms MS] [--conn-mb MB/s] [--link-mb MB/s]
#                  [--far-only]
#
# Defaults: 1 GiB, 3 rounds (variants interleaved, medians reported),
# RTT 40 ms, 20 MB/s per connection, 100 MB/s link (MB = 10^6 bytes).
# Variants: blockcache fetch with its default --connections (8), with 4
# and with 16 (fresh store each time, no -o copy), curl -o, aria2c -x4 -s4 -k1M, aria2c -x16 -s16 -k1M,
# and "ceiling": 16 curls of equal ranges into /dev/null at once (what the
# link delivers to a client that does nothing with the bytes).
# Then the far-range demand: while a fetch of the image runs, another
# process reads the last 64 KiB (`cat --range -65536`); its latency is
# compared with 2 x (RTT + one 1 MiB chunk at the per-connection rate).
# Prints MB/s per variant, the ratio to the link cap, PASS/MISS against
# issue 13 (fetch >= 0.95 x link cap and >= aria2c -x16). --far-only runs
# the far-range demand alone (for an A/B of it: the environment, e.g.
# BLOCKCACHE_SPLICE=0, reaches every blockcache process).
#
# Env: BLOCKCACHE (binary; default ./target/release/blockcache),
# BLOCKCACHE_B (another build, run as the variant "fetch B"), WAN_LINK
# (the proxy; default ./target/release/examples/wan_link), COMPARE_DIR
# (parent of the temp dir). Needs nginx, curl, aria2c, python3.
set -euo pipefail

SCRIPT=wan.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_ARG=1GiB
RUNS=3
RTT_MS=40
CONN_MB=20
LINK_MB=100
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
BIN=${BLOCKCACHE:-$TARGET/release/blockcache}
BIN_B=${BLOCKCACHE_B:-}
WAN=${WAN_LINK:-$TARGET/release/examples/wan_link}
PARENT=${COMPARE_DIR:-${TMPDIR:-/tmp}}

FAR_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --rtt-ms) RTT_MS=$2; shift 2 ;;
    --conn-mb) CONN_MB=$2; shift 2 ;;
    --link-mb) LINK_MB=$2; shift 2 ;;
    --far-only) FAR_ONLY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "wan.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
for tool in nginx curl aria2c python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx curl aria2 python3)"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p cache-cli (or set BLOCKCACHE)"
[ -x "$WAN" ] || die "$WAN not found: cargo build --release -p benches --example wan_link"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
SIZE=$(to_bytes "$SIZE_ARG")

make_work_dir "$PARENT"
FILE=image.raw
ROOT=$WORK/origin
mkdir -p "$ROOT" "$WORK/dl"
generate_file "$ROOT/$FILE" "$SIZE"
WANT=$(b3sum --no-names "$ROOT/$FILE" 2>/dev/null || "$BIN" --store "$WORK/import" -q import "$ROOT/$FILE" | tail -n 1)
rm -rf "$WORK/import"

PORT=$(free_port)
PORT_SLOW=$(free_port)
sed -e "s|@DIR@|$WORK|g" -e "s|@ROOT@|$ROOT|g" -e "s|@PORT@|$PORT|g" \
    -e "s|@PORT_SLOW@|$PORT_SLOW|g" -e "s|@WORKERS@|$(nproc)|g" "$ROOT_DIR/benches/compare-nginx.conf.in" >"$WORK/nginx.conf"
bg nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
wait_http "http://127.0.0.1:$PORT/$FILE"

coproc LINK { exec "$WAN" --upstream "127.0.0.1:$PORT" --rtt-ms "$RTT_MS" --conn-mb "$CONN_MB" --link-mb "$LINK_MB"; }
PIDS+=("$LINK_PID")
read -r -t 10 line <&"${LINK[0]}" || die "wan_link did not start"
WAN_ADDR=${line#listening on }
URL=http://$WAN_ADDR/$FILE
wait_http "$URL"
log "origin nginx :$PORT behind the WAN link $WAN_ADDR (RTT $RTT_MS ms, $CONN_MB MB/s per connection, $LINK_MB MB/s link)"

# A fetch into a fresh store; checks the BLAKE3 it prints.
fetch_with() { # binary fetch-args...
    local bin=$1 got
    shift
    got=$(timeout 900 "$bin" --store "$WORK/store" -q fetch "$@" "$URL" | tail -n 1)
    [ "$got" = "$WANT" ] || { echo "fetch printed $got, want $WANT" >&2; return 1; }
}
bc_fetch() { fetch_with "$BIN" "$@"; }
bc_fetch_b() { fetch_with "$BIN_B" "$@"; }
# One timed download: prints MB/s, checks the bytes.
timed() { # name command...
    local name=$1 t0 t1 got
    shift
    rm -rf "$WORK/dl"/* "$WORK/store"
    t0=$(now)
    if declare -F "$1" >/dev/null; then
        "$@" >/dev/null 2>"$WORK/err.log" || die "$name failed: $(tail -n 3 "$WORK/err.log")"
    else
        timeout 900 "$@" >/dev/null 2>"$WORK/err.log" || die "$name failed: $(tail -n 3 "$WORK/err.log")"
    fi
    t1=$(now)
    got=$WORK/dl/$FILE
    if [ -f "$got" ]; then
        [ "$(b3sum --no-names "$got" 2>/dev/null || echo "$WANT")" = "$WANT" ] || die "$name: wrong bytes"
    fi
    calc "round($SIZE / ($t1 - $t0) / 1e6, 1)"
}
# The link's ceiling: 16 equal ranges fetched at once by 16 curls into
# /dev/null (no disk, no hashing; equal shares end together).
ceiling() {
    local n=16 i a b pids=()
    for i in $(seq 0 $((n - 1))); do
        a=$((SIZE * i / n))
        b=$((SIZE * (i + 1) / n - 1))
        curl -sf -o /dev/null -r "$a-$b" "$URL" &
        pids+=("$!")
    done
    for i in "${pids[@]}"; do wait "$i" || return 1; done
}
VARIANTS=("fetch" "fetch -c4" "fetch -c16" "curl" "aria2c -x4" "aria2c -x16" "ceiling")
# Another build's fetch in the same rounds (BLOCKCACHE_B: an A/B of a change).
[ -z "$BIN_B" ] || VARIANTS+=("fetch B")
run_variant() {
    case $1 in
    # The store is where a fetch lands (as in compare.sh): no -o copy.
    fetch) timed "$1" bc_fetch ;;
    "fetch B") timed "$1" bc_fetch_b ;;
    "fetch -c"*) timed "$1" bc_fetch --connections "${1#fetch -c}" ;;
    curl) timed curl curl -sf -o "$WORK/dl/$FILE" "$URL" ;;
    ceiling) timed "$1" ceiling ;;
    "aria2c -x"*) timed "$1" aria2c -q -x "${1#aria2c -x}" -s "${1#aria2c -x}" -k 1M --file-allocation=none \
        --allow-overwrite=true -d "$WORK/dl" -o "$FILE" "$URL" ;;
    esac
}
declare -A RESULTS
[ "$FAR_ONLY" = 1 ] && VARIANTS=()
for round in $(seq "$RUNS"); do
    for v in "${VARIANTS[@]}"; do
        r=$(run_variant "$v")
        RESULTS[$v]="${RESULTS[$v]:-} $r"
        log "round $round: $v $r MB/s (load $(load1))"
    done
done

# Far-range demand: a fetch runs (4 s head start), another process reads
# the last 64 KiB through the store.
FAR=()
for round in $(seq "$RUNS"); do
    rm -rf "$WORK/store"
    bg "$BIN" --store "$WORK/store" -q fetch "$URL"
    FETCH_PID=$LAST_PID
    sleep 4
    t0=$(now)
    "$BIN" --store "$WORK/store" -q cat --range=-65536 "$URL" >"$WORK/tail.bin" 2>"$WORK/err.log" || die "cat: $(cat "$WORK/err.log")"
    t1=$(now)
    cmp -s "$WORK/tail.bin" <(tail -c 65536 "$ROOT/$FILE") || die "far read: wrong bytes"
    FAR+=("$(calc "round(($t1 - $t0) * 1000)")")
    stop "$FETCH_PID"
    log "round $round: far 64 KiB read ${FAR[-1]} ms"
done

LINK_CAP=$LINK_MB
echo
echo "WAN: RTT $RTT_MS ms, $CONN_MB MB/s per connection, link $LINK_MB MB/s; $SIZE_ARG; $RUNS rounds; $(nproc) cores"
printf '%-14s %10s %10s\n' variant "MB/s" "x link"
for v in "${VARIANTS[@]}"; do
    # shellcheck disable=SC2086
    m=$(median ${RESULTS[$v]})
    printf '%-14s %10s %10s\n' "$v" "$m" "$(calc "round($m / $LINK_CAP, 2)")"
done
far=$(median "${FAR[@]}")
bound=$(calc "round(2 * ($RTT_MS + 1048576 / ($CONN_MB * 1e6) * 1000))")
verdict() { [ "$(calc "int($1)")" = 1 ] && echo PASS || echo MISS; }
echo
if [ "$FAR_ONLY" = 0 ]; then
    # shellcheck disable=SC2086
    fetch=$(median ${RESULTS["fetch"]})
    # shellcheck disable=SC2086
    aria16=$(median ${RESULTS["aria2c -x16"]})
    echo "fetch (default --connections) >= 0.95 x link: $(verdict "$fetch >= 0.95 * $LINK_CAP") ($fetch MB/s)"
    echo "fetch >= aria2c -x16: $(verdict "$fetch >= $aria16") ($fetch vs $aria16 MB/s)"
fi
echo "far 64 KiB read <= 2 x (RTT + chunk time) = $bound ms: $(verdict "$far <= $bound") (median $far ms: ${FAR[*]})"
