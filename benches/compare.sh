#!/usr/bin/env bash
# Compare blockcache with curl, aria2c and nginx on this machine, in one go.
#
#   benches/compare.sh [--size SIZE] [--runs N] [--bin PATH] [--dir DIR] [--all]
#
# One loopback nginx (benches/compare-nginx.conf.in) serves one generated
# file of random bytes (default 1 GiB) at full speed and, on a second port,
# with limit_rate 50m; benches/compare-pace.py paces a third route to
# 50 MiB/s per connection from the first byte (nginx's limit_rate lets the
# first MiBs of a response through unthrottled). Comparisons, each run --runs times
# (default 3) with the variants interleaved; medians are reported:
#   1. download to disk: blockcache fetch (fresh store) vs curl -o vs aria2c -x4 -s4
#   2. serving a complete object: blockcache serve vs nginx, one curl stream
#      (MB/s) and wrk with random 64 KiB Range requests (requests/s)
#   3. 8 concurrent blockcache fetch of one URL into one store: origin body
#      bytes (nginx access log) and wall time vs one fetch
#   4. latency of a 64 KiB read of the far end of an unfetched object with the
#      origin throttled: blockcache cat --range (cold, fresh store) and curl
#      through the endpoint's mirror route while the object downloads
#   5. 1000 clients streaming different ranges of a complete and a partial
#      (filling, paced origin) object from one serve: its peak RSS and the
#      per-client throughput max/min (benches/serve.sh --rows many, which
#      needs benches/examples/many_readers.rs built: cargo build --release
#      -p benches --example many_readers; skipped with a note without it)
# With --all, also the rows of issue 13's other targets, each from its own
# script with the same --size, --runs and binary (their headers say how
# they measure; each is skipped with a note when what it needs is not
# built):
#   6. followers (benches/followers.sh): 8 concurrent fetches vs 1, wall
#      time and the 7 followers' CPU against the leader's
#   7. cross-process wake-up (examples/wake_latency.rs): p99 commit → wake
#   8. WAN (benches/wan.sh, examples/wan_link.rs): fetch against the link
#      cap and against aria2c -x16, and the far read through the link
#   9. fill at the disk's speed (benches/disk_sync.sh): fetch + sync vs
#      cp + sync
# (item 6, the 45 GiB object, has no ratio target and needs ~30 GiB of
# disk: benches/big_object.sh on its own). --all adds ~15 min at 1 GiB
# and 3 rounds.
# Prints a table with ratios and PASS/MISS against the targets of issues 6
# and 13. benches/serve.sh runs the serving rows (2, 5) on their own.
#
# Env: BLOCKCACHE (binary; default $CARGO_TARGET_DIR or ./target, release),
# COMPARE_DIR (parent of the temp dir; default $TMPDIR or /tmp — keep it on
# the disk you want to measure: file, downloads and stores all go there),
# WRK_DURATION (seconds per wrk run, default 5), WRK_CONNECTIONS (default 16),
# WRK_THREADS (default 2), NGINX_WORKERS (default: number of cores). Needs
# nginx, curl, aria2c, wrk, python3 (and benches/compare-pace.py).
set -euo pipefail

SCRIPT=compare.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_ARG=1GiB
RUNS=3
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BLOCKCACHE:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/blockcache}
PARENT=${COMPARE_DIR:-${TMPDIR:-/tmp}}
WRK_DURATION=${WRK_DURATION:-5}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
WRK_THREADS=${WRK_THREADS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}
ALL=

while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --dir) PARENT=$2; shift 2 ;;
    --all) ALL=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done


for tool in nginx curl aria2c wrk python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx curl aria2 wrk python3)"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p cache-cli (or set BLOCKCACHE)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"

SIZE=$(to_bytes "$SIZE_ARG")
[ "$SIZE" -ge $((2 << 20)) ] || die "--size must be at least 2 MiB"

# ---------------------------------------------------------------- set-up

