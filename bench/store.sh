#!/usr/bin/env bash
# Store footprint on finding-heavy traffic (issue 10, item 2): `mosquitto_pub -l` of
# N REP_SYS_STATUS reports of ~1 KB whose param lacks every required field (about
# ten error findings each), QoS 0 (or 1), through `edgetap proxy` to mosquitto; then the
# store folder's size (`du -sb`) against the bytes the proxy forwarded (both
# directions, the capture's `bytes`). Target: at most 1.5 bytes on disk per byte
# forwarded. Not a timed test: read the numbers.
#
#   bench/store.sh                              # release build, 100,000 messages
#   BENCH_MESSAGES=20000 bench/store.sh
#   EDGETAP=/path/to/other/edgetap bench/store.sh   # the same run with another build
#   BENCH_QOS=1 bench/store.sh                  # QoS 1 (default 0: mosquitto 2.0.11's
#       `mosquitto_pub -l` at QoS 1 stops short of the input when its peer is slow;
#       the subscriber's count shows it)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${BENCH_MESSAGES:-100000}
qos=${BENCH_QOS:-0}
if [ -z "${EDGETAP:-}" ]; then
    cargo build --release --quiet
    EDGETAP=$PWD/target/release/edgetap
fi
work=$(mktemp -d /tmp/edgetap-bench-store.XXXXXX)
trap 'kill $proxy $broker 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(free_port)
pport=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$bport" >"$work/m.conf"
mosquitto -c "$work/m.conf" >/dev/null 2>&1 &
broker=$!
"$EDGETAP" proxy --listen "127.0.0.1:$pport" --upstream "127.0.0.1:$bport" \
    --store "$work/store" --name bench >"$work/proxy.out" 2>"$work/proxy.err" &
proxy=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$pport") 2>/dev/null && break
    sleep 0.1
done
pad=$(head -c 900 /dev/zero | tr '\0' x)
python3 - "$n" "$pad" >"$work/lines" <<'EOF'
import sys
n, pad = int(sys.argv[1]), sys.argv[2]
for mid in range(1, n + 1):
    print('{"type":"REP_SYS_STATUS","mid":%d,"timestamp":"2026-11-26 10:00:00","param":{"note":"%s"}}' % (mid, pad))
EOF
# A subscriber on the broker counts what arrived (nothing may be lost).
mosquitto_sub -p "$bport" -t /v1/E1/device/data -q 1 -C "$n" -W 900 | wc -l >"$work/received" &
sub=$!
sleep 0.5
mosquitto_pub -p "$pport" -t /v1/E1/device/data -q "$qos" -l <"$work/lines"
wait $sub || true
kill -TERM $proxy
wait $proxy || true
bytes=$("$EDGETAP" captures list --store "$work/store" --format json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["bytes"])')
disk=$(du -sb "$work/store" | cut -f1)
echo "edgetap:          $EDGETAP"
echo "messages:         $n (~$(( $(wc -c <"$work/lines") / n )) bytes each)"
echo "received by a subscriber: $(cat "$work/received") of $n"
echo "bytes forwarded:  $bytes"
echo "store on disk:    $disk (du -sb)"
python3 -c "print('bytes on disk per byte forwarded: %.3f (target <= 1.5)' % ($disk / $bytes))"
echo "store files:"
(cd "$work/store" && du -ab . | sort -rn | head -8)
echo "proxy stdout lines: $(wc -l <"$work/proxy.out"), stderr lines: $(wc -l <"$work/proxy.err")"
