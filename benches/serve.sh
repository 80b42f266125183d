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
#   many    MANY_CLIENTS clients (default 1000) streaming different ranges
#           for MANY_SECONDS (default 20): MANY_PARTIAL of them (default
#           20; a partial reader is served in turns of 5 chunks, its
#           demanded one and 4 read ahead, so 100 of them would wait
#           ~12 s for a turn) of a partial object that a fresh `serve` fills meanwhile
#           through benches/compare-pace.py at MANY_RATE bytes/s per origin
#           connection (default 3 MiB/s; 8 connections: 24 MiB/s, so a
#           1 GiB object stays partial for the run and the stop after
#           it; at 5 MiB/s it sometimes completed, and the round failed
#           removing it: a complete copy shares its data file, and its
#           lock, with the complete object the first serve reads),
#           the others of the complete object
#           (/blobs), each
#           client MANY_RANGE-byte ranges (default 4 MiB; MANY_RCVBUF sets
#           the clients' SO_RCVBUF, default 0: autotuned) from its own
#           offset on (benches/examples/many_readers.rs). Reports the serve
#           process's VmHWM / peak VmRSS (sampled every 100 ms) and per
#           group the per-client throughput min / median / max; targets
#           RSS <= 200 MiB, max/min <= 3 (issue 13). Not in the
#           interleaved rounds: once per round, after them. Needs
#           MANY_READERS (default target/release/examples/many_readers:
#           cargo build --release -p benches --example many_readers).
# Each of --runs rounds (default 3) runs every variant once, interleaved;
# medians and ratios are printed. --bin-b PATH adds a second endpoint
# binary, measured in the same rounds (an A/B of two builds). --perf DIR
# records `perf record -g` of each endpoint, and of nginx's workers,
# during one extra run of each row (after the rounds) and writes
# DIR/<row>-<variant>.perf and the top
# symbols (DIR/<row>-<variant>.top.txt); build with `cargo build --profile profiling
# -p cache-cli` and pass --bin target/profiling/blockcache for symbols.
#
# PERF_CALL_GRAPH (default fp) is perf's --call-graph: dwarf gives whole
# user-space stacks (the release build has no frame pointers).
# Env as compare.sh: BLOCKCACHE, COMPARE_DIR, WRK_DURATION (default 5),
# WRK_CONNECTIONS (16), WRK_THREADS (2), NGINX_WORKERS (cores), WRK_RANGE
# (the wrk rows' range size in bytes, default 65536).
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
MANY_CLIENTS=${MANY_CLIENTS:-1000}
MANY_SECONDS=${MANY_SECONDS:-20}
MANY_RATE=${MANY_RATE:-3145728}
MANY_PARTIAL=${MANY_PARTIAL:-20}
MANY_RCVBUF=${MANY_RCVBUF:-0}
MANY_RANGE=${MANY_RANGE:-4194304}
MANY_READERS=${MANY_READERS:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/examples/many_readers}
WRK_DURATION=${WRK_DURATION:-5}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
WRK_THREADS=${WRK_THREADS:-2}
WRK_RANGE=${WRK_RANGE:-65536}
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
    case $r in wrk | wrkm | stream | mirror | many) ;; *) die "unknown row $r" ;; esac
done
if has_row many; then
    [ -x "$MANY_READERS" ] || die "$MANY_READERS not found: cargo build --release -p benches --example many_readers"
    # a socket per client in this script's processes and in serve
    ulimit -n "$(ulimit -Hn)"
    [ "$(ulimit -n)" -ge $((MANY_CLIENTS * 2 + 512)) ] || die "ulimit -n $(ulimit -n) is too low for $MANY_CLIENTS clients"
fi
ROUND_ROWS=$(tr ',' '\n' <<<"$ROWS" | grep -vx many | paste -sd, -) || true
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
NGINX_PID=$LAST_PID
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
-- a random $WRK_RANGE-byte Range per request over a $SIZE-byte object
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
local span = $SIZE - $WRK_RANGE
request = function()
  local a = math.floor(math.random() * span)
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. a .. "-" .. (a + $WRK_RANGE - 1) })
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
TCK=$(getconf CLK_TCK)
# CPU seconds (user + system) a server process used so far; nginx: the
# master and its workers.
cpu_of() { # variant
    local pids
    if [ "$1" = nginx ]; then
        pids="$NGINX_PID $(ps -o pid= --ppid "$NGINX_PID" | tr '\n' ' ')"
    else
        pids=${EP_PID[$1]}
    fi
    # shellcheck disable=SC2086
    for p in $pids; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk -v t="$TCK" '{s += $1} END {print s / t}'
}