make_work_dir "$PARENT"
FILE=image.raw
ROOT=$WORK/origin
mkdir -p "$ROOT" "$WORK/dl"
log "work dir $WORK ($(df -h --output=source,fstype "$WORK" | tail -1 | tr -s ' '))"
generate_file "$ROOT/$FILE" "$SIZE"

PORT=$(free_port)
PORT_SLOW=$(free_port)
while [ "$PORT_SLOW" = "$PORT" ]; do PORT_SLOW=$(free_port); done
sed -e "s|@DIR@|$WORK|g" -e "s|@ROOT@|$ROOT|g" -e "s|@PORT@|$PORT|g" \
    -e "s|@PORT_SLOW@|$PORT_SLOW|g" -e "s|@WORKERS@|$NGINX_WORKERS|g" "$ROOT_DIR/benches/compare-nginx.conf.in" >"$WORK/nginx.conf"
bg nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
NGINX_PID=$LAST_PID
ORIGIN=http://127.0.0.1:$PORT
SLOW=http://127.0.0.1:$PORT_SLOW
URL=$ORIGIN/$FILE
wait_http "$URL"
wait_http "$SLOW/$FILE"
kill -0 "$NGINX_PID" || die "nginx did not start (see $WORK/nginx-error.log)"
log "nginx (pid $NGINX_PID, $NGINX_WORKERS workers) on $ORIGIN, limit_rate 50m copy on $SLOW"
# The same origin through a proxy that paces every connection to 50 MiB/s
# from its first byte (nginx's limit_rate lets the first MiBs of each
# response out unthrottled; see benches/compare-pace.py).
PORT_PACED=$(free_port)
coproc PACE { exec python3 "$ROOT_DIR/benches/compare-pace.py" "$PORT_PACED" "$PORT" 52428800; }
PIDS+=("$PACE_PID")
read -r -t 10 ready <&"${PACE[0]}" || die "pacing proxy did not start"
[ "$ready" = ready ] || die "pacing proxy: $ready"
PACED=http://127.0.0.1:$PORT_PACED
wait_http "$PACED/$FILE"

ACCESS=$WORK/access.log
# Origin body bytes logged after line $1 of the access log, on port $2,
# without the 1-byte probes (Range: bytes=0-0) a fetch starts with.
origin_bytes_since() {
    tail -n +"$(($1 + 1))" "$ACCESS" | awk -v p="$2" '$1 == p && $6 != "\"bytes=0-0\"" {s += $5} END {print s + 0}'
}
# Number of such probes after line $1 on port $2.
origin_probes_since() {
    tail -n +"$(($1 + 1))" "$ACCESS" | awk -v p="$2" '$1 == p && $6 == "\"bytes=0-0\"" {n++} END {print n + 0}'
}
log_lines() { wc -l <"$ACCESS"; }

# The expected BLAKE3, from an import into a scratch store (checks every
# fetch below).
HASH=$(timeout 300 "$BIN" --store "$WORK/import-store" -q import "$ROOT/$FILE" | tail -n 1)
[[ $HASH =~ ^[0-9a-f]{64}$ ]] || die "import did not print a BLAKE3: $HASH"
rm -rf "$WORK/import-store"
log "BLAKE3 $HASH"

bc_fetch() { # store url -> prints the hash
    timeout 600 "$BIN" --store "$1" -q fetch "$2" | tail -n 1
}
# The complete store served in comparison 2: fetched from the origin URL, so
# the mirror route /m/origin/$FILE finds it complete too.
SERVE_STORE=$WORK/serve-store
[ "$(bc_fetch "$SERVE_STORE" "$URL")" = "$HASH" ] || die "fetch for the serve store: wrong hash"
# Write back what set-up wrote (2 GiB: the file, the serve store) now, not
# during the first measured round.
sync

