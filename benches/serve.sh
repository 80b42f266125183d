#!/usr/bin/env bash
# The serving rows of benches/compare.sh on their own, quick to iterate on.
#
#   benches/serve.sh [--size SIZE] [--runs N] [--bin PATH] [--bin-b PATH]
#                    [--rows LIST] [--perf DIR] [--dir DIR]
#
# One loopback nginx (benches/compare-nginx.conf.in, one worker per core,
# sendfile on) serves a generated file of random bytes (default 1 GiB);
# `blockcache serve` serves the same bytes from a store filled by a fetch
# of the nginx URL (a complete object). Rows (--rows, comma-separated,
# default wrk,stream,mirror):
#   wrk     wrk, WRK_THREADS threads, WRK_CONNECTIONS connections, a random
#           64 KiB Range per request: /blobs/<blake3> vs nginx (requests/s)
#   wrkm    the same against the /m/<mirror>/<file> route
#   stream  one curl stream of the whole object, /blobs vs nginx (MB/s)
#   mirror  one curl stream through the /m/ route vs nginx (MB/s)
# Each of --runs rounds (default 3) runs every variant once, interleaved;
# medians and ratios are printed. --bin-b PATH adds a second endpoint
# binary, measured in the same rounds (an A/B of two builds). --perf DIR
# records `perf record -g` of the endpoint during one extra wrk run of
# each row (after the rounds) and writes DIR/<row>.perf and the top
# symbols (DIR/<row>.top.txt); build with `cargo build --profile profiling
# -p cache-cli` and pass --bin target/profiling/blockcache for symbols.
#
# Env as compare.sh: BLOCKCACHE, COMPARE_DIR, WRK_DURATION (default 5),
# WRK_CONNECTIONS (16), WRK_THREADS (2), NGINX_WORKERS (cores).
set -euo pipefail

SCRIPT=serve.sh
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE_ARG=1GiB
RUNS=3
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BLOCKCACHE:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/blockcache}
BIN_B=
PARENT=${COMPARE_DIR:-${TMPDIR:-/tmp}}
ROWS=wrk,stream,mirror
PERF_DIR=
WRK_DURATION=${WRK_DURATION:-5}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
WRK_THREADS=${WRK_THREADS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)}

while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --bin-b) BIN_B=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --perf) PERF_DIR=$2; shift 2 ;;
    --dir) PARENT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "serve.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

for tool in nginx curl wrk python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y nginx curl wrk python3)"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p cache-cli (or set BLOCKCACHE)"
[ -z "$BIN_B" ] || [ -x "$BIN_B" ] || die "$BIN_B not found"
[ -z "$PERF_DIR" ] || command -v perf >/dev/null || die "perf not found"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
has_row() { [[ ,$ROWS, == *,$1,* ]]; }
for r in ${ROWS//,/ }; do
    case $r in wrk | wrkm | stream | mirror) ;; *) die "unknown row $r" ;; esac
done
SIZE=$(to_bytes "$SIZE_ARG")
[ "$SIZE" -ge $((2 << 20)) ] || die "--size must be at least 2 MiB"

make_work_dir "$PARENT"
FILE=image.raw
ROOT=$WORK/origin
mkdir -p "$ROOT"
generate_file "$ROOT/$FILE" "$SIZE"
PORT=$(free_port)
PORT_SLOW=$(free_port)
sed -e "s|@DIR@|$WORK|g" -e "s|@ROOT@|$ROOT|g" -e "s|@PORT@|$PORT|g" \
    -e "s|@PORT_SLOW@|$PORT_SLOW|g" -e "s|@WORKERS@|$NGINX_WORKERS|g" \
    "$ROOT_DIR/benches/compare-nginx.conf.in" >"$WORK/nginx.conf"
bg nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
ORIGIN=http://127.0.0.1:$PORT
URL=$ORIGIN/$FILE
wait_http "$URL"
log "nginx ($NGINX_WORKERS workers) on $ORIGIN"

STORE=$WORK/store
HASH=$(timeout 600 "$BIN" --store "$STORE" -q fetch "$URL" | tail -n 1)
[[ $HASH =~ ^[0-9a-f]{64}$ ]] || die "fetch did not print a BLAKE3: $HASH"
sync