declare -A VAL CPU
LOADS=()
[ -z "$ROUND_ROWS" ] || log "$RUNS interleaved rounds of: $ROUND_ROWS (wrk: $WRK_THREADS threads, $WRK_CONNECTIONS connections, $WRK_DURATION s)"
for r in $(seq "$RUNS"); do
    [ -n "$ROUND_ROWS" ] || break
    LOADS+=("$(load1)")
    line=""
    for row in ${ROUND_ROWS//,/ }; do
        # mirror/wrkm's reference is the same nginx number as stream/wrk's
        for v in "${VARIANTS[@]}" nginx; do
            c0=$(cpu_of "$v")
            x=$(measure "$row" "$(url_of "$row" "$v")") || die "$row $v failed"
            c1=$(cpu_of "$v")
            VAL[$row.$v]="${VAL[$row.$v]:-} $x"
            # server CPU per request (wrk: us/request) or per MB (streams:
            # ms/GB): less sensitive to other load than the rates
            case $row in
            wrk | wrkm) c=$(calc "round(($c1 - $c0) * 1e6 / ($x * $WRK_DURATION), 1)") ;;
            *) c=$(calc "round(($c1 - $c0) * 1e3 / ($SIZE / 1e9), 1)") ;;
            esac
            CPU[$row.$v]="${CPU[$row.$v]:-} $c"
            line+=" $row.$v=$x (cpu $c)"
        done
    done
    log "  round $r:$line (load $(load1))"
done

