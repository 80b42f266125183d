#!/usr/bin/env bash
# Cost of the status page's event stream on the server.
#
#   benches/sse_clients.sh [CLIENTS] [SECONDS]     # default 100 clients, 10 s
#
# A loopback nginx (limit_rate 1m per connection) serves a 256 MiB file;
# `blockcache serve --mirror img=...` fills it (started by a one-byte range
# read); CLIENTS `curl -N /events` clients stay connected. Prints the serve
# process's RSS and CPU (utime+stime over SECONDS) with and without the
# clients, idle (one complete object: nothing changes) and during the fill
# (a delta per tick with commits), and, for one client during the fill,
# how many completed chunks its deltas carried and their spacing. Needs nginx,
# curl, python3. BLOCKCACHE: the binary (default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-100}
SECONDS_=${2:-10}
BIN=${BLOCKCACHE:-${CARGO_TARGET_DIR:-target}/release/blockcache}
[ -x "$BIN" ] || cargo build --release -p cache-cli
T=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$T/nginx.pid" ] && kill "$(cat "$T/nginx.pid")" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
mkdir -p "$T/root" "$T/logs"
head -c $((256 << 20)) /dev/urandom > "$T/root/big.img"
head -c $((8 << 20)) /dev/urandom > "$T/root/small.img"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$T/nginx.conf" <<CONF
daemon on; pid $T/nginx.pid; error_log $T/logs/error.log; worker_processes 1;
events { worker_connections 256; }
http { access_log off; client_body_temp_path $T; proxy_temp_path $T; fastcgi_temp_path $T; uwsgi_temp_path $T; scgi_temp_path $T;
  server { listen 127.0.0.1:$PORT; root $T/root; limit_rate 1m; } }
CONF
/usr/sbin/nginx -c "$T/nginx.conf" -p "$T"
"$BIN" --store "$T/store" -q serve --listen 127.0.0.1:0 --mirror "img=http://127.0.0.1:$PORT/" > "$T/serve.out" &
SERVE=$!; pids+=("$SERVE")
for _ in $(seq 100); do grep -q listening "$T/serve.out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n 's|listening on http://\(.*\)/|\1|p' "$T/serve.out")
TCK=$(getconf CLK_TCK)
rss() { awk '/VmRSS/ {print $2/1024 " MiB"}' "/proc/$SERVE/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$SERVE/stat"; }
cpu_over() { local a b; a=$(ticks); sleep "$SECONDS_"; b=$(ticks); python3 -c "print(f'{($b-$a)/($TCK*$SECONDS_)*100:.2f} %')"; }

curl -s -o /dev/null "http://$ADDR/m/img/small.img"   # one complete object
echo "serve, no clients, idle:       RSS $(rss), CPU $(cpu_over)"
cpids=()
for _ in $(seq "$CLIENTS"); do curl -sN "http://$ADDR/events" > /dev/null & cpids+=($!); done
pids+=("${cpids[@]}")
sleep 2
echo "$CLIENTS clients, idle:           RSS $(rss), CPU $(cpu_over)"
for p in "${cpids[@]}"; do kill "$p" 2>/dev/null || true; done
sleep 1
curl -s -o /dev/null -r 0-0 "http://$ADDR/m/img/big.img"  # starts the fill
echo "no clients, during the fill:   RSS $(rss), CPU $(cpu_over)"
for _ in $(seq "$CLIENTS"); do curl -sN "http://$ADDR/events" > /dev/null & pids+=($!); done
sleep 2
python3 - "$ADDR" "$SECONDS_" > "$T/gaps.txt" <<'PY' &
import json, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
s.settimeout(5)
end = time.time() + float(sys.argv[2]); last = None; gaps = []; buf = b""; chunks = 0
while time.time() < end:
    try: data = s.recv(65536)
    except socket.timeout: break
    if not data: break
    buf += data
    while b"\n\n" in buf:
        ev, buf = buf.split(b"\n\n", 1)
        if b"event: delta" not in ev or b'"cells"' not in ev: continue
        line = [l for l in ev.split(b"\n") if l.startswith(b"data: ")]
        if not line: continue
        d = json.loads(line[0][6:])
        n = sum(r[1] - r[0] for o in d["objects"] for r in o.get("cells", []) if r[2] == 3)
        if n == 0: continue
        chunks += n
        now = time.time()
        if last is not None: gaps.append((now - last) * 1000)
        last = now
gaps.sort()
if gaps: print(f"{len(gaps)+1} deltas with {chunks} completed chunks; spacing median {gaps[len(gaps)//2]:.0f} ms, max {gaps[-1]:.0f} ms")
else: print("no deltas")
PY
GAPS=$!
echo "$CLIENTS clients, during the fill: RSS $(rss), CPU $(cpu_over)"
wait "$GAPS" || true
echo "one client during the fill:    $(cat "$T/gaps.txt")"
