#!/usr/bin/env bash
# Regenerates the sample captures of edgetap with real tools.
#
# For each scenario: a private mosquitto broker on 127.0.0.1:$PORT, tcpdump on the
# loopback interface, one mosquitto_sub subscribed to the protocol topics for the
# whole session (so the capture holds both legs of every message: the publisher's
# PUBLISH to the broker and the broker's delivery), and a scenario in which a
# simulated edge (client id edge-E1) and a simulated platform (client id platform)
# publish T/YQDEIF 003-2022 messages with mosquitto_pub, one connection per message.
#
# Usage:  captures/generate.sh [SCENARIO...]     (default: every scenario)
#         PORT=18831 captures/generate.sh        (another broker port)
# Needs:  mosquitto, mosquitto-clients, tcpdump; root (or CAP_NET_RAW) for tcpdump.
#
# The broker port is not 1883, yet `edgetap analyze FILE` needs no --port: it decodes
# any TCP flow whose first client bytes are an MQTT CONNECT. (Wireshark/tshark do need
# `-d tcp.port==18830,mqtt`.)
#
# Timestamps are the standard's "yyyy-MM-dd HH:mm:ss" in China Standard Time (UTC+8),
# taken when each message is published, so a regenerated capture differs from the
# committed one in times and TCP ports, never in its findings or counts.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PORT=${PORT:-18830}
EDGE=E1
OUT=${OUT:-$HERE}
ALL_SCENARIOS=(clean-session bad-schema bad-pairing bad-sequence bad-envelope mqtt31 mqtt5)

for tool in mosquitto mosquitto_pub mosquitto_sub tcpdump; do
    command -v "$tool" >/dev/null || { echo "generate.sh: $tool not found (apt-get install mosquitto mosquitto-clients tcpdump)" >&2; exit 2; }
done
if ss -Htln "sport = :$PORT" | grep -q .; then
    echo "generate.sh: port $PORT is in use; choose another with PORT=..." >&2
    exit 2
fi
if [[ -e /usr/share/zoneinfo/Asia/Shanghai ]]; then CST=Asia/Shanghai; else CST=CST-8; fi