# ---------------------------------------------------------------- many
# A fresh serve per run (its VmHWM is this run's), over the store with the
# complete object; the partial one is a second URL of the same bytes
# through the pacing proxy, removed after each run.
many_run() { # variant binary round
    local p pid out
    p=$(free_port)
    # connection errors (debug) to a log, summarised below
    bg env RUST_LOG=warn,cache_http::endpoint::server=debug "$2" --store "$STORE" -q serve \
        --listen "127.0.0.1:$p" --mirror "slow=$PACED/" --access-log off 2>"$WORK/many-serve-$1-$3.log"
    pid=$LAST_PID
    wait_http "http://127.0.0.1:$p/status"
    # start the partial object's fill (1 byte), then the clients
    curl -sS -o /dev/null --max-time 30 -r 0-0 "http://127.0.0.1:$p/m/slow/$FILE"
    out=$WORK/many-$1-$3.txt
    timeout $((MANY_SECONDS + 120)) "$MANY_READERS" --pid "$pid" --clients "$MANY_CLIENTS" \
        --seconds "$MANY_SECONDS" --range "$MANY_RANGE" --rcvbuf "$MANY_RCVBUF" \
        --target "complete=http://127.0.0.1:$p/blobs/$HASH:$SIZE" \
        --target "partial=http://127.0.0.1:$p/m/slow/$FILE:$SIZE@$MANY_PARTIAL" >"$out" 2>&1 ||
        { cat "$out" >&2; die "many_readers failed"; }
    grep -v -e '^RESULT' -e '^RSS' "$out" | sed 's/^/    /' >&2
    stop "$pid"
    grep -o -e 'WARN.*' -e 'error=.*' "$WORK/many-serve-$1-$3.log" | sed 's/[0-9]\{2,\}/N/g' | sort | uniq -c |
        sort -rn | head -5 | sed 's/^/    serve log: /' >&2 || true
    # A partial object that completed is no longer what the next round
    # measures (and shares its data file with the complete object, which
    # the other serves read: it could not be removed).
    if "$2" --store "$STORE" ls | grep -F "$PACED/$FILE" | grep -q complete; then
        die "the partial object completed during the run: lower MANY_RATE or MANY_SECONDS"
    fi
    # The killed serve's locks go with the last of its teardown (1000
    # sockets, the map): a few tries.
    local tries=0
    until timeout 60 "$2" --store "$STORE" -q rm "$PACED/$FILE" >/dev/null 2>"$WORK/rm.err"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 60 ]; then
            cat "$WORK/rm.err" >&2
            # Who still holds the object's files or maps its data (a map keeps
            # the data file's lock; the killed serve was reaped).
            local key
            key=$(grep -o 'object [0-9a-f]*' "$WORK/rm.err" | head -1 | cut -d' ' -f2)
            for proc in /proc/[0-9]*; do
                if { ls -l "$proc/fd"; cat "$proc/maps"; } 2>/dev/null | grep -q -- "$STORE/objects/${key:-none}"; then
                    echo "  holds $key: ${proc#/proc/} $(tr '\0' ' ' <"$proc/cmdline")" >&2
                fi
            done
            "$2" --store "$STORE" ls >&2 || true
            # /proc/locks names the pid that took each lock on the files.
            local f ino
            for f in "$STORE/objects/${key:-none}"/*; do
                ino=$(stat -c %i "$f" 2>/dev/null) || continue
                grep ":$ino " /proc/locks | sed "s|^|  lock on ${f##*/}: |" >&2 || true
            done
            die "could not remove the partial object"
        fi
        sleep 0.5
    done
    MANY_RSS[$1]="${MANY_RSS[$1]:-} $(awk '/^RSS/ {sub("peak=", "", $3); print $3}' "$out")"
    MANY_HWM[$1]="${MANY_HWM[$1]:-} $(awk '/^RSS/ {sub("hwm=", "", $6); print $6}' "$out")"
    MANY_ANON[$1]="${MANY_ANON[$1]:-} $(awk '/^RSS/ {sub("anon=", "", $4); print $4}' "$out")"
    many_results "$1" "$out" complete partial
}
many_results() { # variant output groups...: per-client rates of RESULT lines
    local v=$1 out=$2 g
    shift 2
    for g in "$@"; do
        MANY_RATIO[$v.$g]="${MANY_RATIO[$v.$g]:-} $(result_field "$out" "$g" ratio)"
        MANY_MIN[$v.$g]="${MANY_MIN[$v.$g]:-} $(result_field "$out" "$g" min)"
        MANY_MED[$v.$g]="${MANY_MED[$v.$g]:-} $(result_field "$out" "$g" median)"
    done
}
result_field() { # output group field
    awk -v g="$2" -v f="$3" '$1 == "RESULT" && $2 == g {for (i = 3; i <= NF; i++) if (index($i, f "=") == 1) {sub(f "=", "", $i); print $i}}' "$1"
}
# The control: the same clients against nginx serving the same file (all
# of them on it: nginx has no partial object). What max/min nginx gets is
# what the load generator and the kernel give any server.
many_nginx() { # round
    local out=$WORK/many-nginx-$1.txt
    timeout $((MANY_SECONDS + 120)) "$MANY_READERS" --pid "$NGINX_PID" --clients "$MANY_CLIENTS" \
        --seconds "$MANY_SECONDS" --range "$MANY_RANGE" --rcvbuf "$MANY_RCVBUF" \
        --target "complete=$URL:$SIZE" >"$out" 2>&1 ||
        { cat "$out" >&2; die "many_readers (nginx) failed"; }
    grep -v -e '^RESULT' -e '^RSS' "$out" | sed 's/^/    /' >&2
    many_results nginx "$out" complete
}
declare -A MANY_RSS MANY_HWM MANY_ANON MANY_RATIO MANY_MIN MANY_MED
if has_row many; then
    PORT_PACED=$(free_port)
    coproc PACE { exec python3 "$ROOT_DIR/benches/compare-pace.py" "$PORT_PACED" "$PORT" "$MANY_RATE"; }
    PIDS+=("$PACE_PID")
    read -r -t 10 ready <&"${PACE[0]}" || die "pacing proxy did not start"
    [ "$ready" = ready ] || die "pacing proxy: $ready"
    PACED=http://127.0.0.1:$PORT_PACED
    wait_http "$PACED/$FILE"
    log "many: $MANY_CLIENTS clients ($MANY_PARTIAL of the partial object), $MANY_SECONDS s, $MANY_RANGE-byte ranges; partial object paced to $MANY_RATE B/s per origin connection"
    for r in $(seq "$RUNS"); do
        for v in "${VARIANTS[@]}"; do
            log "  round $r, endpoint $v (load $(load1))"
            many_run "$v" "$([ "$v" = a ] && echo "$BIN" || echo "$BIN_B")" "$r"
        done
        log "  round $r, nginx, the same clients (load $(load1))"
        many_nginx "$r"
    done
fi

