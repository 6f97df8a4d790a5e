#!/usr/bin/env bash
# Benchmark: `edgetap analyze` against tshark on a >=180 MB capture of protocol
# traffic, in the same run. Not a test: prints numbers for the issue note.
#
#   bench/analyze.sh [N_MESSAGES]    (default 200000 REP_SYS_STATUS of ~900 bytes)
#   KEEP=1 keeps the work folder; PCAP=FILE times that capture instead of making one;
#   ROUNDS=N runs each timed command N times (default 5), taking turns;
#   BASE=BINARY times another edgetap (e.g. a build of main) in the same turns, and
#   prints the CPU ratio (wall time on 2 shared cores is noisy; CPU is not);
#   SKIP_JSON=1 skips the slow `tshark -T json` run.
#
# Needs mosquitto, mosquitto-clients, tcpdump, tshark, ethtool, /usr/bin/time; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
# Loopback's 64 KiB MTU and segmentation offload pack ~70 messages into one frame,
# which no field network does; by default the bench records as an Ethernet link
# would (MTU 1500, offloads off; needs ethtool). MTU=65536 OFFLOAD=on for loopback's own.
mtu=${MTU:-1500}
offload=${OFFLOAD:-off}
work=$(mktemp -d /tmp/edgetap-bench.XXXXXX)
port=18839
old_mtu=$(cat /sys/class/net/lo/mtu)
trap 'kill $(jobs -p) 2>/dev/null || true; ip link set lo mtu "$old_mtu"; ethtool -K lo tso on gso on gro on 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
ip link set lo mtu "$mtu"
ethtool -K lo tso "$offload" gso "$offload" gro "$offload"

cargo build --release --quiet
bin=target/release/edgetap

if [ -n "${PCAP:-}" ]; then
  # PCAP=FILE: time an earlier capture of this script (KEEP=1 keeps one) again.
  ln -s "$(realpath "$PCAP")" "$work/bench.pcap"
else
  # 1. Payloads: n REP_SYS_STATUS reports, one JSON object per line (~900 bytes each).
  python3 - "$n" > "$work/payloads.txt" <<'PY'
import json, sys
n = int(sys.argv[1])
links = [{"name": f"eth{i}", "status": "up" if i % 3 else "down"} for i in range(18)]
for i in range(n):
    print(json.dumps({
        "mid": 1000000000020000 + i, "type": "REP_SYS_STATUS",
        "timestamp": "2026-11-26 10:00:00", "deviceId": "EDGE0001",
        "param": {"cpuRate": i % 100, "memUsed": {"phy": 41, "virt": 12}, "diskUsed": 63,
                  "tempValue": 48, "devDateTime": "2026-11-26 10:00:00",
                  "devStDateTime": "2026-11-20 08:00:00", "devRunTime": 525600 + i,
                  "linkState": links, "longitude": "116.397128", "latitude": "39.916527"}},
        separators=(",", ":")))
PY
  echo "payload line: $(head -1 "$work/payloads.txt" | wc -c) bytes"

  # 2. A real broker and tcpdump on loopback; the edge publishes through the broker.
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
  sleep 0.5
  tcpdump -i lo -w "$work/bench.pcap" -U -B 65536 "tcp port $port" >/dev/null 2>&1 &
  dump=$!
  sleep 1
  mosquitto_pub -p "$port" -i edge-EDGE0001 -t /v1/EDGE0001/device/data -q 0 -l < "$work/payloads.txt"
  sleep 1
  kill -INT "$dump"; wait "$dump" || true
  size=$(stat -c %s "$work/bench.pcap")
  echo "capture: $((size / 1000000)) MB, lo MTU $mtu offload $offload, $(tshark -r "$work/bench.pcap" -T fields -e frame.number 2>/dev/null | wc -l) frames"

fi
# 3. Time both in the same run, warm cache first. Shared cores make a single run vary
#    by 10-40 % with the neighbours' load, so the commands take turns, ROUNDS times
#    (default 5), and each one's best run counts.
cat "$work/bench.pcap" > /dev/null
rounds=${ROUNDS:-5}
declare -A best_s best_line best_cpu
run() { # key, command...: one timed run, kept if it is the key's best
  local key=$1; shift
  /usr/bin/time -f "%e s, cpu %U+%S s, peak RSS %M KB" "$@" > "$work/out.$key" 2> "$work/time" || true
  local r; r=$(tail -1 "$work/time")
  local cpu; cpu=$(echo "$r" | sed -E 's/.*cpu ([0-9.]+)\+([0-9.]+) s.*/\1 \2/' | awk '{ print $1 + $2 }')
  if [ -z "${best_cpu[$key]:-}" ] || awk -v a="$cpu" -v b="${best_cpu[$key]}" 'BEGIN { exit !(a < b) }'; then
    best_cpu[$key]=$cpu
  fi
  if [ -z "${best_s[$key]:-}" ] || awk -v a="${r%% *}" -v b="${best_s[$key]}" 'BEGIN { exit !(a < b) }'; then
    best_s[$key]=${r%% *}; best_line[$key]=$r
  fi
}
for _ in $(seq "$rounds"); do
  run e "$bin" analyze --no-progress --port "$port" --format json "$work/bench.pcap"
  EDGETAP_THREADS=1 run e1 "$bin" analyze --no-progress --port "$port" --format json "$work/bench.pcap"
  [ -z "${BASE:-}" ] || run b "$BASE" analyze --no-progress --port "$port" --format json "$work/bench.pcap"
  run f tshark -r "$work/bench.pcap" -d "tcp.port==$port,mqtt" -T fields -e mqtt.topic -e mqtt.msg
done
[ -n "${SKIP_JSON:-}" ] || run j tshark -r "$work/bench.pcap" -d "tcp.port==$port,mqtt" -T json
echo "edgetap analyze --format json (reading | judging threads): ${best_line[e]}"
python3 -c "import json; s=json.load(open('$work/out.e'))['summary']; print('  ', {k: s[k] for k in ('mqtt_packets','publishes','messages','errors','warnings')})"
echo "edgetap analyze, one thread (EDGETAP_THREADS=1): ${best_line[e1]}"
echo "tshark -T fields -e mqtt.topic -e mqtt.msg: ${best_line[f]}"
echo "  lines: $(wc -l < "$work/out.f")"
echo "tshark -T json (once): ${best_line[j]:-skipped}"
if [ -n "${BASE:-}" ]; then
  echo "$BASE analyze --format json: ${best_line[b]}"
  python3 -c "print(f'CPU against $BASE: {${best_cpu[e]} / ${best_cpu[b]}:.2f}x (best of each), wall: {${best_s[e]} / ${best_s[b]}:.2f}x')"
fi
e=${best_s[e]}; e1=${best_s[e1]}; f=${best_s[f]}; j=${best_s[j]:-0}
python3 - "$e" "$e1" "$f" "$j" <<'PY'
import sys
e, e1, f, j = (float(x) for x in sys.argv[1:])
print(f"speed ratio vs tshark fields: {f/e:.1f}x (one thread: {f/e1:.1f}x)" + (f", vs tshark json: {j/e:.1f}x" if j else ""))
PY