# Endpoints: A (and B), each on its own port, over the same store.
declare -A EP
start_ep() { # name binary
    local p
    p=$(free_port)
    # Both servers write an access log line per request to a file.
    bg "$2" --store "$STORE" -q serve --listen "127.0.0.1:$p" --mirror "origin=$ORIGIN/" \
        --access-log "$WORK/access-$1.log"
    EP[$1]=http://127.0.0.1:$p
    EP_PID[$1]=$LAST_PID
    wait_http "${EP[$1]}/status"
}
declare -A EP_PID
start_ep a "$BIN"
VARIANTS=(a)
if [ -n "$BIN_B" ]; then
    start_ep b "$BIN_B"
    VARIANTS+=(b)
fi
a=$((SIZE / 3))
for v in "${VARIANTS[@]}"; do
    cmp <(curl -s -r "$a-$((a + 65535))" "${EP[$v]}/blobs/$HASH") <(curl -s -r "$a-$((a + 65535))" "$URL") ||
        die "endpoint $v and nginx disagree on a range"
    cmp <(curl -s -r "$a-$((a + 65535))" "${EP[$v]}/m/origin/$FILE") <(curl -s -r "$a-$((a + 65535))" "$URL") ||
        die "endpoint $v (mirror route) and nginx disagree on a range"
done

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
url_of() { # row variant -> URL
    case $2 in
    nginx) echo "$URL" ;;
    *) case $1 in wrkm | mirror) echo "${EP[$2]}/m/origin/$FILE" ;; *) echo "${EP[$2]}/blobs/$HASH" ;; esac ;;
    esac
}
measure() { # row url
    case $1 in wrk | wrkm) wrk_rps "$2" ;; *) stream_mbs "$2" ;; esac
}

declare -A VAL
LOADS=()
log "$RUNS interleaved rounds of: $ROWS (wrk: $WRK_THREADS threads, $WRK_CONNECTIONS connections, $WRK_DURATION s)"
for r in $(seq "$RUNS"); do
    LOADS+=("$(load1)")
    line=""
    for row in ${ROWS//,/ }; do
        # mirror/wrkm's reference is the same nginx number as stream/wrk's
        for v in "${VARIANTS[@]}" nginx; do
            x=$(measure "$row" "$(url_of "$row" "$v")") || die "$row $v failed"
            VAL[$row.$v]="${VAL[$row.$v]:-} $x"
            line+=" $row.$v=$x"
        done
    done
    log "  round $r:$line (load $(load1))"
done

if [ -n "$PERF_DIR" ]; then
    mkdir -p "$PERF_DIR"
    for row in ${ROWS//,/ }; do
        for v in "${VARIANTS[@]}"; do
            f=$PERF_DIR/$row-$v.perf
            log "perf of endpoint $v during one $row run -> $f"
            perf record -q -g -F 999 -p "${EP_PID[$v]}" -o "$f" >/dev/null 2>&1 &
            ppid=$!
            sleep 0.5
            x=$(measure "$row" "$(url_of "$row" "$v")")
            kill -INT "$ppid" 2>/dev/null || true
            wait "$ppid" 2>/dev/null || true
            perf report -i "$f" --no-children --stdio --percent-limit 0.7 -g none \
                --sort symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$PERF_DIR/$row-$v.top.txt" || true
            perf report -i "$f" --children --stdio --percent-limit 2 -g none \
                --sort symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$PERF_DIR/$row-$v.children.txt" || true
            log "  ($x during perf) top symbols: $PERF_DIR/$row-$v.top.txt"
        done
    done
fi

echo
echo "blockcache serve.sh: $SIZE-byte object, $RUNS rounds (medians), $(nproc) cores, load at round starts: ${LOADS[*]}"
echo "endpoint a: $BIN${BIN_B:+; endpoint b: $BIN_B}"
printf '%-40s | %-16s | %-16s | %s\n' row endpoint nginx ratio
for row in ${ROWS//,/ }; do
    unit="MB/s"
    case $row in wrk | wrkm) unit="req/s" ;; esac
    for v in "${VARIANTS[@]}"; do
        # shellcheck disable=SC2086
        e=$(median ${VAL[$row.$v]}) n=$(median ${VAL[$row.nginx]})
        label="$row (endpoint $v)"
        printf '%-40s | %-16s | %-16s | %sx\n' "$label" "$(calc "round($e)") $unit" "$(calc "round($n)") $unit" "$(calc "round($e / $n, 2)")"
    done
done
echo "per round:"
for k in $(printf '%s\n' "${!VAL[@]}" | sort); do echo "  $k:${VAL[$k]}"; done
