#!/usr/bin/env bash
# Bus benchmark (issue 22, scale-out): the same messages judged directly by `edgetap
# watch` and through the JetStream path (`watch --bus` → nats-server → `judge`), both
# subscribed to one mosquitto at the same time. Not a timed test: read the numbers.
#
#   bench/bus.sh [MESSAGES] [EDGES]        (default 40000 16)
#   BENCH_EDGETAP=/path/to/edgetap bench/bus.sh    # another build (default: release)
#   BENCH_PARTITIONS=8 bench/bus.sh
#   BENCH_PAYLOAD=faulty bench/bus.sh   # reports that break 7 rules each (7 findings published)
#
# EDGES mosquitto_pub clients each publish MESSAGES/EDGES REP_SYS_STATUS reports
# (QoS 0, /v1/BENCH<i>/device/data): conforming (~330 bytes), or with
# BENCH_PAYLOAD=faulty ~100 bytes that break 7 rules (each finding is a message too). Prints, per path, the CPU seconds
# (user + system, from /proc) of its processes, CPU µs per message, and the overhead
# per message of the bus path (watch --bus + nats-server + judge) over direct judging
# (watch); and how long after the last publish the judges had counted every message.
# Measured (2026-12-07, 2 shared cores at load 3, release build, 40,000 messages from
# 16 edges, 8 partitions, one judge):
#   clean   direct 4.2 µs CPU/message; bus 34.8 (watch --bus 8.5, nats-server 18.0,
#           judge 8.2): overhead 30.5 µs/message; everything judged within 3.3 s of the
#           last publish
#   faulty  (7 error findings each, 280,000 findings published) direct 17.7; bus 135.0
#           (watch --bus 7.0, nats-server 66.5, judge 61.5): overhead 117 µs/message,
#           about 12 µs per finding published
# Needs mosquitto, mosquitto-clients, nats-server (Debian) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
messages=${1:-40000}
edges=${2:-16}
partitions=${BENCH_PARTITIONS:-8}
payload=${BENCH_PAYLOAD:-clean}   # clean: conforming reports; faulty: 7 error findings each
for t in mosquitto mosquitto_pub nats-server python3; do
    command -v "$t" >/dev/null || { echo "bench/bus.sh needs $t" >&2; exit 2; }
done
if [ -z "${BENCH_EDGETAP:-}" ]; then cargo build --release --quiet; fi
bin=${BENCH_EDGETAP:-$root/target/release/edgetap}
work=$(mktemp -d /tmp/edgetap-bench-bus.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file, text
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "never saw '$2' in $1" >&2; cat "$1" >&2; exit 2
}
cpu_s() { # user + system seconds of a process
    python3 - "$1" <<'EOF'
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
EOF
}
now() { python3 -c 'import time; print(time.time())'; }

mport=$(free_port); nport=$(free_port)
# max_queued_messages 0: mosquitto drops a slow subscriber's messages past 1,000 queued.
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n' "$mport" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & pids+=($!)
"$bin" bus nats-config --partitions "$partitions" --port "$nport" --store-dir - >"$work/nats.conf"
nats-server -js -sd "$work/js" -c "$work/nats.conf" -a 127.0.0.1 >"$work/nats.log" 2>&1 &
nats=$!; pids+=($nats)
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$nport) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$mport) 2>/dev/null && break; sleep 0.05; done
url="nats://127.0.0.1:$nport"

"$bin" judge --bus "$url" --partitions "0..$((partitions - 1))" >"$work/judge.out" 2>"$work/judge.err" &
judge=$!; pids+=($judge)
wait_line "$work/judge.err" "edgetap judge: partitions"
"$bin" watch --broker "127.0.0.1:$mport" --format json >"$work/direct.json" 2>"$work/direct.err" &
direct=$!; pids+=($direct)
"$bin" watch --broker "127.0.0.1:$mport" --bus "$url" >"$work/buswatch.out" 2>"$work/buswatch.err" &
buswatch=$!; pids+=($buswatch)
wait_line "$work/direct.err" "subscribed to"
wait_line "$work/buswatch.err" "subscribed to"
nats0=$(cpu_s "$nats"); judge0=$(cpu_s "$judge")