# ------------------------------------------------ 1. download to disk
# blockcache stores (and fdatasyncs) the object in its store; curl and aria2c
# write a plain file. All on the same disk; files removed between runs.
declare -a BC1 CURL1 ARIA1 BC1_BYTES BC8_WALL BC8_BYTES BC8_PROBES BC8_EACH BC1_WALL LOADS
log "1+3. downloads, $RUNS interleaved rounds"
for r in $(seq "$RUNS"); do
    LOADS+=("$(load1)")
    # blockcache, fresh store
    st=$WORK/store-1-$r
    l0=$(log_lines)
    t0=$(now)
    h=$(bc_fetch "$st" "$URL")
    t=$(calc "$(now) - $t0")
    [ "$h" = "$HASH" ] || die "blockcache fetch returned $h, expected $HASH"
    sleep 0.2 # let nginx flush its log line
    BC1_BYTES+=("$(origin_bytes_since "$l0" "$PORT")")
    BC1+=("$(calc "round($SIZE / 1e6 / $t, 1)")")
    BC1_WALL+=("$(calc "round($t, 3)")")
    drop_store "$st"
    sync

    # curl -o
    t0=$(now)
    timeout 600 curl -sS -o "$WORK/dl/curl.raw" "$URL"
    t=$(calc "$(now) - $t0")
    [ "$(stat -c %s "$WORK/dl/curl.raw")" -eq "$SIZE" ] || die "curl download incomplete"
    CURL1+=("$(calc "round($SIZE / 1e6 / $t, 1)")")
    rm -f "$WORK/dl/curl.raw"
    sync

    # aria2c -x4 -s4
    t0=$(now)
    timeout 600 aria2c -q -x4 -s4 --allow-overwrite=true --auto-file-renaming=false \
        -d "$WORK/dl" -o aria.raw "$URL"
    t=$(calc "$(now) - $t0")
    [ "$(stat -c %s "$WORK/dl/aria.raw")" -eq "$SIZE" ] || die "aria2c download incomplete"
    ARIA1+=("$(calc "round($SIZE / 1e6 / $t, 1)")")
    rm -f "$WORK/dl/aria.raw"
    sync

    # 3. eight concurrent fetches of one URL into one fresh store
    st=$WORK/store-8-$r
    l0=$(log_lines)
    fpids=()
    for i in $(seq 8); do
        (
            now >"$WORK/f8-$i.start"
            timeout 600 "$BIN" --store "$st" -q fetch "$URL" >"$WORK/f8-$i.out" 2>"$WORK/f8-$i.err"
            now >"$WORK/f8-$i.end"
        ) &
        fpids+=("$!")
    done
    fail=0
    for p in "${fpids[@]}"; do wait "$p" || fail=1; done
    [ $fail -eq 0 ] || die "a concurrent fetch failed: $(cat "$WORK"/f8-*.err)"
    # wall time: first start to last end (the processes' own span, without
    # the script's forking around them)
    t=$(cat "$WORK"/f8-*.start "$WORK"/f8-*.end | python3 -c '
import sys
v = [float(x) for x in sys.stdin.read().split()]
n = len(v) // 2
print(max(v[n:]) - min(v[:n]))')
    for i in $(seq 8); do
        [ "$(tail -n 1 "$WORK/f8-$i.out")" = "$HASH" ] || die "concurrent fetch $i: wrong hash"
    done
    BC8_EACH+=("$(for i in $(seq 8); do calc "round($(cat "$WORK/f8-$i.end") - $(cat "$WORK/f8-$i.start"), 2)"; done | sort -g | paste -sd/ -)")
    sleep 0.2
    BC8_BYTES+=("$(origin_bytes_since "$l0" "$PORT")")
    BC8_PROBES+=("$(origin_probes_since "$l0" "$PORT")")
    BC8_WALL+=("$(calc "round($t, 3)")")
    drop_store "$st"
    sync
    log "  round $r: blockcache ${BC1[-1]} MB/s, curl ${CURL1[-1]} MB/s, aria2c ${ARIA1[-1]} MB/s; 8 fetches ${BC8_WALL[-1]} s (1 fetch ${BC1_WALL[-1]} s), ${BC8_BYTES[-1]} origin bytes + ${BC8_PROBES[-1]} probes (load $(load1))"
done

# ------------------------------------------------ 2. serving a complete object
SPORT=$(free_port)
# Its access log goes to a file, as nginx's does (to stderr, a terminal
# would be a cost of its own).
bg "$BIN" --store "$SERVE_STORE" -q serve --listen "127.0.0.1:$SPORT" --mirror "origin=$ORIGIN/" \
    --access-log "$WORK/endpoint-access.log"
SERVE_PID=$LAST_PID
EP=http://127.0.0.1:$SPORT
wait_http "$EP/status"
BLOB=$EP/blobs/$HASH
# sanity: same bytes for one range from both
a=$((SIZE / 3))
cmp <(curl -s -r "$a-$((a + 65535))" "$BLOB") <(curl -s -r "$a-$((a + 65535))" "$URL") ||
    die "endpoint and nginx disagree on a range"

cat >"$WORK/range.lua" <<EOF
-- random 64 KiB Range per request over a $SIZE-byte object
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
local span = $SIZE - 65536
request = function()
  local a = math.floor(math.random() * span)
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. a .. "-" .. (a + 65535) })
end
EOF

