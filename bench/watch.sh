#!/usr/bin/env bash
# Watch benchmark (issue 22): `edgetap watch` subscribed to /v1/# on mosquitto while
# a fleet of reference edges (`sim edge --count N`, REP_SYS_STATUS every PERIOD ms,
# link-up, topo and alarms answered by `sim platform --respond-only`) publishes for
# DURATION ms. Not a timed test: read the numbers.
#
#   bench/watch.sh [N_EDGES] [PERIOD_MS] [DURATION_MS]   (default 2000 1000 30000)
#   bench/watch.sh 10000 5000 60000                      # the issue's fleet
#   BENCH_EDGETAP=/path/to/edgetap bench/watch.sh        # another build
#
# Prints, for the watch process:
# - messages judged (deliveries), and per core: judged / (its user + system CPU
#   seconds), so a figure from a busy machine still says what one core does;
# - the lag from a delivery's arrival to its judging, mean and max (watch's own
#   count), and whether every message the broker delivered was judged;
# - memory: RSS when subscribed with no edge, at the end, and the growth per edge.
# The sims run in their own processes on the same cores: on a 2-core machine they
# take most of the CPU, which the per-core figure leaves out.
# Targets (issue 22): keeps up with 10,000 edges every 5 s (2,000 messages/s) on
# this 2-core machine (lag stays bounded), under 10 KB of state per edge.
# Measured (2026-12-07, 2 shared cores at load 6-8, release build):
#   bench/watch.sh 2000 1000 30000   80,000 judged, ~38,000 messages per CPU-second,
#                                    lag mean 0.2 ms / max 8.8 ms, 4.5 KB RSS per edge
#   bench/watch.sh 10000 5000 40000  180,000 judged (every one delivered), ~29,000 per
#                                    CPU-second, lag mean 0.6 ms / max 95 ms, 3.2 KB per edge
# Needs mosquitto and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
n=${1:-2000}
period=${2:-1000}
dur=${3:-30000}
for t in mosquitto python3; do
    command -v "$t" >/dev/null || { echo "bench/watch.sh needs $t" >&2; exit 2; }
done
if [ -z "${BENCH_EDGETAP:-}" ]; then cargo build --release --quiet; fi
bin=${BENCH_EDGETAP:-$root/target/release/edgetap}
work=$(mktemp -d /tmp/edgetap-bench-watch.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file, text
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "never saw '$2' in $1" >&2; cat "$1" >&2; exit 2
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_s() { # user + system seconds of a process (clock ticks in /proc/PID/stat)
    python3 - "$1" <<'EOF'
import os, sys
f = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
print((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
EOF
}

port=$(free_port)
cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_connections -1
EOF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & pids+=($!)
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done

"$bin" watch --broker "127.0.0.1:$port" --format json >"$work/report.json" 2>"$work/watch.err" &
watch=$!; pids+=($watch)
wait_line "$work/watch.err" "subscribed to"
sleep 1
rss0=$(rss_kb "$watch")
"$bin" sim platform --broker "127.0.0.1:$port" --respond-only >"$work/platform.out" 2>&1 &
pids+=($!)
sleep 1
echo "== $n edges, REP_SYS_STATUS every $period ms, $dur ms, mosquitto on 127.0.0.1:$port"
"$bin" sim edge --broker "127.0.0.1:$port" --edge-id B --count "$n" --period-ms "$period" \
    --duration-ms "$dur" >"$work/edges.out" 2>&1 || { cat "$work/edges.out" >&2; exit 2; }
tail -n 2 "$work/edges.out" | sed 's/^/edge process: /'
# Let the last deliveries arrive, then read the watcher before it stops.
sleep 2
cpu=$(cpu_s "$watch")
rss1=$(rss_kb "$watch")
kill -TERM "$watch"
wait "$watch" || true
python3 - "$work/report.json" "$work/watch.err" "$n" "$cpu" "$rss0" "$rss1" "$dur" <<'EOF'
import json, re, sys
report, err, n, cpu, rss0, rss1, dur = sys.argv[1:]
n, cpu, rss0, rss1, dur = int(n), float(cpu), int(rss0), int(rss1), int(dur) / 1000
r = json.load(open(report))
text = open(err).read()
m = re.search(r"judged (\d+) deliveries; lag from arrival to judging: mean ([\d.]+) ms, max ([\d.]+) ms", text)
judged, mean, mx = int(m.group(1)), float(m.group(2)), float(m.group(3))
msgs = r["summary"]["messages"]
edges = sum(1 for e in r["edges"] if e["edge_id"].startswith("B-"))
print(f"watch: {judged} deliveries judged ({msgs} protocol messages, {edges}/{n} edges seen), "
      f"{judged / dur:.0f} messages/s per second of --duration-ms")
print(f"watch CPU: {cpu:.2f} s (user + system) -> {judged / cpu:.0f} messages judged per CPU-second (one core)"
      if cpu > 0 else "watch CPU: not measurable")
print(f"lag from arrival to judging: mean {mean:.1f} ms, max {mx:.1f} ms")
print(f"watch RSS: {rss0} KB subscribed, {rss1} KB with {n} edges -> "
      f"{(rss1 - rss0) / n:.2f} KB per edge")
print(f"findings: {r['summary']['errors']} errors, {r['summary']['warnings']} warnings, {r['summary']['infos']} info")
EOF
