#!/usr/bin/env bash
# Churn with messages: BENCH_CHURN (24,000) short connections through `edgetap proxy`
# (a store, the live console on stdout to a file), each CONNECT, one finding-heavy
# REP_SYS_STATUS (~1 KB, six required table 10 fields missing: six error findings),
# DISCONNECT. Prints the proxy's RSS before (idle, the baseline), at the end of the
# churn, 10 s and 30 s after it, the ratios to the baseline, and how far the judge
# fell behind (the console's "judging runs … behind" lines, messages skipped).
#
#   bench/churn.sh                                   # release build, 24,000 connections
#   BENCH_CHURN=5000 bench/churn.sh
#   BENCH_EDGETAP=/path/to/edgetap bench/churn.sh    # another build, to compare
#   BENCH_STDOUT=pipe bench/churn.sh                 # console into a pipe read slowly (a
#                                                    # terminal over ssh) instead of a file
#
# Issue 21 measured 4.7x the baseline 10 s after 24,000 such connections, still
# rising, with the judge printing 72,028 console lines behind the traffic. On the
# 2-core shared machine (load about 8), main at dd509ed: 4.51x 10 s and 30 s later;
# with the console on a thread of its own, the backlog bounded in time and in queue
# slots, the judge uncapped once traffic stops and the final report's kept findings
# given back once it re-judges from the store: 2.00x 10 s and 30 s later (what is
# left was not analysed further). Needs mosquitto and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
churn=${BENCH_CHURN:-24000}
clients=${BENCH_CLIENTS:-4}
for t in mosquitto python3; do
    command -v "$t" >/dev/null || { echo "bench/churn.sh needs $t" >&2; exit 2; }
done
if [ -z "${BENCH_EDGETAP:-}" ]; then cargo build --release --quiet; fi
edgetap=${BENCH_EDGETAP:-$root/target/release/edgetap}
work=$(mktemp -d /tmp/edgetap-bench-churn.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 8192 2>/dev/null || true
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not listening" >&2; cat "$work"/*.err >&2 2>/dev/null; exit 2; }

broker=$(free_port); etp=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$broker" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)
wait_port "$broker"
if [ "${BENCH_STDOUT:-file}" = pipe ]; then
    # A reader that takes 64 KiB every 100 ms: a slow terminal.
    mkfifo "$work/console"
    python3 -c '
import sys, time
f = open(sys.argv[1], "rb"); n = 0
while True:
    b = f.read(65536)
    if not b: break
    n += b.count(b"\n"); time.sleep(0.1)
open(sys.argv[2], "w").write("%d\n" % n)' "$work/console" "$work/console.count" & pids+=($!)
    out="$work/console"
else
    out="$work/edgetap.out"
fi
"$edgetap" proxy --listen "127.0.0.1:$etp" --upstream "127.0.0.1:$broker" --name churn \
    --store "$work/store" >"$out" 2>"$work/edgetap.err" & etp_pid=$!; pids+=($etp_pid)
wait_port "$etp"
sleep 2

python3 - "$etp" "$churn" "$etp_pid" "$clients" <<'EOF'
import json, socket, struct, sys, threading, time
port, churn, pid, clients = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss():
    for l in open("/proc/%s/status" % pid):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) / 1024
def remaining(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
links = [{"name": "eth%d" % i, "status": "up"} for i in range(24)]
def publish(mid):
    # Lacks memUsed, diskUsed, tempValue, devDateTime, devStDateTime, devRunTime.
    p = json.dumps({"type": "REP_SYS_STATUS", "mid": mid, "timestamp": "2026-11-26 10:00:00",
                    "param": {"cpuRate": 12.5, "linkState": links}}, separators=(",", ":")).encode()
    topic = b"/v1/CHURN1/device/data"
    var = struct.pack(">H", len(topic)) + topic
    return b"\x30" + remaining(len(var) + len(p)) + var + p
def one(i):
    cid = b"churn%05d" % i
    s = socket.create_connection(("127.0.0.1", port))
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
    s.sendall(b"\x10" + bytes([len(body)]) + body + publish(i + 1) + b"\xe0\x00")
    s.recv(4)
    s.close()
base = rss()
print("edgetap RSS idle (baseline): %.1f MB" % base)
t = time.time()
def worker(k):
    for i in range(k, churn, clients):
        one(i)
th = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
for x in th: x.start()
for x in th: x.join()
took = time.time() - t
end = rss()
print("%d short connections with a finding-heavy message in %.0f s" % (churn, took))
print("edgetap RSS at the end of the churn: %.1f MB (%.1fx)" % (end, end / base))
time.sleep(10)
r10 = rss()
print("edgetap RSS 10 s later: %.1f MB (%.2fx the baseline)" % (r10, r10 / base))
time.sleep(20)
r30 = rss()
print("edgetap RSS 30 s later: %.1f MB (%.2fx the baseline)" % (r30, r30 / base))
EOF
kill -TERM "$etp_pid"; wait "$etp_pid" || true
if [ -f "$work/edgetap.out" ]; then
    echo "console + report lines: $(grep -c . "$work/edgetap.out")"
    grep -E "judging runs|judging skipped|console lines" "$work/edgetap.out" | tail -3 || true
else
    sleep 1; echo "console lines the slow reader got: $(cat "$work/console.count" 2>/dev/null)"
fi
grep -E "WARN|ERROR" "$work/edgetap.err" | head -5 || true
