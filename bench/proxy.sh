#!/usr/bin/env bash
# Proxy benchmark (issue 10): the same traffic straight to mosquitto, through HAProxy
# (a plain TCP proxy that decodes nothing) and through `edgetap proxy` (recording into
# a store), in one run, taking turns. Not a timed test: read the numbers.
#
#   bench/proxy.sh                       # release build, 5 turns
#   BENCH_TURNS=3 BENCH_MESSAGES=20000 bench/proxy.sh
#   BENCH_CLIENT=0 bench/proxy.sh        # skip the rumqttc client part (cargo test)
#   BENCH_CHURN=24000 bench/proxy.sh     # short connections for the RSS-after-churn figure
#   BENCH_EDGETAP=/path/to/edgetap bench/proxy.sh   # another edgetap binary
#   BENCH_EDGETAP_ARGS="--max-buffered 16777216" bench/proxy.sh   # extra proxy flags
#
# 1. Throughput: `mosquitto_pub -l` of BENCH_MESSAGES (50,000) REP_SYS_STATUS reports
#    of ~1 KB on /v1/BENCH1/device/data, QoS 0 and QoS 1, conforming (every table 10
#    field) and finding-heavy (param lacks six required fields: six error findings per
#    message); wall time of mosquitto_pub, median of the turns; ratio = direct / target.
# 2. Latency: QoS 1 PUBLISH → PUBACK one at a time (1 KB, 5,000 rounds, a raw socket
#    client), p50 and p99 per target; "added" = target − direct. Against a fresh
#    edgetap (the one of part 3), not the one still writing part 1's backlog.
# 3. Memory: edgetap's RSS idle, with 1,000 connections open (each CONNECTed and one
#    PUBLISH), and after BENCH_CHURN (24,000) short connections (CONNECT, PUBLISH,
#    DISCONNECT) once they are closed.
# 4. BENCH_CLIENT=1 (default): the project's own client (rumqttc) against direct and
#    edgetap: tests/proxy.rs bench_direct_vs_proxy.
#
# Targets (issue 10): QoS 0 >= 0.95 of direct, QoS 1 >= HAProxy's ratio, on both
# payloads; added p99 < 100 µs; RSS < 100 MB at 1,000 connections and after churn.
# Needs mosquitto, mosquitto-clients, haproxy (Debian) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
turns=${BENCH_TURNS:-5}
messages=${BENCH_MESSAGES:-50000}
churn=${BENCH_CHURN:-24000}
for t in mosquitto mosquitto_pub haproxy python3; do
    command -v "$t" >/dev/null || { echo "bench/proxy.sh needs $t" >&2; exit 2; }
done
cargo build --release --quiet
edgetap=${BENCH_EDGETAP:-$root/target/release/edgetap}   # another build to compare
work=$(mktemp -d /tmp/edgetap-bench-proxy.XXXXXX)
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

broker=$(free_port); hap=$(free_port); etp=$(free_port)
cat >"$work/mosquitto.conf" <<EOF
listener $broker 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
EOF
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)
cat >"$work/haproxy.cfg" <<EOF
global
    maxconn 3000
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
listen mqtt
    bind 127.0.0.1:$hap
    server broker 127.0.0.1:$broker
EOF
haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 & pids+=($!)
"$edgetap" proxy --listen "127.0.0.1:$etp" --upstream "127.0.0.1:$broker" --name bench \
    --store "$work/store" ${BENCH_EDGETAP_ARGS:-} >"$work/edgetap.out" 2>"$work/edgetap.err" & etp_pid=$!; pids+=($etp_pid)
wait_port "$broker"; wait_port "$hap"; wait_port "$etp"

python3 - "$work" "$messages" <<'EOF'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
links = [{"name": "eth%d" % i, "status": "up"} for i in range(24)]
good, bad = [], []
for mid in range(1, n + 1):
    p = {"cpuRate": 12.5, "memUsed": {"phy": 41.0, "virt": 12.0}, "diskUsed": 23.0,
         "tempValue": 47.5, "devDateTime": "2026-11-26 10:00:00",
         "devStDateTime": "2026-11-26 09:00:00", "devRunTime": 3600,
         "linkState": links, "longitude": "116.397", "latitude": "39.908"}
    good.append(json.dumps({"type": "REP_SYS_STATUS", "mid": mid,
                            "timestamp": "2026-11-26 10:00:00", "param": p}, separators=(",", ":")))
    # Lacks memUsed, diskUsed, tempValue, devDateTime, devStDateTime, devRunTime.
    q = {"cpuRate": 12.5, "linkState": links + [{"name": "wlan%d" % i, "status": "down"} for i in range(7)]}
    bad.append(json.dumps({"type": "REP_SYS_STATUS", "mid": mid,
                           "timestamp": "2026-11-26 10:00:00", "param": q}, separators=(",", ":")))