per=$((messages / edges)); total=$((per * edges))
for i in $(seq "$edges"); do
    python3 - "$i" "$per" "$payload" >"$work/lines.$i" <<'EOF'
import sys
i, n, faulty = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "faulty"
param = '{"cpuRate":12.5}' if faulty else ('{"cpuRate":35.5,"memUsed":{"phy":42,"virt":10},'
    '"diskUsed":61.5,"tempValue":48,"devDateTime":"2026-11-26 10:00:01","devStDateTime":'
    '"2026-11-20 08:00:00","devRunTime":525601,"linkState":[{"name":"eth1","status":"up"}],'
    '"longitude":"120.98","latitude":"28.12"}')
for m in range(1, n + 1):
    print('{"mid":%d,"type":"REP_SYS_STATUS","timestamp":"2026-11-26 10:00:01","param":%s}' % (m, param))
EOF
done
echo "== $total $payload messages from $edges edges, $partitions partitions; mosquitto :$mport, nats-server :$nport"
t0=$(now)
pubs=()
for i in $(seq "$edges"); do
    mosquitto_pub -p "$mport" -t "/v1/BENCH$i/device/data" -l <"$work/lines.$i" & pubs+=($!)
done
wait "${pubs[@]}"
t1=$(now)
# Done when the judge and both watchers have used no CPU for a second (asking fleet
# meanwhile would load nats-server and count in its figure); fleet then says how many
# were judged.
settled() {
    local last="" cur
    for _ in $(seq 1200); do
        cur="$(cpu_s "$judge") $(cpu_s "$buswatch") $(cpu_s "$direct") $(cpu_s "$nats")"
        [ "$cur" = "$last" ] && return 0
        last=$cur
        sleep 1
    done
}
settled
t2=$(python3 -c "print($(now) - 1)")
direct_cpu=$(cpu_s "$direct"); buswatch_cpu=$(cpu_s "$buswatch")
nats_cpu=$(python3 -c "print($(cpu_s "$nats") - $nats0)"); judge_cpu=$(python3 -c "print($(cpu_s "$judge") - $judge0)")
# fleet exits 1 when the messages break rules: its report is what counts.
judged=$({ "$bin" fleet --bus "$url" --format json --duration-ms 0 2>/dev/null || true; } \
    | python3 -c 'import json,sys
try: print(json.load(sys.stdin)["summary"]["messages"])
except Exception: print(0)')
kill -TERM "$direct" "$buswatch" "$judge"
wait "$direct" 2>/dev/null || true; wait "$buswatch" 2>/dev/null || true; wait "$judge" 2>/dev/null || true
direct_n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["messages"])' "$work/direct.json")
python3 - "$total" "$direct_n" "$judged" "$direct_cpu" "$buswatch_cpu" "$nats_cpu" "$judge_cpu" "$t0" "$t1" "$t2" <<'EOF'
import sys
total, dn, bn = map(int, sys.argv[1:4])
d, w, n, j = map(float, sys.argv[4:8])
t0, t1, t2 = map(float, sys.argv[8:11])
bus = w + n + j
print(f"published in {t1 - t0:.2f} s; everything judged within {t2 - t1:.2f} s after the last publish (1 s resolution)")
print(f"direct  watch                     {dn:>8} judged  {d:6.2f} CPU s  {d / max(dn, 1) * 1e6:7.1f} µs/message")
print(f"bus     watch --bus               {total:>8} sent    {w:6.2f} CPU s  {w / total * 1e6:7.1f} µs/message")
print(f"        nats-server                                 {n:6.2f} CPU s  {n / total * 1e6:7.1f} µs/message")
print(f"        judge                     {bn:>8} judged  {j:6.2f} CPU s  {j / max(bn, 1) * 1e6:7.1f} µs/message")
print(f"        together                                    {bus:6.2f} CPU s  {bus / total * 1e6:7.1f} µs/message")
print(f"overhead of the bus path: {(bus / total - d / max(dn, 1)) * 1e6:.1f} µs CPU per message ({bus / max(d, 1e-9):.1f}x direct)")
EOF
grep -h "edgetap watch:\|edgetap judge:" "$work/buswatch.err" "$work/judge.err" | grep -v "subscribed\|partitions" || true
