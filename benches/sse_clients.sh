#!/usr/bin/env bash
# Cost of the status page's event stream on the server.
#
#   benches/sse_clients.sh [CLIENTS] [SECONDS]     # default 100 clients, 10 s
#
# A loopback nginx (limit_rate 2m per connection) serves a 256 MiB file;
# `blockcache serve --mirror img=...` fills it (started by a one-byte range
# read); CLIENTS `curl -N /events` clients stay connected. Prints the serve
# process's RSS and CPU without clients, with idle clients (object
# complete: nothing changes), and with clients during the fill (a delta
# every tick), and the spacing of deltas one client receives during the
# fill (a commit waits at most one spacing for its delta). Needs nginx,
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
  server { listen 127.0.0.1:$PORT; root $T/root; limit_rate 2m; } }
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
echo "serve, no clients:            RSS $(rss), CPU $(cpu_over)"
for _ in $(seq "$CLIENTS"); do curl -sN "http://$ADDR/events" > /dev/null & pids+=($!); done
sleep 2
echo "$CLIENTS idle clients:           RSS $(rss), CPU $(cpu_over)"
curl -s -o /dev/null -r 0-0 "http://$ADDR/m/img/big.img"  # starts the fill
python3 - "$ADDR" "$SECONDS_" > "$T/gaps.txt" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
s.settimeout(5)
end = time.time() + float(sys.argv[2]); last = None; gaps = []; buf = b""
while time.time() < end:
    try: data = s.recv(65536)
    except socket.timeout: break
    if not data: break
    buf += data
    while b"\n\n" in buf:
        ev, buf = buf.split(b"\n\n", 1)
        if b"event: delta" in ev and b'"cells"' in ev:
            now = time.time()
            if last is not None: gaps.append((now - last) * 1000)
            last = now
gaps.sort()
if gaps: print(f"{len(gaps)} deltas with chunk cells, spacing median {gaps[len(gaps)//2]:.0f} ms, p99 {gaps[int(len(gaps)*0.99)]:.0f} ms, max {gaps[-1]:.0f} ms")
else: print("no deltas")
PY
GAPS=$!
echo "$CLIENTS clients, during fill:   RSS $(rss), CPU $(cpu_over)"
wait "$GAPS" || true
echo "one client during the fill:   $(cat "$T/gaps.txt")"