open(work + "/conforming.txt", "w").write("\n".join(good) + "\n")
open(work + "/finding-heavy.txt", "w").write("\n".join(bad) + "\n")
print("payloads: conforming %d bytes, finding-heavy %d bytes per message" % (len(good[0]), len(bad[0])))
EOF

declare -A port=([direct]=$broker [haproxy]=$hap [edgetap]=$etp)
targets=(direct haproxy edgetap)
# Each run starts with edgetap idle: its judge (capped by --judge-cpu) may still be
# working through the previous run's backlog, which would take CPU time from
# whichever run comes next (direct or HAProxy as well as edgetap's own). Waits
# until edgetap's CPU time stops growing (at most 60 s).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
settle() {
    local before after
    for _ in $(seq 200); do
        before=$(cpu_ticks "$etp_pid"); sleep 0.3; after=$(cpu_ticks "$etp_pid")
        [ $((after - before)) -le 1 ] && return 0
    done
}
echo "throughput: $messages messages per run, $turns turns (seconds per run)"
: >"$work/times"
for turn in $(seq "$turns"); do
    for kind in conforming finding-heavy; do
        for qos in 0 1; do
            for t in "${targets[@]}"; do
                settle
                s=$(date +%s.%N)
                mosquitto_pub -p "${port[$t]}" -q "$qos" -t /v1/BENCH1/device/data -l <"$work/$kind.txt"
                e=$(date +%s.%N)
                echo "$kind $qos $t $(echo "$e - $s" | bc)" >>"$work/times"
            done
        done
    done
    echo "  turn $turn done"
done
python3 - "$work/times" <<'EOF'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for kind, qos, t, secs in rows:
    med.setdefault((kind, qos, t), []).append(float(secs))
print()
# The spread: each turn's own ratio (direct and edgetap of the same turn, run one
# after the other), lowest and highest. On a machine whose cores are shared the
# medians move by a few hundredths from one invocation to the next; a target met
# by the median but missed by half the turns is met by noise.
print("| payload | QoS | direct s | HAProxy s | edgetap s | HAProxy ratio | edgetap ratio | edgetap per turn, min-max | target |")
print("|---|---|---|---|---|---|---|---|---|")
for kind in ("conforming", "finding-heavy"):
    for qos in ("0", "1"):
        runs = {t: med[(kind, qos, t)] for t in ("direct", "haproxy", "edgetap")}
        m = {t: st.median(v) for t, v in runs.items()}
        rh, re = m["direct"] / m["haproxy"], m["direct"] / m["edgetap"]
        per_turn = [d / e for d, e in zip(runs["direct"], runs["edgetap"])]
        if qos == "0":
            ok, want = re >= 0.95, ">= 0.95"
        else:
            ok, want = re >= rh, ">= %.2f" % rh
        print("| %s | %s | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f-%.2f | %s %s |" % (
            kind, qos, m["direct"], m["haproxy"], m["edgetap"], rh, re,
            min(per_turn), max(per_turn), want, "met" if ok else "MISSED"))
EOF

rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
echo
sleep 1
echo "edgetap RSS after the throughput runs: $(rss $etp_pid) MB (peak $(hwm $etp_pid) MB)"
# The judge hands freed heap back to the system once it has caught up, at most every
# 10 s (TRIM_EVERY in src/proxy/judge.rs): the figure a proxy left running settles at.
sleep 11
echo "edgetap RSS 11 s later: $(rss $etp_pid) MB"
kill -TERM "$etp_pid"; wait "$etp_pid" || true
sent=$(( turns * 2 * ($(stat -c %s "$work/conforming.txt") + $(stat -c %s "$work/finding-heavy.txt")) ))
echo "store after the run: $(du -sb "$work/store" | cut -f1) bytes on disk for $sent payload bytes sent through edgetap in the throughput runs"
grep -c . "$work/edgetap.out" | xargs echo "edgetap console + report lines:"
grep -E "WARN|ERROR" "$work/edgetap.err" | head -5 || true

