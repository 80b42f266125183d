# Shell helpers shared by the comparison scripts (compare.sh, wan.sh):
# sourced, not run. The sourcing script sets SCRIPT (its name, for
# messages) first.

# The comment block at the top of the running script: its --help.
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "$SCRIPT: $*" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

# SIZE: bytes, or a number with K/M/G[iB] (binary units, like blockcache's).
to_bytes() {
    local s=$1 n u
    [[ $s =~ ^([0-9]+)([KkMmGg]?)(i?[Bb])?$ ]] || die "bad size: $s"
    n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2]}
    case $u in
    K | k) echo $((n << 10)) ;;
    M | m) echo $((n << 20)) ;;
    G | g) echo $((n << 30)) ;;
    *) echo "$n" ;;
    esac
}

# A temp dir under $1 for everything the script writes ($WORK), removed
# with every background process (started by bg) when the script ends.
make_work_dir() {
    WORK=$(mktemp -d "$1/blockcache-$SCRIPT.XXXXXX")
    chmod 755 "$WORK" # nginx workers may run as another user
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
# Start a background process and remember its pid for the trap.
bg() {
    "$@" &
    PIDS+=("$!")
    LAST_PID=$!
}
# Stop one process started by bg (SIGTERM, then SIGKILL after 5 s).
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Wait (at most 10 s) until URL answers.
wait_http() {
    local url=$1 i
    for i in $(seq 100); do
        curl -sf -o /dev/null --max-time 1 -r 0-0 "$url" && return 0
        sleep 0.1
    done
    die "no answer from $url after 10 s"
}
now() { date +%s.%N; }
# Calculator: calc 'expr' (python3 float arithmetic).
calc() { python3 -c "print($1)"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
load1() { cut -d' ' -f1 /proc/loadavg; }
drop_store() { rm -rf "$1"; }

# warm_free_memory SIZE: writes SIZE bytes into tmpfs and deletes them.
# On this VM kind, memory that stays free for a few seconds goes back to
# the host (virtio free page reporting), and touching it again costs ~3x:
# 8 GiB into /dev/shm took 15.7 s from long-free memory and 5.2 s right
# after a delete. A timed phase that fills the page cache after an idle
# spell pays that, a phase right after another's delete does not; calling
# this before the first round gives it the free pool the later rounds get.
warm_free_memory() {
    local dir=/dev/shm
    [ -d "$dir" ] && [ -w "$dir" ] || dir=$WORK
    head -c "$1" /dev/zero >"$dir/blockcache-warm.$$" 2>/dev/null || true
    rm -f "$dir/blockcache-warm.$$"
}

# Writes $2 bytes of random-looking data to $1 (openssl AES-CTR keystream,
# several GB/s; else /dev/urandom).
generate_file() {
    local path=$1 size=$2 t0
    log "generating $size bytes of random data (openssl enc, else /dev/urandom)"
    t0=$(now)
    if command -v openssl >/dev/null; then
        timeout 300 head -c "$size" /dev/zero |
            openssl enc -aes-128-ctr -nosalt -pass pass:blockcache-compare -pbkdf2 2>/dev/null |
            head -c "$size" >"$path"
    else
        timeout 300 head -c "$size" /dev/urandom >"$path"
    fi
    [ "$(stat -c %s "$path")" -eq "$size" ] || die "generating $path failed"
    # On disk before any round: its writeback would otherwise land in the
    # first timed round (followers.sh's round 1 ran 1.6-1.9x, the others
    # 1.05-1.16x, with the file written 5 s before).
    sync "$path"
    log "generated in $(calc "round($(now) - $t0, 1)") s"
}

# start_gen_origin GEN SIZE: runs benches/examples/gen_origin (an object of
# SIZE bytes computed from their offset, never stored) in the background
# and waits until it answers; sets BASE (its root) and URL ($BASE/big.img).
# It prints `port N` on stdout once it listens.
start_gen_origin() {
    local port
    bg "$1" --size "$2" >"$WORK/origin.out" 2>"$WORK/origin.err"
    for _ in $(seq 100); do
        grep -q '^port ' "$WORK/origin.out" 2>/dev/null && break
        sleep 0.1
    done
    port=$(awk '/^port /{print $2}' "$WORK/origin.out")
    [ -n "$port" ] || die "the origin did not start: $(cat "$WORK/origin.err")"
    BASE=http://127.0.0.1:$port
    URL=$BASE/big.img
    wait_http "$URL"
}

# alive PID: the process runs (a zombie, exited but not waited for, does not).
alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

now_ms() { date +%s%3N; }