WORK=$(mktemp -d)
BROKER_PID="" TCPDUMP_PID="" SUB_PID=""
cleanup() {
    local pid
    for pid in "$SUB_PID" "$TCPDUMP_PID" "$BROKER_PID"; do
        [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- message helpers

# Now, in the standard's form: CST, to the second.
ts() { TZ=$CST date '+%F %T'; }
ts_ago() { TZ=$CST date -d "-$1 seconds" '+%F %T'; }

# Request or report envelope (table 1): req TYPE MID PARAM [EXTRA]
# MID or PARAM empty: the field is left out. EXTRA: more envelope fields, "k":v,...
req() {
    local type=$1 mid=$2 param=$3 extra=${4:-} s="{"
    [[ -n $mid ]] && s+="\"mid\":$mid,"
    s+="\"type\":\"$type\",\"timestamp\":\"$(ts)\""
    [[ -n $extra ]] && s+=",$extra"
    [[ -n $param ]] && s+=",\"param\":$param"
    printf '%s}' "$s"
}

# A platform command: a request that expires after 60 s and, when it has a param,
# carries its sign. The standard leaves the signature algorithm open; a SHA-256 of the
# param text stands in.
cmd() {
    local type=$1 mid=$2 param=${3:-} extra=${4:-} more='"expire":60'
    [[ -n $param ]] && more+=",\"sign\":\"$(printf '%s' "$param" | sha256sum | cut -c1-64)\""
    req "$type" "$mid" "$param" "$more${extra:+,$extra}"
}

# Reply envelope (table 2): rep TYPE MID CODE MSG [PARAM]
rep() {
    local type=$1 mid=$2 code=$3 msg=$4 param=${5:-} s
    s="{\"mid\":$mid,\"type\":\"$type\",\"timestamp\":\"$(ts)\",\"code\":$code,\"msg\":\"$msg\""
    [[ -n $param ]] && s+=",\"param\":$param"
    printf '%s}' "$s"
}

PUBLISHED=0
# pub CLIENT_ID TOPIC PAYLOAD: one MQTT connection, one QoS 1 PUBLISH.
pub() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -V "$MQTT_VERSION" -q 1 -i "$1" -t "$2" -m "$3"
    PUBLISHED=$((PUBLISHED + 1))
}
# edge CHANNEL/ROLE PAYLOAD and platform CHANNEL/ROLE PAYLOAD
edge() { pub "edge-$EDGE" "/v1/$EDGE/$1" "$2"; }
platform() { pub platform "/v1/$EDGE/$1" "$2"; }

# ---------------------------------------------------------------- param bodies

DEV='{"devSN":"EG20220625000017","devType":"edgeGateway","devName":"E1","mfgInfo":"Yueqing Power Equipment","devStatus":"online"}'
CPU='{"cpus":4,"frequency":1200,"cache":512,"arch":"armv7l"}'
MEM='{"phy":2048,"virt":4096}'
DISK='{"disk":16384,"limit":80}'
OS='{"distro":"Debian","version":"12","kernel":"6.1.0","softVersion":"2.0.3","patchVersion":"p1"}'
LINKS='[{"name":"eth0","type":"ethernet"},{"name":"ttyS1","type":"rs485"}]'
LINKUP_PARAM="{\"dev\":$DEV,\"cpu\":$CPU,\"mem\":$MEM,\"disk\":$DISK,\"os\":$OS,\"links\":$LINKS}"

# REP_SYS_STATUS and the CMD_SYS_STATUS reply (tables 10-15).
status_param() {
    printf '{"cpuRate":%s,"memUsed":{"phy":41,"virt":12.5},"diskUsed":37.2,"tempValue":46,"devDateTime":"%s","devStDateTime":"%s","devRunTime":10800,"linkState":[{"name":"eth0","status":"up"},{"name":"ttyS1","status":"down"}],"longitude":"120.98","latitude":"28.12"}' \
        "${1:-23.5}" "$(ts)" "$(ts_ago 10800)"
}

FILE_SYS='{"name":"edge-os-2.1.0.img","url":"https://platform.example/files/edge-os-2.1.0.img","size":52428800,"md5":"9e107d9d372bb6826bd81d3542a419d6"}'
FILE_APP='{"name":"meterApp-1.0.0.tar","url":"https://platform.example/files/meterApp-1.0.0.tar","size":2097152,"md5":"e4d909c290d0fb1ca068ffaddf22cbd0"}'
FILE_GATHER='{"name":"gatherApp-1.0.0.tar","url":"https://platform.example/files/gatherApp-1.0.0.tar","size":1048576,"md5":"0cc175b9c0f1b6a831c399e269772661"}'
FILE_APP2='{"name":"meterApp-1.1.0.tar","url":"https://platform.example/files/meterApp-1.1.0.tar","size":2150400,"md5":"d41d8cd98f00b204e9800998ecf8427e"}'

# The short clean session the bad-* scenarios start from, and its pieces.
linkup() {
    edge device/request "$(req EVENT_LINKUP 1 "$LINKUP_PARAM")"
    platform device/response "$(rep EVENT_LINKUP 1 200 SUCCESS)"
}
linkdown() { edge device/data "$(req EVENT_LINKDOWN "" '{"reason":"Reboot OS"}')"; }
sys_status() {
    platform device/command "$(cmd CMD_SYS_STATUS "$1")"
    edge device/reply "$(rep CMD_SYS_STATUS "$1" 200 SUCCESS "$(status_param)")"
}
app_start() {
    platform app/command "$(cmd CMD_APP_START "$1" '{"container":"c1","app":"meterApp"}')"
    edge app/reply "$(rep CMD_APP_START "$1" 200 SUCCESS)"
}
short_session() {
    linkup
    edge device/data "$(req REP_SYS_STATUS "" "$(status_param)")"
    sys_status 1000000000020034
    app_start 1000000000020035
    linkdown
}

# ---------------------------------------------------------------- scenarios

# Every clause of 5.3 and 6, each message type, every field of the tables.
scenario_clean-session() {
    # 6.1.1 access
    linkup
    # 6.1.3 information query, announcing a 2 s status period (table 18)
    platform device/command "$(cmd CMD_INFO_QUERY 1000000000020034)"
    edge device/reply "$(rep CMD_INFO_QUERY 1000000000020034 200 SUCCESS \
        "{\"dev\":$DEV,\"cpu\":$CPU,\"mem\":$MEM,\"disk\":$DISK,\"temperature\":{\"temLow\":-20,\"temHigh\":70},\"os\":$OS,\"links\":$LINKS,\"repPeriod\":{\"devPeriod\":2,\"conPeriod\":60,\"appPeriod\":60}}")"
    # 6.1.3 status reports every 2 s (one with a mid: allowed in reports), status query
    edge device/data "$(req REP_SYS_STATUS "" "$(status_param 23.5)")"
    sleep 2
    edge device/data "$(req REP_SYS_STATUS 17 "$(status_param 24)")"
    sys_status 1000000000020035
    # 6.1.3 alarm and its recovery (table 20)
    edge device/data "$(req EVENT_SYS_ALARM "" '{"event":"1001","msg":"cpu usage 93% over the 90% threshold"}')"
    edge device/data "$(req EVENT_SYS_ALARM "" '{"event":"1002","msg":"cpu usage back to 41%"}')"
    # 6.1.2 system upgrade: 202, two status queries, the job result
    platform device/command "$(cmd CMD_SYS_UPGRADE 1000000000020036 "{\"jobId\":101,\"policy\":0,\"version\":\"2.1.0\",\"upgradeType\":1,\"file\":$FILE_SYS}")"
    edge device/reply "$(rep CMD_SYS_UPGRADE 1000000000020036 202 "upgrade accepted")"
    platform device/command "$(cmd CMD_STATUS_QUERY 1000000000020037 '{"jobId":101}')"
    edge device/reply "$(rep CMD_STATUS_QUERY 1000000000020037 200 SUCCESS '{"progress":35,"state":"2","jobId":101}')"
    platform device/command "$(cmd CMD_STATUS_QUERY 1000000000020038 '{"jobId":101}')"
    edge device/reply "$(rep CMD_STATUS_QUERY 1000000000020038 200 SUCCESS '{"progress":80,"state":"4","jobId":101}')"
    edge device/data "$(req REP_JOB_RESULT "" '{"jobId":101,"result":200,"info":"upgraded to 2.1.0"}')"
    # 6.1.4 end devices: the edge asks, the platform assigns deviceIds
    edge topo/request "$(req CMD_TOPO_ADD 2 '{"deviceInfos":[{"nodeId":"meter-01","name":"Meter 01","description":"feeder 3 energy meter","mfgInfo":"Chint","model":"DTSU666","modelId":"m-dtsu666"},{"nodeId":"meter-02","name":"Meter 02","description":"feeder 4 energy meter","mfgInfo":"Chint","model":"DTSU666"}]}')"
    platform topo/response "$(rep CMD_TOPO_ADD 2 200 SUCCESS '{"data":[{"code":200,"statusDesc":"added","deviceId":"1000000001154323","nodeId":"meter-01","profile":{"modelUrl":"https://platform.example/models/m-dtsu666"}},{"code":200,"statusDesc":"added","deviceId":"1000000001154324","nodeId":"meter-02"}]}')"
    edge topo/request "$(req CMD_TOPO_UPDATE 3 '{"deviceStatuses":[{"deviceId":"1000000001154323","deviceStatus":"ONLINE"},{"deviceId":"1000000001154324","deviceStatus":"OFFLINE"}]}')"
    platform topo/response "$(rep CMD_TOPO_UPDATE 3 200 SUCCESS '{"data":[{"code":200,"statusDesc":"updated","deviceId":"1000000001154323"},{"code":200,"statusDesc":"updated","deviceId":"1000000001154324"}]}')"
    edge topo/request "$(req CMD_TOPO_DEL 4 '{"deviceIds":["1000000001154324"]}')"
    platform topo/response "$(rep CMD_TOPO_DEL 4 200 SUCCESS '{"data":[{"code":200,"statusDesc":"deleted","nodeId":"meter-02","deviceId":"1000000001154324"}]}')"
    # 6.2.1 container with an app: 202, then the job result on container/data
    platform container/command "$(cmd CMD_CON_INSTALL 1000000000020039 "{\"container\":\"c1\",\"image\":{\"name\":\"debian\",\"version\":\"12-slim\"},\"withAPP\":{\"app\":\"gatherApp\",\"version\":\"1.0.0\",\"file\":$FILE_GATHER},\"cfgCpu\":{\"cpus\":1,\"cpuLmt\":50},\"cfgMem\":{\"memory\":512,\"memLmt\":80},\"cfgDisk\":{\"disk\":1024,\"diskLmt\":80},\"port\":\"8080:80,2404:2404\",\"mount\":[\"/data/c1:/data\"],\"dev\":[\"/dev/ttyS1\"],\"jobId\":201,\"policy\":0,\"networkMode\":\"bridge\",\"env\":\"TZ=Asia/Shanghai\"}")"
    edge container/reply "$(rep CMD_CON_INSTALL 1000000000020039 202 "install accepted")"
    edge container/data "$(req REP_JOB_RESULT "" '{"jobId":201,"code":200,"msg":"container c1 installed with gatherApp"}')"
    # 6.2.2 container start
    platform container/command "$(cmd CMD_CON_START 1000000000020040 '{"container":"c1"}')"
    edge container/reply "$(rep CMD_CON_START 1000000000020040 200 SUCCESS)"
    # 6.3.1 app install: 202, then the job result (code/msg) on app/data
    platform app/command "$(cmd CMD_APP_INSTALL 1000000000020041 "{\"jobId\":301,\"policy\":0,\"container\":\"c1\",\"version\":\"1.0.0\",\"file\":$FILE_APP,\"cpu\":{\"cpus\":1,\"cpuLmt\":30},\"mem\":{\"memory\":128,\"memLmt\":50},\"enable\":\"1\",\"app\":\"meterApp\"}")"
    edge app/reply "$(rep CMD_APP_INSTALL 1000000000020041 202 "install accepted")"
    edge app/data "$(req REP_JOB_RESULT "" '{"jobId":301,"code":200,"msg":"meterApp 1.0.0 installed"}')"
    # 6.3.2 app control
    platform app/command "$(cmd CMD_APP_ENABLE 1000000000020042 '{"container":"c1","app":"meterApp"}')"
    edge app/reply "$(rep CMD_APP_ENABLE 1000000000020042 200 SUCCESS)"
    app_start 1000000000020043
    # 6.3.3 app upgrade: 202, then the job result (result/info) on app/data
    platform app/command "$(cmd CMD_APP_UPGRADE 1000000000020044 "{\"version\":\"1.1.0\",\"container\":\"c1\",\"file\":$FILE_APP2,\"jobId\":302,\"policy\":0}" '"app":"meterApp"')"
    edge app/reply "$(rep CMD_APP_UPGRADE 1000000000020044 202 "upgrade accepted")"
    edge app/data "$(req REP_JOB_RESULT "" '{"jobId":302,"result":200,"info":"meterApp upgraded to 1.1.0"}')"
    platform app/command "$(cmd CMD_APP_STOP 1000000000020045 '{"container":"c1","app":"meterApp"}')"
    edge app/reply "$(rep CMD_APP_STOP 1000000000020045 200 SUCCESS)"
    platform app/command "$(cmd CMD_APP_UNENABLE 1000000000020046 '{"container":"c1","app":"meterApp"}')"
    edge app/reply "$(rep CMD_APP_UNENABLE 1000000000020046 200 SUCCESS)"
    platform app/command "$(cmd CMD_APP_REMOVE 1000000000020047 '{"container":"c1","app":"meterApp"}')"
    edge app/reply "$(rep CMD_APP_REMOVE 1000000000020047 200 SUCCESS)"
    # 6.2.3, 6.2.4 container stop and removal
    platform container/command "$(cmd CMD_CON_STOP 1000000000020048 '{"container":"c1"}')"
    edge container/reply "$(rep CMD_CON_STOP 1000000000020048 200 SUCCESS)"
    platform container/command "$(cmd CMD_CON_REMOVE 1000000000020049 '{"container":"c1"}')"
    edge container/reply "$(rep CMD_CON_REMOVE 1000000000020049 200 SUCCESS)"
    # 6.1.1 the edge goes offline
    linkdown
}

# Schema (tables 10 and 36): a required field missing, a field of the wrong JSON type.
scenario_bad-schema() {
    linkup
    # REP_SYS_STATUS without tempValue (table 10: required).
    edge device/data "$(req REP_SYS_STATUS "" "$(status_param | sed 's/"tempValue":46,//')")"
    sys_status 1000000000020034
    # CMD_CON_START with container as a number (table 36: string). The edge rightly
    # refuses it (400), so no pairing finding follows.
    platform container/command "$(cmd CMD_CON_START 1000000000020035 '{"container":1}')"
    edge container/reply "$(rep CMD_CON_START 1000000000020035 400 "param.container must be a string")"
    app_start 1000000000020036
    linkdown
}

# Pairing: a command never answered, a reply with the wrong code, a reply with a wrong mid.
scenario_bad-pairing() {
    linkup
    edge device/data "$(req REP_SYS_STATUS "" "$(status_param)")"
    sys_status 1000000000020034
    # CMD_CON_START answered 202 (6.2.2.2: code 200).
    platform container/command "$(cmd CMD_CON_START 1000000000020035 '{"container":"c1"}')"
    edge container/reply "$(rep CMD_CON_START 1000000000020035 202 "starting")"
    # CMD_CON_STOP never answered.
    platform container/command "$(cmd CMD_CON_STOP 1000000000020036 '{"container":"c1"}')"
    # A CMD_SYS_STATUS answered with a wrong mid: the reply matches no request, and
    # the request none (a reply to a mid never asked, with nothing open that it could
    # answer, may answer a command sent before the capture: not judged).
    platform device/command "$(cmd CMD_SYS_STATUS 1000000000020037)"
    edge device/reply "$(rep CMD_SYS_STATUS 1000000000029999 200 SUCCESS "$(status_param)")"
    app_start 1000000000020038
    linkdown
}

# Sequences: before EVENT_LINKUP, after EVENT_LINKDOWN, a 202 job without its result,
# upgrade progress going back.
scenario_bad-sequence() {
    edge device/data "$(req REP_SYS_STATUS "" "$(status_param)")"
    linkup
    sys_status 1000000000020034
    platform device/command "$(cmd CMD_SYS_UPGRADE 1000000000020035 "{\"jobId\":101,\"policy\":0,\"version\":\"2.1.0\",\"upgradeType\":0,\"file\":$FILE_SYS}")"
    edge device/reply "$(rep CMD_SYS_UPGRADE 1000000000020035 202 "upgrade accepted")"
    platform device/command "$(cmd CMD_STATUS_QUERY 1000000000020036 '{"jobId":101}')"
    edge device/reply "$(rep CMD_STATUS_QUERY 1000000000020036 200 SUCCESS '{"progress":60,"state":"2","jobId":101}')"
    platform device/command "$(cmd CMD_STATUS_QUERY 1000000000020037 '{"jobId":101}')"
    edge device/reply "$(rep CMD_STATUS_QUERY 1000000000020037 200 SUCCESS '{"progress":40,"state":"2","jobId":101}')"
    app_start 1000000000020038
    linkdown
    edge device/data "$(req REP_SYS_STATUS "" "$(status_param)")"
}

# Envelope (5.3): integer timestamp, string mid, "type " key, topic without its leading
# slash, a payload that is not JSON.
scenario_bad-envelope() {
    linkup
    # timestamp as epoch seconds
    edge device/data "{\"type\":\"REP_SYS_STATUS\",\"timestamp\":$(date +%s),\"param\":$(status_param)}"
    # the reply's mid as a string
    platform device/command "$(cmd CMD_SYS_STATUS 1000000000020034)"
    edge device/reply "{\"mid\":\"1000000000020034\",\"type\":\"CMD_SYS_STATUS\",\"timestamp\":\"$(ts)\",\"code\":200,\"msg\":\"SUCCESS\",\"param\":$(status_param)}"
    # "type " with a trailing space
    edge device/data "{\"type \":\"EVENT_SYS_ALARM\",\"timestamp\":\"$(ts)\",\"param\":{\"event\":\"1005\",\"msg\":\"disk usage 91% over the 90% threshold\"}}"
    # the reply on v1/E1/device/reply, as the standard's own 6.1.3.1.5 writes it
    platform device/command "$(cmd CMD_INFO_QUERY 1000000000020035)"
    pub "edge-$EDGE" "v1/$EDGE/device/reply" "$(rep CMD_INFO_QUERY 1000000000020035 200 SUCCESS \
        "{\"dev\":$DEV,\"cpu\":$CPU,\"mem\":$MEM,\"disk\":$DISK,\"os\":$OS,\"links\":$LINKS}")"
    # a status report cut short: not JSON
    edge device/data "{\"type\":\"REP_SYS_STATUS\",\"timestamp\":\"$(ts)\",\"param\":{\"cpuRate\":23.5,\"memUsed\":{\"phy\":41"
    app_start 1000000000020036
    linkdown
}

scenario_mqtt31() { short_session; }
scenario_mqtt5() { short_session; }

mqtt_version_of() {
    case $1 in
        mqtt31) echo mqttv31 ;;
        mqtt5) echo mqttv5 ;;
        *) echo mqttv311 ;;
    esac
}