# Memory per connection, on a fresh proxy (a fresh store): idle, 1,000 open, churn.
etp2=$(free_port)
"$edgetap" proxy --listen "127.0.0.1:$etp2" --upstream "127.0.0.1:$broker" --name rss \
    --store "$work/store-rss" >/dev/null 2>"$work/edgetap-rss.err" & rss_pid=$!; pids+=($rss_pid)
wait_port "$etp2"
sleep 1
echo
echo "edgetap (fresh) RSS idle: $(rss $rss_pid) MB"
echo
echo "latency: QoS 1 PUBLISH -> PUBACK, one at a time, 1 KB (a report lacking every table 10 field), edgetap fresh"
python3 - "$broker" "$hap" "$etp2" <<'EOF'
import socket, struct, sys, time
ports = dict(zip(("direct", "haproxy", "edgetap"), map(int, sys.argv[1:4])))
def connect(port, cid):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
    s.sendall(b"\x10" + bytes([len(body)]) + body)
    assert s.recv(4)[:1] == b"\x20"
    return s
def remaining(n):
    out = b""
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out
def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        assert c
        b += c
    return b
payload = b'{"type":"REP_SYS_STATUS","mid":1,"timestamp":"2026-11-26 10:00:00","param":{}}'.ljust(1024)
topic = b"/v1/LAT1/device/data"
res = {}
for rnd in range(3):
    for name, port in ports.items():
        s = connect(port, b"lat-" + name.encode())
        lat = []
        for i in range(1, 1668):
            pk = (i % 65535) + 1
            var = struct.pack(">H", len(topic)) + topic + struct.pack(">H", pk)
            pkt = b"\x32" + remaining(len(var) + len(payload)) + var + payload
            t = time.perf_counter_ns()
            s.sendall(pkt)
            recv_exact(s, 4)
            lat.append((time.perf_counter_ns() - t) / 1000)
        s.sendall(b"\xe0\x00"); s.close()
        res.setdefault(name, []).extend(lat)
print()
print("| target | p50 µs | p99 µs | added p50 µs | added p99 µs |")
print("|---|---|---|---|---|")
q = lambda v, p: sorted(v)[int(len(v) * p)]
for name, v in res.items():
    print("| %s | %.0f | %.0f | %.0f | %.0f |" % (name, q(v, .5), q(v, .99),
          q(v, .5) - q(res["direct"], .5), q(v, .99) - q(res["direct"], .99)))
EOF

python3 - "$etp2" "$churn" "$rss_pid" <<'EOF'
import socket, sys, time
port, churn, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for l in open("/proc/%s/status" % pid):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) / 1024
def connect(cid):
    s = socket.create_connection(("127.0.0.1", port))
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + bytes([0, len(cid)]) + cid
    pub = b"\x00\x09bench/rss" + b"x" * 1000
    s.sendall(b"\x10" + bytes([len(body)]) + body + b"\x30" + bytes([len(pub) % 128 | 0x80, len(pub) // 128]) + pub)
    return s
socks = [connect(b"rss%04d" % i) for i in range(1000)]
for s in socks:
    assert s.recv(4)[:1] == b"\x20"
time.sleep(1)
print("edgetap RSS with 1,000 connections open: %.1f MB" % rss())
for s in socks:
    s.sendall(b"\xe0\x00"); s.close()
time.sleep(1)
t = time.time()
for i in range(churn):
    s = connect(b"churn%05d" % (i % 100000))
    s.recv(4)
    s.sendall(b"\xe0\x00"); s.close()
time.sleep(3)
print("edgetap RSS after %d short connections (%.0f s), all closed: %.1f MB" % (churn, time.time() - t, rss()))
EOF
echo "edgetap (fresh) peak RSS: $(hwm $rss_pid) MB"
kill -TERM "$rss_pid"; wait "$rss_pid" || true

if [ "${BENCH_CLIENT:-1}" = 1 ]; then
    echo
    echo "the project's own client (rumqttc), direct vs edgetap:"
    cargo test --release --test tests proxy::bench_direct_vs_proxy -- --ignored --nocapture 2>&1 |
        grep -E "^(direct|proxy|throughput|added|proxy peak)" || true
fi