if [ -n "$PERF_DIR" ]; then
    mkdir -p "$PERF_DIR"
    for row in ${ROWS//,/ }; do
        for v in "${VARIANTS[@]}" nginx; do
            f=$PERF_DIR/$row-$v.perf
            if [ "$v" = nginx ]; then
                [ "$row" != wrkm ] || continue
                pids=$(ps -o pid= --ppid "$NGINX_PID" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
            else
                pids=${EP_PID[$v]}
            fi
            log "perf of $v during one $row run -> $f"
            perf record -q --call-graph "${PERF_CALL_GRAPH:-fp}" -F 999 -p "$pids" -o "$f" >/dev/null 2>&1 &
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
printf '%-40s | %-16s | %-16s | %-6s | %s\n' row endpoint nginx ratio "server CPU: endpoint / nginx (us per request; ms per GB)"
for row in ${ROUND_ROWS//,/ }; do
    unit="MB/s"
    case $row in wrk | wrkm) unit="req/s" ;; esac
    for v in "${VARIANTS[@]}"; do
        # shellcheck disable=SC2086
        e=$(median ${VAL[$row.$v]}) n=$(median ${VAL[$row.nginx]})
        label="$row (endpoint $v)"
        # shellcheck disable=SC2086
        ce=$(median ${CPU[$row.$v]}) cn=$(median ${CPU[$row.nginx]})
        printf '%-40s | %-16s | %-16s | %-6s | %s / %s\n' "$label" "$(calc "round($e)") $unit" "$(calc "round($n)") $unit" "$(calc "round($e / $n, 2)")x" "$ce" "$cn"
    done
done
if has_row many; then
    for v in "${VARIANTS[@]}"; do
        # One line per variant for scripts (compare.sh): medians.
        # shellcheck disable=SC2086
        echo "MANY $v rss=$(median ${MANY_RSS[$v]}) hwm=$(median ${MANY_HWM[$v]}) anon=$(median ${MANY_ANON[$v]})" \
            "complete_ratio=$(median ${MANY_RATIO[$v.complete]}) complete_min=$(median ${MANY_MIN[$v.complete]})" \
            "complete_median=$(median ${MANY_MED[$v.complete]}) partial_ratio=$(median ${MANY_RATIO[$v.partial]})" \
            "partial_min=$(median ${MANY_MIN[$v.partial]}) partial_median=$(median ${MANY_MED[$v.partial]})"
        # shellcheck disable=SC2086
        printf '%-40s | peak VmRSS %s MiB (VmHWM %s, RssAnon %s) | target <= 200 MiB\n' "many: $MANY_CLIENTS clients (endpoint $v)" \
            "$(median ${MANY_RSS[$v]})" "$(median ${MANY_HWM[$v]})" "$(median ${MANY_ANON[$v]})"
        for g in complete partial; do
            # shellcheck disable=SC2086
            printf '%-40s | per-client MB/s min %s median %s | max/min %s | target <= 3\n' "  $g object (endpoint $v)" \
                "$(median ${MANY_MIN[$v.$g]})" "$(median ${MANY_MED[$v.$g]})" "$(median ${MANY_RATIO[$v.$g]})"
        done
    done
    # shellcheck disable=SC2086
    echo "MANY nginx complete_ratio=$(median ${MANY_RATIO[nginx.complete]}) complete_min=$(median ${MANY_MIN[nginx.complete]}) complete_median=$(median ${MANY_MED[nginx.complete]})"
    # shellcheck disable=SC2086
    printf '%-40s | per-client MB/s min %s median %s | max/min %s | the same clients, all on it\n' "  nginx, the complete file" \
        "$(median ${MANY_MIN[nginx.complete]})" "$(median ${MANY_MED[nginx.complete]})" "$(median ${MANY_RATIO[nginx.complete]})"
fi
echo "per round:"
for k in $(printf '%s\n' "${!VAL[@]}" | sort); do echo "  $k:${VAL[$k]} (server CPU:${CPU[$k]})"; done
for k in $(printf '%s\n' "${!MANY_RSS[@]}" | sort); do
    echo "  many.$k: peak VmRSS${MANY_RSS[$k]} | VmHWM${MANY_HWM[$k]} | RssAnon${MANY_ANON[$k]}"
done
for k in $(printf '%s\n' "${!MANY_RATIO[@]}" | sort); do
    echo "  many.$k: max/min${MANY_RATIO[$k]} | min MB/s${MANY_MIN[$k]} | median MB/s${MANY_MED[$k]}"
done