# ---------------------------------------------------------------- one capture

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$(($1 * 10)) what=$2 i
    shift 2
    for ((i = 0; i < limit; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    echo "generate.sh: timed out waiting for $what" >&2
    return 1
}

capture() {
    local name=$1 file="$OUT/$1.pcap" lines
    MQTT_VERSION=$(mqtt_version_of "$name")
    PUBLISHED=0
    rm -f "$WORK"/*
    cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
persistence false
user root
log_dest file $WORK/mosquitto.log
log_type all
EOF
    mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.stderr" 2>&1 &
    BROKER_PID=$!
    wait_for 10 "the broker" grep -qs "Opening ipv4 listen socket on port $PORT" "$WORK/mosquitto.log" 2>/dev/null

    rm -f "$file"
    tcpdump -i lo -U --immediate-mode -Z root -w "$file" "tcp port $PORT" 2>"$WORK/tcpdump.err" &
    TCPDUMP_PID=$!
    wait_for 10 "tcpdump" grep -qs "listening on" "$WORK/tcpdump.err"
    wait_for 10 "$file" test -e "$file"
    sleep 0.5

    mosquitto_sub -h 127.0.0.1 -p "$PORT" -V "$MQTT_VERSION" -q 1 -i observer -t '/v1/#' -t 'v1/#' -v \
        >"$WORK/sub.out" &
    SUB_PID=$!
    wait_for 10 "the subscriber" grep -q "Sending SUBACK to observer" "$WORK/mosquitto.log"

    "scenario_$name"

    # Every message must have reached the subscriber: both legs are in the capture.
    count_lines() { lines=$(wc -l <"$WORK/sub.out"); ((lines >= PUBLISHED)); }
    wait_for 10 "$PUBLISHED deliveries to the subscriber" count_lines
    kill -INT "$SUB_PID"
    wait "$SUB_PID" || true
    SUB_PID=""
    sleep 0.3
    kill -INT "$TCPDUMP_PID"
    wait "$TCPDUMP_PID" || true
    TCPDUMP_PID=""
    kill "$BROKER_PID"
    wait "$BROKER_PID" || true
    BROKER_PID=""
    # Both legs of every message must be in the file (tshark is optional here).
    if command -v tshark >/dev/null; then
        local legs
        legs=$(tshark -r "$file" -d "tcp.port==$PORT,mqtt" -T fields -e mqtt.msgtype 2>/dev/null | tr ',' '\n' | grep -c '^3$' || true)
        if ((legs != 2 * PUBLISHED)); then
            echo "generate.sh: $file holds $legs PUBLISH packets, expected $((2 * PUBLISHED))" >&2
            exit 1
        fi
    fi
    printf '%-14s %-9s %3d messages, %7d bytes  %s\n' "$name" "$MQTT_VERSION" "$PUBLISHED" \
        "$(stat -c %s "$file")" "$file"
}

scenarios=("$@")
[[ ${#scenarios[@]} -eq 0 ]] && scenarios=("${ALL_SCENARIOS[@]}")
for s in "${scenarios[@]}"; do
    declare -F "scenario_$s" >/dev/null || { echo "generate.sh: unknown scenario $s (known: ${ALL_SCENARIOS[*]})" >&2; exit 2; }
done
for s in "${scenarios[@]}"; do
    capture "$s"
done