stream_mbs() { # url -> MB/s of one curl stream to /dev/null
    timeout 600 curl -sS -o /dev/null -w '%{size_download} %{time_total}\n' "$1" |
        awk -v n="$SIZE" '$1 != n {exit 1} {printf "%.1f\n", $1 / 1e6 / $2}'
}
wrk_rps() { # url -> requests/s (fails on non-2xx responses or socket errors)
    local out
    out=$(timeout $((WRK_DURATION + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" \
        -d"${WRK_DURATION}s" -s "$WORK/range.lua" "$1")
    if grep -q -e 'Non-2xx' -e 'Socket errors' <<<"$out"; then
        echo "$out" >&2
        die "wrk saw errors on $1"
    fi
    awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}

declare -a EPS NGS EPW NGW EPM
log "2. serving, $RUNS interleaved rounds (wrk: ${WRK_THREADS} threads, ${WRK_CONNECTIONS} connections, ${WRK_DURATION} s)"
for r in $(seq "$RUNS"); do
    LOADS+=("$(load1)")
    EPS+=("$(stream_mbs "$BLOB")") || die "endpoint stream failed"
    NGS+=("$(stream_mbs "$URL")") || die "nginx stream failed"
    EPM+=("$(stream_mbs "$EP/m/origin/$FILE")") || die "endpoint mirror stream failed"
    EPW+=("$(wrk_rps "$BLOB")")
    NGW+=("$(wrk_rps "$URL")")
    log "  round $r: stream endpoint ${EPS[-1]} (/m/ ${EPM[-1]}) / nginx ${NGS[-1]} MB/s; 64 KiB ranges endpoint ${EPW[-1]} / nginx ${NGW[-1]} req/s (load $(load1))"
done
stop "$SERVE_PID"

# ------------------------------------------------ 4. far read, origin throttled
# Two throttled origins: nginx limit_rate 50m (port $PORT_SLOW) and the
# pacing proxy (50 MiB/s per connection from the first byte). For each:
# a) blockcache cat --range of the last 64 KiB, fresh store, nothing running:
#    process start + store + origin probe + the demanded chunk.
# b) curl of the last 64 KiB through the endpoint's mirror route while the
#    object downloads (a first 1-byte read at offset 0 started the download;
#    the far read is issued 0.5 s later).
A=$((SIZE - 65536))
B=$((SIZE - 1))
declare -a CAT4_nginx EP4_nginx DONE4_nginx CAT4_paced EP4_paced DONE4_paced
far_read_round() { # origin-base-url tag
    local base=$1 tag=$2 st t0 t n p spid ms done_pct
    local -n cat_ms="CAT4_$tag" ep_ms="EP4_$tag" done_at="DONE4_$tag"
    st=$WORK/store-4a-$tag
    t0=$(now)
    n=$(timeout 120 "$BIN" --store "$st" -q cat "$base/$FILE" --range "$A-$B" | wc -c)
    t=$(calc "$(now) - $t0")
    [ "$n" -eq 65536 ] || die "cat --range returned $n bytes"
    cat_ms+=("$(calc "round($t * 1000, 1)")")
    drop_store "$st" # a partial object; nothing keeps downloading it

    st=$WORK/store-4b-$tag
    p=$(free_port)
    bg "$BIN" --store "$st" -q serve --listen "127.0.0.1:$p" --mirror "slow=$base/" \
        --access-log "$WORK/endpoint-4-$tag.log"
    spid=$LAST_PID
    wait_http "http://127.0.0.1:$p/status"
    curl -sS -o /dev/null --max-time 30 -r 0-0 "http://127.0.0.1:$p/m/slow/$FILE"
    sleep 0.5
    done_pct=$(curl -s --max-time 5 "http://127.0.0.1:$p/status" | python3 -c '
import json, sys
try:
    objs = json.load(sys.stdin).get("objects", [])
    print(",".join("%.1f%%" % (100.0 * o.get("bytes_done", 0) / max(o.get("length") or 1, 1)) for o in objs) or "?")
except Exception:
    print("?")')
    ms=$(timeout 60 curl -sS -o /dev/null -w '%{size_download} %{time_total}\n' -r "$A-$B" \
        "http://127.0.0.1:$p/m/slow/$FILE" | awk '$1 != 65536 {exit 1} {printf "%.1f\n", $2 * 1000}') ||
        die "far read through the mirror failed"
    ep_ms+=("$ms")
    done_at+=("$done_pct")
    stop "$spid"
    drop_store "$st"
}
log "4. far 64 KiB read with the origin at 50 MiB/s per connection, $RUNS rounds"
for r in $(seq "$RUNS"); do
    LOADS+=("$(load1)")
    far_read_round "$SLOW" nginx
    far_read_round "$PACED" paced
    log "  round $r: nginx limit_rate: cat ${CAT4_nginx[-1]} ms, mirror ${EP4_nginx[-1]} ms (${DONE4_nginx[-1]} done); paced: cat ${CAT4_paced[-1]} ms, mirror ${EP4_paced[-1]} ms (${DONE4_paced[-1]} done) (load $(load1))"
done

# ------------------------------------------------ 5. many readers
# benches/serve.sh --rows many: its own nginx, file and serve (a fresh
# process, so its VmHWM is this comparison's), $RUNS rounds.
MANY_LINE=
MANY_BIN=${MANY_READERS:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/examples/many_readers}
if [ -x "$MANY_BIN" ]; then
    log "5. many readers (benches/serve.sh --rows many, $RUNS rounds)"
    LOADS+=("$(load1)")
    MANY_OUT=$WORK/many.txt
    MANY_READERS=$MANY_BIN COMPARE_DIR=$WORK timeout 1800 "$ROOT_DIR/benches/serve.sh" --rows many \
        --runs "$RUNS" --size "$SIZE" --bin "$BIN" >"$MANY_OUT" 2>"$WORK/many.log" ||
        { cat "$WORK/many.log" >&2; die "benches/serve.sh --rows many failed"; }
    MANY_LINE=$(grep '^MANY a ' "$MANY_OUT")
    MANY_NGINX=$(grep '^MANY nginx ' "$MANY_OUT")
else
    log "5. skipped: $MANY_BIN not built (cargo build --release -p benches --example many_readers)"
fi
many_val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"${2:-$MANY_LINE}"; }

# ------------------------------------------------ 6-9. --all: the other scripts
# Each writes its summary to $WORK/<name>.txt (its log to <name>.log); a
# script that fails stops this one, as a failing comparison above does.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
sub_script() { # name command...
    local name=$1
    shift
    log "$name ($RUNS rounds)"
    LOADS+=("$(load1)")
    COMPARE_DIR=$WORK BLOCKCACHE=$BIN timeout 3600 "$@" >"$WORK/$name.txt" 2>"$WORK/$name.log" ||
        { tail -n 20 "$WORK/$name.log" >&2; die "$name failed (log above)"; }
}
FOLLOW_LINE='' WAKE_LINE='' WAN_OUT='' DISK_LINE=''
if [ -n "$ALL" ]; then
    sub_script followers "$ROOT_DIR/benches/followers.sh" --size "$SIZE" --runs "$RUNS"
    FOLLOW_LINE=$(grep '^8 vs 1 fetch:' "$WORK/followers.txt")
    WAKE_BIN=$TARGET_DIR/release/examples/wake_latency
    if [ -x "$WAKE_BIN" ]; then
        sub_script wake "$WAKE_BIN" 2048 "$RUNS"
        WAKE_LINE=$(grep '^commit_to_wake_cross_process/wake, a reader waits' "$WORK/wake.txt")
    else
        log "7. skipped: $WAKE_BIN not built (cargo build --release -p benches --example wake_latency)"
    fi
    if [ -x "$TARGET_DIR/release/examples/wan_link" ]; then
        sub_script wan "$ROOT_DIR/benches/wan.sh" --size "$SIZE" --runs "$RUNS"
        WAN_OUT=$WORK/wan.txt
    else
        log "8. skipped: wan_link not built (cargo build --release -p benches --example wan_link)"
    fi
    sub_script disk_sync "$ROOT_DIR/benches/disk_sync.sh" --size "$SIZE" --runs "$RUNS" --bin "$BIN"
    DISK_LINE=$(grep '^fetch+sync' "$WORK/disk_sync.txt")
fi
# The number after `label` in a summary line (`wall 1.04x` -> 1.04).
after() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" <<<"$2" | head -n 1; }
wan_mbs() { awk -v v="$1" '{ n = NF - 2; name = $1; for (i = 2; i <= n; i++) name = name " " $i; if (name == v) print $(NF - 1) }' "$WAN_OUT"; }

# ------------------------------------------------ report
m() { median "$@"; }
bc1=$(m "${BC1[@]}") curl1=$(m "${CURL1[@]}") aria1=$(m "${ARIA1[@]}")
eps=$(m "${EPS[@]}") ngs=$(m "${NGS[@]}") epw=$(m "${EPW[@]}") ngw=$(m "${NGW[@]}")
epm=$(m "${EPM[@]}")
bc1w=$(m "${BC1_WALL[@]}") bc8w=$(m "${BC8_WALL[@]}")
bc8b=$(m "${BC8_BYTES[@]}") bc1b=$(m "${BC1_BYTES[@]}")
cat4n=$(m "${CAT4_nginx[@]}") ep4n=$(m "${EP4_nginx[@]}")
cat4p=$(m "${CAT4_paced[@]}") ep4p=$(m "${EP4_paced[@]}")
# RTT: a HEAD to the throttled origin (median of 5)
rtts=()
for _ in 1 2 3 4 5; do rtts+=("$(curl -s -o /dev/null -I -w '%{time_total}' "$SLOW/$FILE")"); done
rtt_ms=$(calc "$(m "${rtts[@]}") * 1000")
lim_ms=$(calc "2 * ($rtt_ms + 1048576 / (50 * 1048576) * 1000)")

verdict() { # value op target
    if python3 -c "import sys; inf = float('inf'); sys.exit(0 if $1 $2 $3 else 1)"; then echo PASS; else echo MISS; fi
}
r() { calc "round($1, ${2:-2})"; }

echo
echo "blockcache compare: $SIZE-byte file, $RUNS rounds (medians), $(nproc) cores, load during runs: $(printf '%s ' "${LOADS[@]}")"
echo "binary: $BIN"
printf '%-52s | %-28s | %-28s | %-7s | %-8s | %s\n' comparison blockcache reference ratio target verdict
printf '%s\n' "-----------------------------------------------------+------------------------------+------------------------------+---------+----------+--------"
row() { printf '%-52s | %-28s | %-28s | %-7s | %-8s | %s\n' "$@"; }
row "1. download to disk: fetch vs curl -o" "$(r "$bc1" 0) MB/s" "curl $(r "$curl1" 0) MB/s" "$(r "$bc1 / $curl1")x" ">=1.05x" "$(verdict "$bc1 / $curl1" '>=' 1.05)"
row "1. download to disk: fetch vs aria2c -x4 -s4" "$(r "$bc1" 0) MB/s" "aria2c $(r "$aria1" 0) MB/s" "$(r "$bc1 / $aria1")x" "-" "-"
row "2. serve, one curl stream (/blobs)" "$(r "$eps" 0) MB/s" "nginx $(r "$ngs" 0) MB/s" "$(r "$eps / $ngs")x" ">=0.9x" "$(verdict "$eps / $ngs" '>=' 0.9)"
row "2. serve, wrk random 64 KiB ranges (/blobs)" "$(r "$epw" 0) req/s" "nginx $(r "$ngw" 0) req/s" "$(r "$epw / $ngw")x" ">=1.0x" "$(verdict "$epw / $ngw" '>=' 1.0)"
row "2. serve, one curl stream (/m/ mirror)" "$(r "$epm" 0) MB/s" "nginx $(r "$ngs" 0) MB/s" "$(r "$epm / $ngs")x" ">=0.9x" "$(verdict "$epm / $ngs" '>=' 0.9)"
row "3. 8 concurrent fetches: origin bytes / size" "$bc8b B (+$(m "${BC8_PROBES[@]}") 1-B probes)" "size $SIZE B" "$(r "$bc8b / $SIZE" 3)x" "1.00x" "$(verdict "$bc8b" '==' "$SIZE")"
row "3. 8 concurrent fetches: wall time vs 1 fetch" "$(r "$bc8w") s" "1 fetch $(r "$bc1w") s" "$(r "$bc8w / $bc1w")x" "-" "-"
row "   (1 fetch: origin bytes / size)" "$bc1b B" "size $SIZE B" "$(r "$bc1b / $SIZE" 3)x" "1.00x" "$(verdict "$bc1b" '==' "$SIZE")"
row4() { # label value
    row "$1" "$(r "$2" 1) ms" "bound $(r "$lim_ms" 1) ms" "$(r "$2 / ($lim_ms / 2)")x" "<=2x" "$(verdict "$2" '<=' "$lim_ms")"
}
row4 "4. far 64 KiB, nginx limit_rate 50m: cat (cold)" "$cat4n"
row4 "4. far 64 KiB, nginx limit_rate 50m: mirror" "$ep4n"
row4 "4. far 64 KiB, paced 50 MiB/s: cat (cold)" "$cat4p"
row4 "4. far 64 KiB, paced 50 MiB/s: mirror" "$ep4p"
if [ -n "$MANY_LINE" ]; then
    row "5. 1000 clients: serve peak VmRSS" "$(many_val rss) MiB (VmHWM $(many_val hwm))" "target 200 MiB" "$(r "$(many_val hwm) / 200")x" "<=1x" "$(verdict "$(many_val hwm)" '<=' 200)"
    for g in complete partial; do
        row "5. 1000 clients: $g object, max/min per client" "min $(many_val ${g}_min) MB/s, median $(many_val ${g}_median)" "-" "$(many_val ${g}_ratio)x" "<=3x" "$(verdict "$(many_val ${g}_ratio)" '<=' 3)"
    done
    # The control: nginx with the same clients (what the load generator
    # and the kernel give any server).
    row "5. 1000 clients: nginx, same clients, max/min" "min $(many_val complete_min "$MANY_NGINX") MB/s, median $(many_val complete_median "$MANY_NGINX")" "-" "$(many_val complete_ratio "$MANY_NGINX")x" "<=3x" "$(verdict "$(many_val complete_ratio "$MANY_NGINX")" '<=' 3)"
fi
if [ -n "$FOLLOW_LINE" ]; then
    fw=$(after "wall" "$FOLLOW_LINE") fc=$(after "followers CPU" "$FOLLOW_LINE")
    row "6. followers: 8 fetches vs 1, wall time" "$(r "$fw")x" "1 fetch" "$(r "$fw")x" "<=1.15x" "$(verdict "$fw" '<=' 1.15)"
    row "6. followers: 7 followers' CPU / leader's" "$fc %" "leader" "$(r "$fc / 100")x" "<=0.10x" "$(verdict "$fc" '<=' 10)"
fi
if [ -n "$WAKE_LINE" ]; then
    wr=$(sed -n 's/.*target = \([0-9.]*\).*/\1/p' <<<"$WAKE_LINE")
    row "7. cross-process wake-up, p99 (a reader waits)" "p99 $(sed -n 's/.*p99 \([^,]*\),.*/\1/p' <<<"$WAKE_LINE")" "target 10 ms" "$(r "$wr")x" "<=1x" "$(verdict "$wr" '<=' 1)"
fi
if [ -n "$WAN_OUT" ]; then
    wf=$(wan_mbs fetch) wa=$(wan_mbs "aria2c -x16") wc=$(wan_mbs ceiling)
    wlink=$(sed -n 's/.* link \([0-9.]*\) MB\/s;.*/\1/p' "$WAN_OUT")
    row "8. WAN: fetch vs the link cap" "$wf MB/s" "link $wlink MB/s" "$(r "$wf / $wlink")x" ">=0.95x" "$(verdict "$wf / $wlink" '>=' 0.95)"
    row "8. WAN: fetch vs aria2c -x16" "$wf MB/s" "aria2c $wa MB/s" "$(r "$wf / $wa")x" ">=1.0x" "$(verdict "$wf / $wa" '>=' 1.0)"
    row "   (WAN: 16 single requests, the link's ceiling)" "$wc MB/s" "link $wlink MB/s" "$(r "$wc / $wlink")x" "-" "-"
    wfar=$(sed -n 's/^far 64 KiB read .* = \([0-9]*\) ms: .*(median \([0-9.]*\) ms.*/\2 \1/p' "$WAN_OUT")
    read -r far_ms far_bound <<<"$wfar"
    row "8. WAN: far 64 KiB read during a fetch" "$far_ms ms" "bound $far_bound ms" "$(r "$far_ms / ($far_bound / 2)")x" "<=2x" "$(verdict "$far_ms" '<=' "$far_bound")"
fi
if [ -n "$DISK_LINE" ]; then
    dr=$(after "ratio" "$DISK_LINE")
    row "9. fetch + sync vs cp + sync" "$(sed -n 's/^fetch+sync \([0-9]*\) MB.*/\1/p' <<<"$DISK_LINE") MB/s" "cp $(after "cp+sync" "$DISK_LINE") MB/s" "$(r "$dr")x" ">=0.8x" "$(verdict "$dr" '>=' 0.8)"
fi
echo
echo "4: ratio = latency / (RTT $(r "$rtt_ms" 2) ms + 1 MiB at 50 MiB/s = 20 ms); mirror object done before the far read: nginx ${DONE4_nginx[*]}, paced ${DONE4_paced[*]}"
echo "per-round values:"
echo "  fetch MB/s: ${BC1[*]} | curl: ${CURL1[*]} | aria2c: ${ARIA1[*]}"
echo "  8 fetches s: ${BC8_WALL[*]} (per process: ${BC8_EACH[*]}; bytes ${BC8_BYTES[*]}) | 1 fetch s: ${BC1_WALL[*]} (bytes ${BC1_BYTES[*]})"
echo "  stream endpoint MB/s: ${EPS[*]} | /m/: ${EPM[*]} | nginx: ${NGS[*]}"
echo "  wrk endpoint req/s: ${EPW[*]} | nginx: ${NGW[*]}"
echo "  far read, nginx limit_rate: cat ms ${CAT4_nginx[*]} | mirror ms ${EP4_nginx[*]}"
echo "  far read, paced: cat ms ${CAT4_paced[*]} | mirror ms ${EP4_paced[*]}"
[ -z "$MANY_LINE" ] || sed -n '/^per round:/,$p' "$MANY_OUT" | grep 'many\.' | sed 's/^/ /' 
