#!/usr/bin/env bash
# Benchmark: what the HTML record costs over the JSON one, on the same capture in the
# same run (the timeline is kept only for --format html). Not a test: prints numbers.
#
#   bench/html.sh [N_MESSAGES]   (default 50000 REP_SYS_STATUS reports, every one
#                                 missing a required field: a finding per message)
#   KEEP=1 keeps the work folder; ROUNDS=N runs each command N times (default 5),
#   taking turns.
#
# Needs mosquitto, mosquitto-clients, tcpdump and GNU time (/usr/bin/time); run as root
# (tcpdump on lo). Leaves the loopback interface as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000}
rounds=${ROUNDS:-5}
work=$(mktemp -d /tmp/edgetap-bench-html.XXXXXX)
port=18849
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

cargo build --release --quiet
bin=target/release/edgetap

python3 - "$n" > "$work/payloads.txt" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    # No devRunTime: one error finding per report.
    print(json.dumps({
        "mid": 1000000000020000 + i, "type": "REP_SYS_STATUS",
        "timestamp": "2026-11-26 10:00:00", "deviceId": "EDGE0001",
        "param": {"cpuRate": i % 100, "memUsed": {"phy": 41, "virt": 12}, "diskUsed": 63,
                  "tempValue": 48, "devDateTime": "2026-11-26 10:00:00",
                  "devStDateTime": "2026-11-20 08:00:00",
                  "linkState": [{"name": "eth0", "status": "up"}]}},
        separators=(",", ":")))
PY
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
sleep 0.5
tcpdump -i lo -w "$work/bench.pcap" -U -B 65536 "tcp port $port" >/dev/null 2>&1 &
dump=$!
sleep 1
mosquitto_pub -p "$port" -i edge-EDGE0001 -t /v1/EDGE0001/device/data -q 0 -l < "$work/payloads.txt"
sleep 1
kill -INT "$dump"; wait "$dump" || true
echo "capture: $(stat -c %s "$work/bench.pcap") bytes, $n messages"

for fmt in json html; do : > "$work/$fmt.times"; done
for _ in $(seq "$rounds"); do
  for fmt in json html; do
    /usr/bin/time -f "%e %M" -a -o "$work/$fmt.times" \
      "$bin" analyze --port "$port" --format "$fmt" "$work/bench.pcap" > "$work/out.$fmt" || true
  done
done
for fmt in json html; do
  # (GNU time adds a line for a non-zero exit status: only the figures are read.)
  grep -E '^[0-9.]+ [0-9]+$' "$work/$fmt.times" > "$work/$fmt.figures"
  wall=$(cut -d' ' -f1 "$work/$fmt.figures" | sort -n | awk '{ t[NR] = $1 }
    END { printf "median %.2f s (min %.2f, max %.2f)", t[int((NR + 1) / 2)], t[1], t[NR] }')
  rss=$(cut -d' ' -f2 "$work/$fmt.figures" | sort -n | awk '{ m[NR] = $1 } END { print m[int((NR + 1) / 2)] }')
  echo "$fmt: wall $wall, peak RSS median $rss KiB"
done
echo "html page: $(stat -c %s "$work/out.html") bytes; json: $(stat -c %s "$work/out.json") bytes"
