"""Generates tests/rule_cases/{rule-id}.json, one file per rule id.

Run from the repository root:  python3 tests/rule_cases/_generator/gen_cases.py
(writes into tests/rule_cases/; the JSON files are the source of truth for the runner,
this script only keeps the 300-odd sessions consistent). A sequence finding such as
topo.unknown_device does not make a request invalid, so a 200 answer to it is no
reply.success_to_invalid."""
import json, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from fixtures import *

R = {}


def rule(rid):
    def deco(fn):
        R[rid] = fn
        return fn
    return deco


# ---------------------------------------------------------------- flows
def upgrade_flow(s, t0, param=UPGRADE, query=True, result=UPGRADE_RESULT):
    s.command(t0, "CMD_SYS_UPGRADE", param, code=202)
    if query:
        s.command(t0 + 2, "CMD_STATUS_QUERY", {"jobId": param["jobId"]}, reply_param=m(STATUS_REPLY, jobId=param["jobId"]))
    if result is not None:
        s.report(t0 + 5, "device", "REP_JOB_RESULT", result)
    return s


def con_install_flow(s, t0, param=CON_INSTALL, result=CON_RESULT):
    s.command(t0, "CMD_CON_INSTALL", param, code=202)
    s.report(t0 + 3, "container", "REP_JOB_RESULT", result)
    return s


def app_install_flow(s, t0, param=APP_INSTALL, result=APP_RESULT):
    s.command(t0, "CMD_APP_INSTALL", param, code=202)
    s.report(t0 + 3, "app", "REP_JOB_RESULT", result)
    return s


def app_upgrade_flow(s, t0, param=APP_UPGRADE, result=APP_UPG_RESULT):
    s.command(t0, "CMD_APP_UPGRADE", param, code=202)
    s.report(t0 + 3, "app", "REP_JOB_RESULT", result)
    return s


def rejected_cmd(typ, param, code=400, **kw):
    s = S()
    s.command(1.0, typ, param, code=code, msg="invalid param", **kw)
    return s


def rejected_edge_request(typ, param, code=400, linkup=True):
    s = S(linkup=linkup)
    if typ == "EVENT_LINKUP":
        s.edge_request(0.0, typ, param, code=code, msg="invalid param")
    else:
        s.edge_request(1.0, typ, param, code=code, msg="invalid param")
    return s


def topo_cycle(s, t0):
    s.edge_request(t0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
    s.edge_request(t0 + 2, "CMD_TOPO_UPDATE", TOPO_UPD, reply_param=TOPO_UPD_REPLY)
    s.edge_request(t0 + 4, "CMD_TOPO_DEL", TOPO_DEL, reply_param=TOPO_DEL_REPLY)
    return s


def clean_session():
    s = S()
    s.report(1.0, "device", "REP_SYS_STATUS", sys_status(1))
    s.command(2.0, "CMD_SYS_STATUS", None, reply_param=sys_status(2))
    return s


LONG = "x" * 257
OK256 = "y" * 256

# ================================================================ 5-format
@rule("mqtt.malformed")
def _():
    s1 = S().hex(1.0, "edge", "36070003612f626869")  # PUBLISH with QoS 3 (flags 0110): malformed
    s2 = S().hex(1.0, "platform", "36070003612f626869")
    s3 = S().hex(1.0, "edge", publish_hex("/v1/E1/device/data", json.dumps(
        S.envelope(1, "REP_SYS_STATUS", sys_status(1))).encode())).hex(2.0, "edge", "c000")
    return [case("PUBLISH with QoS 3 from the edge triggers", s1, {"mqtt.malformed": 1}),
            case("PUBLISH with QoS 3 from the platform triggers", s2, {"mqtt.malformed": 1}),
            case("well-formed raw PUBLISH and PINGREQ stay silent", s3)]


@rule("mqtt.oversized")
def _():
    # remaining length 0xff 0xff 0xff 0x7f = 268,435,455 bytes announced, body never sent
    big = sys_status(1)
    big["linkState"] = [{"name": f"eth{i}", "status": "up"} for i in range(300)]
    s2 = S().report(1.0, "device", "REP_SYS_STATUS", big)
    # The trigger needs a packet-size limit below MQTT's own maximum (Settings::max_packet);
    # tests/pipeline.rs covers it. A large, well-formed packet must stay silent.
    return [case("a 9 kB report stays silent", s2)]


@rule("capture.gap")
def _():
    # A live connection through the broker never loses bytes: this rule can only be
    # triggered from a capture (pcap) with TCP loss; the case format cannot express that.
    return [case("a complete stream stays silent", clean_session())]


@rule("capture.bad_frame")
def _():
    # A link/IP/TCP frame the capture reader cannot read exists only in a pcap; the
    # case format feeds MQTT bytes on open connections and cannot express it.
    return [case("readable frames stay silent", clean_session())]


@rule("capture.not_decodable")
def _():
    # info rule about a TLS or non-MQTT flow; the runner's connections are MQTT by construction.
    return [case("plain MQTT connections stay silent", clean_session())]


@rule("payload.invalid_json")
def _():
    s1 = S().raw_text(1.0, "edge", "/v1/E1/device/data",
                      '{"type": "REP_SYS_STATUS", "timestamp": "2026-11-26 10:00:01", "param": {"cpuRate": 35')
    s2 = S().raw_text(1.0, "platform", "/v1/E1/device/command",
                      "{mid: 1000000000020034, type: 'CMD_SYS_STATUS', timestamp: '2026-11-26 10:00:01'}")
    return [case("truncated JSON from the edge triggers", s1, {"payload.invalid_json": 1}),
            case("unquoted keys from the platform trigger", s2, {"payload.invalid_json": 1}),
            case("valid JSON stays silent", clean_session())]


@rule("payload.not_object")
def _():
    s1 = S().raw(1.0, "edge", "/v1/E1/device/data", [1, 2, 3]).raw(2.0, "edge", "/v1/E1/device/data", "REP_SYS_STATUS")
    return [case("a JSON array and a JSON string trigger twice", s1, {"payload.not_object": 2}),
            case("JSON objects stay silent", clean_session())]


@rule("envelope.key_whitespace")
def _():
    p1 = S.envelope(1, "EVENT_SYS_ALARM", ALARM)
    p1 = {("type " if k == "type" else k): v for k, v in p1.items()}
    s1 = S().raw(1.0, "edge", "/v1/E1/device/data", p1)
    p2 = S.envelope(1, "EVENT_SYS_ALARM", None)
    p2["param"] = {"event": "1001", " msg": ALARM["msg"]}
    s2 = S().raw(1.0, "edge", "/v1/E1/device/data", p2)
    s3 = S().report(1.0, "device", "EVENT_SYS_ALARM", ALARM)
    return [case("top-level key \"type \" triggers and is read as type", s1, {"envelope.key_whitespace": 1}),
            case("param key \" msg\" is not an envelope key: only naming.key reports it", s2, {"naming.key": 1}),
            case("trimmed keys stay silent", s3)]


@rule("topic.missing_slash")
def _():
    s1 = S().raw(1.0, "edge", "v1/E1/device/data", S.envelope(1, "REP_SYS_STATUS", sys_status(1)))
    s2 = S()
    s2.raw(1.0, "platform", "v1/E1/device/command", S.envelope(1, "CMD_SYS_STATUS", None, 1000000000020099))
    s2.raw(1.5, "edge", "v1/E1/device/reply", S.reply_env(1, "CMD_SYS_STATUS", 1000000000020099, 200, sys_status(1)))
    return [case("report on v1/E1/device/data triggers", s1, {"topic.missing_slash": 1}),
            case("command and reply without the slash (as in 6.1.3.1.2) trigger twice and still pair",
                 s2, {"topic.missing_slash": 2}),
            case("/v1/... topics stay silent", clean_session())]


@rule("topic.placeholder")
def _():
    s1 = S(edge="${edgeId}")
    return [case("linkup and its reply on /v1/${edgeId}/... trigger twice, the 200 is no success_to_invalid", s1,
                 {"topic.placeholder": 2}),
            case("a real edge id stays silent", clean_session())]


@rule("topic.mismatch")
def _():
    s1 = S().report(1.0, "app", "REP_SYS_STATUS", sys_status(1))
    s2 = S().report(1.0, "container", "EVENT_SYS_ALARM", ALARM)
    return [case("REP_SYS_STATUS on app/data triggers", s1, {"topic.mismatch": 1}),
            case("EVENT_SYS_ALARM on container/data triggers", s2, {"topic.mismatch": 1}),
            case("every type on its own topic stays silent", topo_cycle(clean_session(), 5.0))]


@rule("type.unknown")
def _():
    s1 = S().report(1.0, "device", "REP_VENDOR_STAT", {"fanSpeed": 1200})
    return [case("a vendor type on device/data triggers (info)", s1, {"type.unknown": 1}),
            case("standard types stay silent", clean_session())]


@rule("envelope.request")
def _():
    out = []
    s = S().raw(1.0, "edge", "/v1/E1/device/data", S.envelope(1, "REP_SYS_STATUS", sys_status(1)) | {"timestamp": "2026/11/26 10:00:01"})
    out.append(case("timestamp in yyyy/MM/dd triggers", s, {"envelope.request": 1}))
    s = S().raw(1.0, "edge", "/v1/E1/device/data", S.envelope(1, "EVENT_SYS_ALARM", ALARM) | {"timestamp": "2026-02-30 10:00:01"})
    out.append(case("timestamp 2026-02-30 (no such day) triggers", s, {"envelope.request": 1}))
    p = S.envelope(1, "EVENT_SYS_ALARM", ALARM)
    del p["timestamp"]
    s = S().raw(1.0, "edge", "/v1/E1/device/data", p)
    out.append(case("missing timestamp triggers", s, {"envelope.request": 1}))
    s = S().raw(1.0, "edge", "/v1/E1/device/data", {"mid": "17"} | S.envelope(1, "REP_SYS_STATUS", sys_status(1)))
    out.append(case("mid as a string in a report triggers", s, {"envelope.request": 1}))
    s = S().raw(1.0, "edge", "/v1/E1/device/data", S.envelope(1, "EVENT_SYS_ALARM", ALARM) | {"param": "1001"})
    out.append(case("param as a string triggers", s, {"envelope.request": 1},
                    allow=["t19.EVENT_SYS_ALARM", "t20.EVENT_SYS_ALARM.event"]))
    s = rejected_cmd("CMD_CON_START", CON, req_extra={"expire": "60"})
    out.append(case("expire as a string in a command, answered 400, triggers once", s, {"envelope.request": 1}))
    s = S()
    s.command(1.0, "CMD_CON_START", CON, req_extra={"expire": -1, "deviceId": "E1", "sign": "3f8a9c"})
    s.command(3.0, "CMD_APP_START", APP_CTRL, req_extra={"expire": 60, "app": "meterApp"})
    s.report(5.0, "device", "REP_SYS_STATUS", sys_status(5))
    s.report(6.0, "device", "EVENT_SYS_ALARM", ALARM, mid=7)
    out.append(case("64-bit mids, expire -1/60, app, deviceId, sign, report without mid stay silent", s))
    return out


@rule("envelope.request_mid")
def _():
    s1 = S().command(1.0, "CMD_CON_START", CON, answer=False, mid=None)
    s1.msgs[-1]["payload"].pop("mid")
    s2 = S()
    s2.raw(1.0, "edge", "/v1/E1/topo/request", S.envelope(1, "CMD_TOPO_ADD", TOPO_ADD))
    # A request without mid cannot be answered (a reply needs the mid): only request_mid reports it.
    return [case("CMD_CON_START without mid triggers", s1, {"envelope.request_mid": 1}),
            case("CMD_TOPO_ADD without mid triggers", s2, {"envelope.request_mid": 1}),
            case("requests with mid and reports without stay silent", clean_session())]


@rule("envelope.reply")
def _():
    out = []
    s = S().command(1.0, "CMD_CON_START", CON, msg=LONG)
    out.append(case("msg of 257 characters triggers", s, {"envelope.reply": 1}))
    s = S().command(1.0, "CMD_CON_START", CON, reply_extra={"timestamp": "26-11-2026 10:00:01"})
    out.append(case("reply timestamp dd-MM-yyyy triggers", s, {"envelope.reply": 1}))
    s = S().command(1.0, "CMD_CON_START", CON)
    s.msgs[-1]["payload"].pop("code")
    out.append(case("reply without code triggers", s, {"envelope.reply": 1}))
    s = S().command(1.0, "CMD_CON_START", CON, code=201)
    out.append(case("code 201 (not in table 3) triggers, once (not also reply.code)", s, {"envelope.reply": 1}))
    s = S().command(1.0, "CMD_CON_START", CON, msg=OK256, reply_extra={"deviceId": "E1"})
    s.command(3.0, "CMD_CON_STOP", CON, msg="SUCCESS")
    out.append(case("msg of exactly 256 characters and deviceId stay silent", s))
    return out


@rule("naming.type")
def _():
    s1 = S().report(1.0, "device", "rep_vendor_status", {"fanSpeed": 1200})
    s2 = S().report(1.0, "device", "SYS_STATUS_REP", {"fanSpeed": 1200})
    s3 = S().report(1.0, "device", "REP_SYS-STAT", {"fanSpeed": 1200})
    s4 = clean_session()
    s4.report(5.0, "device", "REP_VENDOR_STAT", {"fanSpeed": 1200})
    return [case("lower-case type triggers", s1, {"naming.type": 1}),
            case("report type not starting with EVENT_/REP_ triggers", s2, {"naming.type": 1}),
            case("words separated by '-' trigger", s3, {"naming.type": 1}),
            case("well-named standard and vendor types stay silent", s4)]


@rule("naming.type_word_length")
def _():
    s1 = S().report(1.0, "device", "REP_VENDORSTATUS", {"fanSpeed": 1200})
    s2 = S().report(1.0, "device", "REP_VENDOR_STAT", {"fanSpeed": 1200})
    s2.report(2.0, "device", "EVENT_LINKDOWN", {"reason": "Reboot OS"})
    return [case("word VENDORSTATUS (12 characters) triggers", s1, {"naming.type_word_length": 1}),
            case("words of at most 10 characters stay silent", s2)]


@rule("naming.key")
def _():
    s1 = S().report(1.0, "device", "EVENT_SYS_ALARM", ALARM | {"alarm_level": "1"})
    st = sys_status(1)
    st["memUsed"] = {"phy": 42, "Virt": 10}
    s2 = S().report(1.0, "device", "REP_SYS_STATUS", st)
    s3 = con_install_flow(S(), 1.0)
    s3.report(6.0, "device", "REP_SYS_STATUS", sys_status(6))
    return [case("snake_case param key triggers", s1, {"naming.key": 1}),
            case("nested key \"Virt\" triggers", s2, {"naming.key": 1}),
            case("camelCase keys (withAPP, devSN, cfgCpu) stay silent", s3)]


@rule("message.expired")
def _():
    s1 = S().raw(30.0, "edge", "/v1/E1/device/data", S.envelope(5, "EVENT_SYS_ALARM", ALARM) | {"expire": 10})
    s2 = S()
    s2.raw(30.0, "edge", "/v1/E1/device/data", S.envelope(30, "EVENT_SYS_ALARM", ALARM) | {"expire": 60})
    s2.raw(40.0, "edge", "/v1/E1/device/data", S.envelope(2, "EVENT_SYS_ALARM", m(ALARM, event="1002")) | {"expire": -1})
    return [case("alarm stamped 10:00:05 with expire 10, seen at 10:00:30, triggers", s1, {"message.expired": 1}),
            case("expire 60 seen in time and expire -1 stay silent", s2)]


@rule("reply.missing")
def _():
    s1 = S().command(1.0, "CMD_CON_START", CON, answer=False)
    s2 = S()
    s2.edge_request(1.0, "CMD_TOPO_ADD", TOPO_ADD, answer=False)
    s3 = S(linkup=False)
    s3.edge_request(0.0, "EVENT_LINKUP", LINKUP, answer=False)
    return [case("unanswered CMD_CON_START triggers", s1, {"reply.missing": 1}),
            case("unanswered CMD_TOPO_ADD (the platform must answer) triggers", s2, {"reply.missing": 1}),
            case("unanswered EVENT_LINKUP triggers", s3, {"reply.missing": 1}),
            case("answered requests stay silent", topo_cycle(clean_session(), 5.0))]


@rule("reply.late")
def _():
    s1 = S().command(1.0, "CMD_CON_START", CON, dt=31.0)
    s2 = S().command(1.0, "CMD_CON_START", CON, dt=29.0)
    return [case("reply after 31 s triggers", s1, {"reply.late": 1}),
            case("reply after 29 s stays silent", s2)]


@rule("reply.duplicate")
def _():
    s1 = S()
    mid = s1.command(1.0, "CMD_CON_START", CON).last_mid
    s1.raw(2.5, "edge", "/v1/E1/container/reply", S.reply_env(2, "CMD_CON_START", mid, 200))
    return [case("second reply to one mid triggers", s1, {"reply.duplicate": 1}),
            case("one reply per request stays silent", S().command(1.0, "CMD_CON_START", CON))]


@rule("reply.orphan")
def _():
    s1 = S().raw(1.0, "edge", "/v1/E1/container/reply", S.reply_env(1, "CMD_CON_START", 999999, 200))
    s2 = S().raw(1.0, "platform", "/v1/E1/topo/response", S.reply_env(1, "CMD_TOPO_ADD", 77, 200, TOPO_ADD_REPLY))
    return [case("edge reply to no command triggers", s1, {"reply.orphan": 1}),
            case("platform topo response to no request triggers", s2, {"reply.orphan": 1}),
            case("replies to seen requests stay silent", topo_cycle(clean_session(), 5.0))]


@rule("reply.type")
def _():
    s1 = S().command(1.0, "CMD_CON_START", CON, reply_type="CMD_CON_STOP")
    return [case("CMD_CON_START answered as CMD_CON_STOP triggers", s1, {"reply.type": 1}),
            case("same type stays silent", S().command(1.0, "CMD_CON_START", CON))]


@rule("reply.code")
def _():
    s1 = S().command(1.0, "CMD_SYS_UPGRADE", UPGRADE, code=200)
    s2 = S().command(1.0, "CMD_CON_INSTALL", CON_INSTALL, code=200)
    s3 = S().command(1.0, "CMD_CON_START", CON, code=202)
    s4 = S().command(1.0, "CMD_APP_INSTALL", APP_INSTALL, code=200)
    s5 = con_install_flow(S(), 1.0)
    s6 = S().command(1.0, "CMD_CON_INSTALL", CON_INSTALL_EMPTY, code=200)
    s7 = con_install_flow(S(), 1.0, CON_INSTALL_EMPTY, m(CON_RESULT, jobId=201))
    s8 = rejected_cmd("CMD_CON_START", {})
    return [case("CMD_SYS_UPGRADE answered 200 instead of 202 triggers", s1, {"reply.code": 1}),
            case("CMD_CON_INSTALL with withAPP answered 200 triggers", s2, {"reply.code": 1}),
            case("CMD_CON_START answered 202 triggers", s3, {"reply.code": 1}),
            case("CMD_APP_INSTALL answered 200 triggers", s4, {"reply.code": 1}),
            case("CMD_CON_INSTALL with withAPP: 202 then a job result stays silent", s5),
            case("CMD_CON_INSTALL without withAPP: 200 and no job result stays silent", s6),
            case("CMD_CON_INSTALL without withAPP: 202 then a job result stays silent (defect 8)", s7),
            case("an invalid request answered 400 is not a reply.code finding", s8, {"t36.CMD_CON_START": 1}),
            case("every type answered with its code stays silent",
                 app_upgrade_flow(app_install_flow(upgrade_flow(topo_cycle(clean_session(), 5.0), 12.0), 20.0), 25.0))]


@rule("reply.success_to_invalid")
def _():
    s1 = S().command(1.0, "CMD_CON_START", {}, code=200)
    s2 = upgrade_flow(S(), 1.0, m(UPGRADE, version=None), query=False)
    s3 = S(linkup=False)
    s3.linkup(0.0, m(LINKUP, dev=m(DEV, devSN=None)))
    s4 = S().command(1.0, "CMD_CON_START", CON, req_extra={"timestamp": "2026-11-26 10:00"})
    s5 = S()
    s5.edge_request(1.0, "CMD_TOPO_ADD", {"deviceInfos": []}, code=200)
    s6 = rejected_cmd("CMD_CON_START", {})
    s7 = S().command(1.0, "CMD_CON_START", CON)
    return [case("CMD_CON_START without container answered 200 triggers", s1,
                 {"t36.CMD_CON_START": 1, "reply.success_to_invalid": 1}),
            case("CMD_SYS_UPGRADE without version answered 202 (then its result) triggers", s2,
                 {"t6.CMD_SYS_UPGRADE": 1, "reply.success_to_invalid": 1}),
            case("EVENT_LINKUP without dev.devSN answered 200 triggers", s3,
                 {"t4.EVENT_LINKUP": 1, "reply.success_to_invalid": 1}),
            case("command with a bad envelope timestamp answered 200 triggers", s4,
                 {"envelope.request": 1, "reply.success_to_invalid": 1}),
            case("CMD_TOPO_ADD with an empty list answered 200 by the platform triggers", s5,
                 {"t23.CMD_TOPO_ADD": 1, "reply.success_to_invalid": 1}),
            case("invalid request answered 400 stays silent", s6, {"t36.CMD_CON_START": 1}),
            case("valid request answered 200 stays silent", s7)]


@rule("reply.error_to_valid")
def _():
    s1 = S().command(1.0, "CMD_CON_START", CON, code=400, msg="refused")
    s2 = S()
    s2.edge_request(1.0, "CMD_TOPO_ADD", TOPO_ADD, code=403)
    s3 = S().command(1.0, "CMD_SYS_UPGRADE", UPGRADE, code=600, msg="busy")
    s4 = rejected_cmd("CMD_CON_START", {})
    s5 = rejected_cmd("CMD_SYS_UPGRADE", m(UPGRADE, upgradeType=3), code=404)
    return [case("valid CMD_CON_START answered 400 triggers", s1, {"reply.error_to_valid": 1}),
            case("valid CMD_TOPO_ADD answered 403 by the platform triggers", s2, {"reply.error_to_valid": 1}),
            case("valid CMD_SYS_UPGRADE answered 600 triggers (no job result expected)", s3, {"reply.error_to_valid": 1}),
            case("invalid CMD_CON_START answered 400 stays silent", s4, {"t36.CMD_CON_START": 1}),
            case("invalid CMD_SYS_UPGRADE answered 404 stays silent", s5, {"t6.CMD_SYS_UPGRADE": 1}),
            case("valid requests answered with success stay silent", clean_session())]


# ================================================================ 6-sequences
@rule("seq.linkup_first")
def _():
    s1 = S(linkup=False)
    s1.report(0.0, "device", "REP_SYS_STATUS", sys_status(0))
    s1.linkup(1.0)
    s2 = S(linkup=False)
    s2.edge_request(0.0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
    s2.linkup(1.0)
    return [case("REP_SYS_STATUS before EVENT_LINKUP triggers", s1, {"seq.linkup_first": 1}),
            case("CMD_TOPO_ADD before EVENT_LINKUP triggers", s2, {"seq.linkup_first": 1}),
            case("EVENT_LINKUP first stays silent", clean_session())]


@rule("seq.after_linkdown")
def _():
    s1 = S().report(5.0, "device", "EVENT_LINKDOWN", {"reason": "Restart Link"})
    s1.report(10.0, "device", "REP_SYS_STATUS", sys_status(10))
    s2 = S().report(5.0, "device", "EVENT_LINKDOWN", {"reason": "Restart Link"})
    s2.linkup(20.0)
    s2.report(25.0, "device", "REP_SYS_STATUS", sys_status(25))
    return [case("REP_SYS_STATUS after EVENT_LINKDOWN triggers", s1, {"seq.after_linkdown": 1}),
            case("a new EVENT_LINKUP after EVENT_LINKDOWN stays silent", s2)]


@rule("job.result_missing")
def _():
    s1 = upgrade_flow(S(), 1.0, result=None)
    s2 = S().command(1.0, "CMD_CON_INSTALL", CON_INSTALL_EMPTY, code=202)
    s3 = S().command(1.0, "CMD_APP_UPGRADE", APP_UPGRADE, code=202)
    s4 = upgrade_flow(S(), 1.0)
    s4.command(10.0, "CMD_CON_INSTALL", CON_INSTALL_EMPTY, code=200)
    app_install_flow(s4, 12.0)
    return [case("CMD_SYS_UPGRADE accepted 202 without result triggers", s1, {"job.result_missing": 1}),
            case("CMD_CON_INSTALL (no withAPP) accepted 202 without result triggers", s2, {"job.result_missing": 1}),
            case("CMD_APP_UPGRADE accepted 202 without result triggers", s3, {"job.result_missing": 1}),
            case("results after every 202, none after 200, stay silent", s4)]


@rule("job.result_duplicate")
def _():
    s1 = upgrade_flow(S(), 1.0)
    s1.report(8.0, "device", "REP_JOB_RESULT", UPGRADE_RESULT)
    return [case("second result for one job triggers", s1, {"job.result_duplicate": 1}),
            case("one result stays silent", upgrade_flow(S(), 1.0))]


@rule("job.result_early")
def _():
    s1 = S()
    s1.command(1.0, "CMD_APP_INSTALL", APP_INSTALL, code=202, dt=1.0)
    s1.msgs.insert(len(s1.msgs) - 1, {"t": 1.5, "from": "edge", "topic": "/v1/E1/app/data",
                                      "payload": S.envelope(1, "REP_JOB_RESULT", APP_RESULT)})
    return [case("app install result before the 202 reply triggers", s1, {"job.result_early": 1}),
            case("result after the reply stays silent", app_install_flow(S(), 1.0))]


@rule("job.result_orphan")
def _():
    s1 = S().report(1.0, "device", "REP_JOB_RESULT", m(UPGRADE_RESULT, jobId=999))
    return [case("result for an unknown job triggers", s1, {"job.result_orphan": 1}),
            case("result for an opened job stays silent", upgrade_flow(S(), 1.0))]


@rule("job.result_channel")
def _():
    s1 = upgrade_flow(S(), 1.0, query=False, result=None)
    s1.report(6.0, "app", "REP_JOB_RESULT", UPGRADE_RESULT)
    s2 = S().command(1.0, "CMD_CON_INSTALL", CON_INSTALL, code=202)
    s2.report(4.0, "app", "REP_JOB_RESULT", CON_RESULT)
    s3 = app_upgrade_flow(con_install_flow(upgrade_flow(S(), 1.0), 10.0), 15.0)
    return [case("device upgrade result on app/data triggers", s1, {"job.result_channel": 1}),
            case("container install result on app/data triggers", s2, {"job.result_channel": 1}),
            case("results on device/, container/, app/data stay silent", s3)]


@rule("job.status_mismatch")
def _():
    s1 = S().command(1.0, "CMD_SYS_UPGRADE", UPGRADE, code=202)
    s1.command(3.0, "CMD_STATUS_QUERY", STATUS_QUERY, reply_param=m(STATUS_REPLY, jobId=101))
    s1.report(6.0, "device", "REP_JOB_RESULT", UPGRADE_RESULT)
    return [case("reply jobId 101 to a query of job 100 triggers", s1, {"job.status_mismatch": 1}),
            case("reply with the queried jobId stays silent", upgrade_flow(S(), 1.0))]


@rule("job.status_regress")
def _():
    def run(states):
        s = S().command(1.0, "CMD_SYS_UPGRADE", UPGRADE, code=202)
        t = 3.0
        for prog, st in states:
            s.command(t, "CMD_STATUS_QUERY", STATUS_QUERY, reply_param=m(STATUS_REPLY, progress=prog, state=st))
            t += 2
        s.report(t + 1, "device", "REP_JOB_RESULT", UPGRADE_RESULT)
        return s
    return [case("progress 60 then 30 triggers", run([(60, "2"), (30, "2")]), {"job.status_regress": 1}),
            case("state \"3\" then \"2\" triggers", run([(50, "3"), (50, "2")]), {"job.status_regress": 1}),
            case("progress and state rising stay silent", run([(0, "1"), (30, "2"), (60, "4"), (100, "5")]))]


@rule("topo.unknown_device")
def _():
    s1 = S()
    s1.edge_request(1.0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
    s1.edge_request(3.0, "CMD_TOPO_DEL", {"deviceIds": ["D9999"]},
                    reply_param={"data": [{"code": 404, "statusDesc": "device not found", "nodeId": "", "deviceId": "D9999"}]})
    s2 = S()
    s2.edge_request(1.0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
    s2.edge_request(3.0, "CMD_TOPO_UPDATE", {"deviceStatuses": [{"deviceId": "D9999", "deviceStatus": "OFFLINE"}]},
                    reply_param={"data": [{"code": 404, "statusDesc": "device not found", "deviceId": "D9999"}]})
    s3 = S()
    s3.edge_request(1.0, "CMD_TOPO_DEL", TOPO_DEL,
                    reply_param={"data": [{"code": 404, "statusDesc": "device not found", "nodeId": "", "deviceId": "D1001"}]})
    return [case("CMD_TOPO_DEL of a deviceId never assigned triggers", s1, {"topo.unknown_device": 1}),
            case("CMD_TOPO_UPDATE of a deviceId never assigned triggers", s2, {"topo.unknown_device": 1}),
            case("CMD_TOPO_DEL with no CMD_TOPO_ADD before triggers", s3, {"topo.unknown_device": 1}),
            case("update and delete of the assigned D1001 stay silent", topo_cycle(S(), 1.0))]


@rule("alarm.recovery_without_alarm")
def _():
    s1 = S().report(1.0, "device", "EVENT_SYS_ALARM", {"event": "1002", "msg": "cpu usage back to 40%"})
    s2 = S().report(1.0, "device", "EVENT_SYS_ALARM", {"event": "3004", "msg": "temperature back to 60"})
    s3 = S().report(1.0, "device", "EVENT_SYS_ALARM", ALARM)
    s3.report(5.0, "device", "EVENT_SYS_ALARM", {"event": "1002", "msg": "cpu usage back to 40%"})
    s3.report(6.0, "device", "EVENT_SYS_ALARM", {"event": "3005", "msg": "temperature -35"})
    s3.report(9.0, "device", "EVENT_SYS_ALARM", {"event": "3006", "msg": "temperature back to -10"})
    return [case("1002 with no 1001 before triggers", s1, {"alarm.recovery_without_alarm": 1}),
            case("3004 with no 3003 before triggers", s2, {"alarm.recovery_without_alarm": 1}),
            case("1001 then 1002, 3005 then 3006 stay silent", s3)]


@rule("report.period")
def _():
    def run(times):
        s = S().command(1.0, "CMD_INFO_QUERY", None, reply_param=INFO)
        for t in times:
            s.report(t, "device", "REP_SYS_STATUS", sys_status(t))
        return s
    return [case("130 s gap with devPeriod 60 triggers", run([10.0, 70.0, 200.0]), {"report.period": 1}),
            case("10 s gap with devPeriod 60 triggers", run([10.0, 70.0, 80.0]), {"report.period": 1}),
            case("60 s spacing stays silent", run([10.0, 70.0, 131.0, 190.0]))]


# ================================================================ schema rules
def schema_cases(rid, triggers, silent):
    out = [case(n, s, {rid: k} | extra_f, allow=al) for n, s, k, extra_f, al in triggers]
    out += [case(n, s) for n, s in silent]
    return out


def T(name, s, n=1, extra=None, allow=None):
    return (name, s, n, extra or {}, allow)


@rule("t4.EVENT_LINKUP")
def _():
    r = lambda p: rejected_edge_request("EVENT_LINKUP", p, linkup=False)
    return schema_cases("t4.EVENT_LINKUP", [
        T("dev.devSN missing triggers", r(m(LINKUP, dev=m(DEV, devSN=None)))),
        T("cpu missing triggers", r(m(LINKUP, cpu=None))),
        T("links as an object triggers", r(m(LINKUP, links={"eth0": "up"}))),
        T("dev.devStatus as a number triggers", r(m(LINKUP, dev=m(DEV, devStatus=1)))),
        T("dev missing devType and devName triggers twice", r(m(LINKUP, dev=m(DEV, devType=None, devName=None))), 2),
    ], [("full linkup stays silent", clean_session()),
        ("empty cpu/mem/disk/os objects and empty links stay silent",
         S(linkup=False).linkup(0.0, m(LINKUP, cpu={}, mem={}, disk={}, os={}, links=[])))])


@rule("t5.EVENT_LINKDOWN")
def _():
    r = lambda p: S().report(5.0, "device", "EVENT_LINKDOWN", p)
    return schema_cases("t5.EVENT_LINKDOWN", [
        T("reason missing triggers", r({})),
        T("reason as a number triggers", r({"reason": 3})),
    ], [("reason \"Power Off\" stays silent", r({"reason": "Power Off"}))])


@rule("t6.CMD_SYS_UPGRADE")
def _():
    r = lambda p: rejected_cmd("CMD_SYS_UPGRADE", p)
    return schema_cases("t6.CMD_SYS_UPGRADE", [
        T("version missing triggers", r(m(UPGRADE, version=None))),
        T("file missing triggers", r(m(UPGRADE, file=None))),
        T("jobId as a string triggers", r(m(UPGRADE, jobId="100"))),
        T("version as a number triggers", r(m(UPGRADE, version=2.1))),
        T("upgradeType 3 triggers", r(m(UPGRADE, upgradeType=3))),
        T("policy -10 triggers", r(m(UPGRADE, policy=-10))),
    ], [("upgrade with its reply, query and result stays silent", upgrade_flow(S(), 1.0)),
        ("jobId 100.5 stays silent (table 6 types it number, not integer)", r(m(UPGRADE, jobId=100.5))),
        ("upgradeType 0 and 2, policy absent and 2 stay silent",
         upgrade_flow(upgrade_flow(S(), 1.0, m(UPGRADE, upgradeType=0, policy=None), query=False),
                      10.0, m(UPGRADE, jobId=101, upgradeType=2, policy=2), query=False,
                      result=m(UPGRADE_RESULT, jobId=101, result=400, info="download address unreachable")))])


@rule("t7.CMD_STATUS_QUERY")
def _():
    def r(p):
        s = S().command(1.0, "CMD_SYS_UPGRADE", UPGRADE, code=202)
        s.command(3.0, "CMD_STATUS_QUERY", p, code=400, msg="invalid jobId")
        s.report(6.0, "device", "REP_JOB_RESULT", UPGRADE_RESULT)
        return s
    # The 400 reply carries no param; t8 (a reply schema) cannot tell an error reply
    # from a success reply, so it may report the absent param: allowed, not required.
    al = ["t8.CMD_STATUS_QUERY.reply"]
    return schema_cases("t7.CMD_STATUS_QUERY", [
        T("jobId missing triggers", r({}), allow=al),
        T("jobId as a string triggers", r({"jobId": "100"}), allow=al),
    ], [("query of job 100 stays silent", upgrade_flow(S(), 1.0))])


@rule("t8.CMD_STATUS_QUERY.reply")
def _():
    def r(rp):
        s = S().command(1.0, "CMD_SYS_UPGRADE", UPGRADE, code=202)
        s.command(3.0, "CMD_STATUS_QUERY", STATUS_QUERY, reply_param=rp)
        s.report(6.0, "device", "REP_JOB_RESULT", UPGRADE_RESULT)
        return s
    return schema_cases("t8.CMD_STATUS_QUERY.reply", [
        T("state missing triggers", r(m(STATUS_REPLY, state=None))),
        T("progress missing triggers", r(m(STATUS_REPLY, progress=None))),
        T("progress as a string triggers", r(m(STATUS_REPLY, progress="50"))),
        T("progress 101 triggers", r(m(STATUS_REPLY, progress=101))),
        T("progress -1 triggers", r(m(STATUS_REPLY, progress=-1))),
        T("state \"6\" triggers", r(m(STATUS_REPLY, state="6"))),
        T("state \"downloading\" triggers", r(m(STATUS_REPLY, state="downloading"))),
    ], [("progress 50 state \"2\" stays silent", r(STATUS_REPLY)),
        ("progress 0 state \"1\" and 100 / \"5\" stay silent", r(m(STATUS_REPLY, progress=0, state="1"))),
        ("progress 100 state \"5\" stays silent", r(m(STATUS_REPLY, progress=100, state="5")))])


def job_result_case(flow_cmd, param, chan, result, code=202):
    s = S().command(1.0, flow_cmd, param, code=code)
    s.report(4.0, chan, "REP_JOB_RESULT", result)
    return s


@rule("t9.REP_JOB_RESULT")
def _():
    r = lambda res: job_result_case("CMD_SYS_UPGRADE", UPGRADE, "device", res)
    return schema_cases("t9.REP_JOB_RESULT", [
        T("result missing triggers", r(m(UPGRADE_RESULT, result=None))),
        T("result as a string triggers", r(m(UPGRADE_RESULT, result="200"))),
        T("info as a number triggers", r(m(UPGRADE_RESULT, info=404))),
        T("code/msg shape (table 35) instead of result/info triggers", r({"jobId": 100, "code": 200, "msg": "ok"})),
    ], [("result 200 stays silent", r(UPGRADE_RESULT)),
        ("result 400 with info stays silent", r(m(UPGRADE_RESULT, result=400, info="download address unreachable"))),
        ("result without info stays silent", r(m(UPGRADE_RESULT, info=None)))])


def status_variants(base_t, fn, rid):
    """Trigger list shared by REP_SYS_STATUS and the CMD_SYS_STATUS reply; fn(param) builds the session."""
    st = sys_status(base_t)
    return [
        T("cpuRate missing triggers", fn(m(st, cpuRate=None))),
        T("memUsed.phy missing triggers", fn(m(st, memUsed={"virt": 10}))),
        T("linkState missing triggers", fn(m(st, linkState=None))),
        T("linkState[1].status missing triggers", fn(m(st, linkState=[{"name": "eth1", "status": "up"}, {"name": "eth2"}]))),
        T("memUsed as a number triggers", fn(m(st, memUsed=42))),
        T("tempValue as a string triggers", fn(m(st, tempValue="48"))),
        T("linkState as an object triggers", fn(m(st, linkState={"name": "eth1", "status": "up"}))),
        T("cpuRate 150 triggers", fn(m(st, cpuRate=150))),
        T("diskUsed -1 triggers", fn(m(st, diskUsed=-1))),
        T("memUsed.virt 100.5 triggers", fn(m(st, memUsed={"phy": 42, "virt": 100.5}))),
        T("devDateTime 2026/11/26 triggers", fn(m(st, devDateTime="2026/11/26 10:00:01"))),
        T("devStDateTime 2026-13-01 (no such month) triggers", fn(m(st, devStDateTime="2026-13-01 08:00:00"))),
        T("longitude as a number triggers", fn(m(st, longitude=120.98))),
        T("cpuRate 101 and diskUsed 101 trigger twice", fn(m(st, cpuRate=101, diskUsed=101)), 2),
    ]


@rule("t10.REP_SYS_STATUS")
def _():
    fn = lambda p: S().report(1.0, "device", "REP_SYS_STATUS", p)
    return schema_cases("t10.REP_SYS_STATUS", status_variants(1, fn, "t10"), [
        ("full report stays silent", fn(sys_status(1))),
        ("bounds 0 and 100, no virt/longitude/latitude, empty linkState stay silent",
         fn(m(sys_status(1), cpuRate=0, diskUsed=100, memUsed={"phy": 100}, longitude=None, latitude=None, linkState=[])))])


@rule("t13.CMD_SYS_STATUS.reply")
def _():
    fn = lambda p: S().command(1.0, "CMD_SYS_STATUS", None, reply_param=p)
    return schema_cases("t13.CMD_SYS_STATUS.reply", status_variants(1, fn, "t13"), [
        ("full reply stays silent", fn(sys_status(1))),
        ("decimal percentages (50.5) and no optional fields stay silent",
         fn(m(sys_status(1), cpuRate=50.5, diskUsed=50.5, memUsed={"phy": 50.5}, longitude=None, latitude=None)))])


@rule("t16.CMD_INFO_QUERY.reply")
def _():
    fn = lambda p: S().command(1.0, "CMD_INFO_QUERY", None, reply_param=p)
    return schema_cases("t16.CMD_INFO_QUERY.reply", [
        T("dev.devStatus missing triggers", fn(m(INFO, dev=m(DEV, devStatus=None)))),
        T("os missing triggers", fn(m(INFO, os=None))),
        T("temperature.temHigh missing triggers", fn(m(INFO, temperature={"temLow": -20}))),
        T("repPeriod empty (at least one period) triggers", fn(m(INFO, repPeriod={}))),
        T("repPeriod.devPeriod as a string triggers", fn(m(INFO, repPeriod={"devPeriod": "60"}))),
        T("links as a string triggers", fn(m(INFO, links="eth0"))),
        T("temperature.temLow as a string triggers", fn(m(INFO, temperature={"temLow": "-20", "temHigh": 70}))),
    ], [("full reply stays silent", fn(INFO)),
        ("no temperature, repPeriod with appPeriod only stay silent", fn(m(INFO, temperature=None, repPeriod={"appPeriod": 300}))),
        ("no repPeriod stays silent", fn(m(INFO, repPeriod=None)))])


@rule("t19.EVENT_SYS_ALARM")
def _():
    fn = lambda p: S().report(1.0, "device", "EVENT_SYS_ALARM", p)
    return schema_cases("t19.EVENT_SYS_ALARM", [
        T("event missing triggers", fn({"msg": "cpu high"})),
        T("event as the number 1001 triggers once: the type is wrong, the code is a typical one (no t20)",
          fn({"event": 1001, "msg": "cpu high"}), extra={"t20.EVENT_SYS_ALARM.event": 0}),
        T("msg of 257 characters triggers", fn({"event": "1001", "msg": LONG})),
        T("msg as an object triggers", fn({"event": "1001", "msg": {"text": "cpu high"}})),
    ], [("event \"1001\" with msg stays silent", fn(ALARM)),
        ("msg of exactly 256 characters stays silent", fn({"event": "3010", "msg": OK256})),
        ("event without msg stays silent", fn({"event": "2003"}))])


@rule("t20.EVENT_SYS_ALARM.event")
def _():
    fn = lambda p: S().report(1.0, "device", "EVENT_SYS_ALARM", p)
    s = S()
    for i, ev in enumerate(["1001", "1003", "1005", "2001", "2002", "2003", "2004", "3001", "3002", "3003",
                            "3005", "3007", "3008", "3009", "3010", "3011"]):
        s.report(1.0 + i, "device", "EVENT_SYS_ALARM", {"event": ev, "msg": f"event {ev}"})
    for i, ev in enumerate(["1002", "1004", "3004", "3006"]):
        s.report(20.0 + i, "device", "EVENT_SYS_ALARM", {"event": ev, "msg": f"event {ev}"})
    return [case("event \"9999\" triggers (warning)", fn({"event": "9999", "msg": "vendor event"}), {"t20.EVENT_SYS_ALARM.event": 1}),
            case("event \"1006\" triggers (warning)", fn({"event": "1006"}), {"t20.EVENT_SYS_ALARM.event": 1}),
            case("all 20 codes of tables 20-22 stay silent", s)]


@rule("t23.CMD_TOPO_ADD")
def _():
    r = lambda p: rejected_edge_request("CMD_TOPO_ADD", p)
    many = [m(NODE, nodeId=f"node-{i:03d}") for i in range(101)]
    hundred = [m(NODE, nodeId=f"node-{i:03d}") for i in range(100)]
    s_ok = S()
    s_ok.edge_request(1.0, "CMD_TOPO_ADD", {"deviceInfos": hundred},
                      reply_param={"data": [{"code": 200, "deviceId": f"D{2000 + i}", "nodeId": f"node-{i:03d}"} for i in range(100)]})
    return schema_cases("t23.CMD_TOPO_ADD", [
        T("deviceInfos missing triggers", r({})),
        T("deviceInfos[0].nodeId missing triggers", r({"deviceInfos": [m(NODE, nodeId=None)]})),
        T("deviceInfos[0].name as a number triggers", r({"deviceInfos": [m(NODE, name=7)]})),
        T("deviceInfos as an object triggers", r({"deviceInfos": NODE})),
        T("empty deviceInfos triggers", r({"deviceInfos": []})),
        T("101 deviceInfos trigger", r({"deviceInfos": many})),
        T("deviceInfos[0].modelId as a number triggers", r({"deviceInfos": [m(NODE, modelId=100)]})),
    ], [("one device stays silent", topo_cycle(S(), 1.0)),
        ("100 devices, no modelId on them, stay silent", s_ok)])


def topo_reply_case(typ, param, rp, pre_add=True):
    s = S()
    if pre_add and typ != "CMD_TOPO_ADD":
        s.edge_request(1.0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
    s.edge_request(3.0, typ, param, reply_param=rp)
    return s


@rule("t26.CMD_TOPO_ADD.reply")
def _():
    r = lambda rp: topo_reply_case("CMD_TOPO_ADD", TOPO_ADD, rp)
    item = TOPO_ADD_REPLY["data"][0]
    return schema_cases("t26.CMD_TOPO_ADD.reply", [
        T("data[0].deviceId missing triggers", r({"data": [m(item, deviceId=None)]})),
        T("data[0].code missing triggers", r({"data": [m(item, code=None)]})),
        T("data[0].code as a string triggers", r({"data": [m(item, code="200")]})),
        T("data[0].code 201 triggers", r({"data": [m(item, code=201)]})),
        T("data[0].profile as a string triggers", r({"data": [m(item, profile="M-100")]})),
        T("data as an object triggers", r({"data": item})),
        T("empty data triggers", r({"data": []})),
    ], [("full reply stays silent", r(TOPO_ADD_REPLY)),
        ("reply with code 400 item and statusDesc only, no profile, stays silent",
         r({"data": [{"code": 400, "statusDesc": "model unknown", "deviceId": "", "nodeId": "node-001"}]})),
        ("reply without param (data is optional, table 25) stays silent", r(None))])


@rule("t27.CMD_TOPO_DEL")
def _():
    def r(p):
        s = S()
        s.edge_request(1.0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
        s.edge_request(3.0, "CMD_TOPO_DEL", p, code=400)
        return s
    return schema_cases("t27.CMD_TOPO_DEL", [
        T("deviceIds missing triggers", r({})),
        T("deviceIds as a string triggers", r({"deviceIds": "D1001"})),
        T("empty deviceIds triggers", r({"deviceIds": []})),
        T("101 deviceIds trigger", r({"deviceIds": ["D1001"] * 101})),
        T("a deviceId as a number triggers (and 1001 was never assigned)", r({"deviceIds": ["D1001", 1001]}),
          extra={"topo.unknown_device": 1}),
    ], [("delete of D1001 stays silent", topo_cycle(S(), 1.0)),
        ("100 deviceIds stay silent", topo_reply_case("CMD_TOPO_DEL", {"deviceIds": ["D1001"] * 100}, TOPO_DEL_REPLY))])


@rule("t29.CMD_TOPO_DEL.reply")
def _():
    r = lambda rp: topo_reply_case("CMD_TOPO_DEL", TOPO_DEL, rp)
    item = TOPO_DEL_REPLY["data"][0]
    return schema_cases("t29.CMD_TOPO_DEL.reply", [
        T("data[0].nodeId missing triggers", r({"data": [m(item, nodeId=None)]})),
        T("data[0].code as a string triggers", r({"data": [m(item, code="200")]})),
        T("data[0].code 0 triggers", r({"data": [m(item, code=0)]})),
        T("data[0].statusDesc as a number triggers", r({"data": [m(item, statusDesc=0)]})),
        T("data as a string triggers", r({"data": "ok"})),
    ], [("full reply stays silent", r(TOPO_DEL_REPLY)),
        ("reply without statusDesc stays silent", r({"data": [m(item, statusDesc=None)]})),
        ("reply without param stays silent", r(None))])


@rule("t30.CMD_TOPO_UPDATE")
def _():
    def r(p):
        s = S()
        s.edge_request(1.0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
        s.edge_request(3.0, "CMD_TOPO_UPDATE", p, code=400)
        return s
    st = TOPO_UPD["deviceStatuses"][0]
    return schema_cases("t30.CMD_TOPO_UPDATE", [
        T("deviceStatuses missing triggers", r({})),
        T("deviceStatuses[0].deviceStatus missing triggers", r({"deviceStatuses": [m(st, deviceStatus=None)]})),
        T("deviceStatuses[0].deviceId missing triggers", r({"deviceStatuses": [m(st, deviceId=None)]})),
        T("deviceStatuses[0].deviceStatus \"ACTIVE\" triggers", r({"deviceStatuses": [m(st, deviceStatus="ACTIVE")]})),
        T("deviceStatuses[0].deviceStatus \"online\" (lower case) triggers", r({"deviceStatuses": [m(st, deviceStatus="online")]})),
        T("empty deviceStatuses triggers", r({"deviceStatuses": []})),
        T("101 deviceStatuses trigger", r({"deviceStatuses": [st] * 101})),
        T("deviceStatuses as an object triggers", r({"deviceStatuses": st})),
    ], [("ONLINE stays silent", topo_cycle(S(), 1.0)),
        ("OFFLINE stays silent", topo_reply_case("CMD_TOPO_UPDATE",
                                                 {"deviceStatuses": [m(st, deviceStatus="OFFLINE")]}, TOPO_UPD_REPLY))])


@rule("t33.CMD_TOPO_UPDATE.reply")
def _():
    r = lambda rp: topo_reply_case("CMD_TOPO_UPDATE", TOPO_UPD, rp)
    item = TOPO_UPD_REPLY["data"][0]
    return schema_cases("t33.CMD_TOPO_UPDATE.reply", [
        T("data[0].deviceId missing triggers", r({"data": [m(item, deviceId=None)]})),
        T("data[0].code missing triggers", r({"data": [m(item, code=None)]})),
        T("data[0].code \"200\" triggers", r({"data": [m(item, code="200")]})),
        T("data[0].code 201 triggers", r({"data": [m(item, code=201)]})),
        T("data[0] as a string triggers", r({"data": ["D1001"]})),
    ], [("full reply stays silent", r(TOPO_UPD_REPLY)),
        ("reply without param stays silent", r(None))])


@rule("t34.CMD_CON_INSTALL")
def _():
    r = lambda p: rejected_cmd("CMD_CON_INSTALL", p)
    return schema_cases("t34.CMD_CON_INSTALL", [
        T("container missing triggers", r(m(CON_INSTALL, container=None))),
        T("jobId missing triggers", r(m(CON_INSTALL, jobId=None))),
        T("jobId as a string triggers", r(m(CON_INSTALL, jobId="200"))),
        T("withAPP as a string triggers", r(m(CON_INSTALL, withAPP="meterApp"))),
        T("mount as a string triggers", r(m(CON_INSTALL, mount="/data:/data"))),
        T("port as a number triggers", r(m(CON_INSTALL, port=8080))),
        T("port \"8080\" (not hostPort:containerPort) triggers", r(m(CON_INSTALL, port="8080"))),
        T("networkMode as an object triggers", r(m(CON_INSTALL, networkMode={"mode": "host"}))),
        T("env as an array triggers", r(m(CON_INSTALL, env=["TZ=Asia/Shanghai"]))),
        T("policy -1 triggers", r(m(CON_INSTALL, policy=-1))),
    ], [("with withAPP: 202 and a job result stays silent", con_install_flow(S(), 1.0)),
        ("without withAPP: 200 and no job result stays silent", S().command(1.0, "CMD_CON_INSTALL", CON_INSTALL_EMPTY)),
        ("only container and jobId, one port, networkMode host stay silent",
         S().command(1.0, "CMD_CON_INSTALL", {"container": "c2", "jobId": 202}).command(
             3.0, "CMD_CON_INSTALL", {"container": "c3", "jobId": 203, "port": "1883:1883", "networkMode": "host"}))])


@rule("t35.REP_JOB_RESULT")
def _():
    r = lambda res: job_result_case("CMD_CON_INSTALL", CON_INSTALL, "container", res)
    return schema_cases("t35.REP_JOB_RESULT", [
        T("code missing triggers", r(m(CON_RESULT, code=None))),
        T("code as a string triggers", r(m(CON_RESULT, code="200"))),
        T("msg as a number triggers", r(m(CON_RESULT, msg=0))),
        T("result/info shape (table 9) instead of code/msg triggers", r({"jobId": 200, "result": 200, "info": "ok"})),
    ], [("code 200 with msg stays silent", r(CON_RESULT)),
        ("code 400 without msg stays silent", r(m(CON_RESULT, code=400, msg=None)))])


def simple_container_rule(typ, rid):
    r = lambda p: rejected_cmd(typ, p)
    return schema_cases(rid, [
        T("container missing triggers", r({})),
        T("container as a number triggers", r({"container": 1})),
        T("param missing triggers", r(None)),
    ], [("container \"c1\" answered 200 stays silent", S().command(1.0, typ, CON))])


for _t, _n in [("CMD_CON_START", 36), ("CMD_CON_STOP", 37), ("CMD_CON_REMOVE", 38)]:
    R[f"t{_n}.{_t}"] = (lambda t=_t, n=_n: simple_container_rule(t, f"t{n}.{t}"))


@rule("t39.CMD_APP_INSTALL")
def _():
    r = lambda p: rejected_cmd("CMD_APP_INSTALL", p)
    return schema_cases("t39.CMD_APP_INSTALL", [
        T("version missing triggers", r(m(APP_INSTALL, version=None))),
        T("enable missing triggers", r(m(APP_INSTALL, enable=None))),
        T("app missing triggers", r(m(APP_INSTALL, app=None))),
        T("app as a number triggers", r(m(APP_INSTALL, app=7))),
        T("file as a string triggers", r(m(APP_INSTALL, file="https://fw.example.com/app.tar"))),
        T("enable \"2\" triggers", r(m(APP_INSTALL, enable="2"))),
        T("enable \"true\" triggers", r(m(APP_INSTALL, enable="true"))),
        T("cpu as a number triggers", r(m(APP_INSTALL, cpu=1))),
    ], [("install with 202 and a result stays silent", app_install_flow(S(), 1.0)),
        ("policy -5 stays silent (the table states no range)", r(m(APP_INSTALL, policy=-5))),
        ("enable \"0\" without cpu/mem/policy stays silent",
         app_install_flow(S(), 1.0, m(APP_INSTALL, enable="0", cpu=None, mem=None, policy=None)))])


@rule("t40.REP_JOB_RESULT")
def _():
    r = lambda res: job_result_case("CMD_APP_INSTALL", APP_INSTALL, "app", res)
    return schema_cases("t40.REP_JOB_RESULT", [
        T("code missing triggers", r(m(APP_RESULT, code=None))),
        T("code as a string triggers", r(m(APP_RESULT, code="200"))),
        T("msg as an array triggers", r(m(APP_RESULT, msg=["failed"]))),
        T("result/info shape (table 43) instead of code/msg triggers", r({"jobId": 300, "result": 200})),
    ], [("code 200 with msg stays silent", r(APP_RESULT)),
        ("code 400 with msg, next to an app upgrade result, stays silent",
         app_upgrade_flow(r(m(APP_RESULT, code=400, msg="download address unreachable")), 8.0))])


def app_ctrl_rule(typ):
    rid = f"t41.{typ}"
    r = lambda p: rejected_cmd(typ, p)
    return schema_cases(rid, [
        T("app missing triggers", r({"container": "c1"})),
        T("container missing triggers", r({"app": "meterApp"})),
        T("container as a number triggers", r({"container": 1, "app": "meterApp"})),
        T("param empty triggers twice", r({}), 2),
    ], [("container and app answered 200 stay silent", S().command(1.0, typ, APP_CTRL))])


for _t in ["CMD_APP_START", "CMD_APP_STOP", "CMD_APP_REMOVE", "CMD_APP_ENABLE", "CMD_APP_UNENABLE"]:
    R[f"t41.{_t}"] = (lambda t=_t: app_ctrl_rule(t))


@rule("t42.CMD_APP_UPGRADE")
def _():
    r = lambda p: rejected_cmd("CMD_APP_UPGRADE", p)
    return schema_cases("t42.CMD_APP_UPGRADE", [
        T("file missing triggers", r(m(APP_UPGRADE, file=None))),
        T("container missing triggers", r(m(APP_UPGRADE, container=None))),
        T("jobId as a string triggers", r(m(APP_UPGRADE, jobId="400"))),
        T("version as a number triggers", r(m(APP_UPGRADE, version=1.1))),
    ], [("upgrade with 202 and a result stays silent", app_upgrade_flow(S(), 1.0)),
        ("policy -5 stays silent (table 42 states no range)", r(m(APP_UPGRADE, policy=-5))),
        ("no policy stays silent", app_upgrade_flow(S(), 1.0, m(APP_UPGRADE, policy=None)))])


@rule("t43.REP_JOB_RESULT")
def _():
    r = lambda res: job_result_case("CMD_APP_UPGRADE", APP_UPGRADE, "app", res)
    return schema_cases("t43.REP_JOB_RESULT", [
        T("result missing triggers", r(m(APP_UPG_RESULT, result=None))),
        T("result as a string triggers", r(m(APP_UPG_RESULT, result="200"))),
        T("info as a number triggers", r(m(APP_UPG_RESULT, info=1))),
        T("code/msg shape (table 40) instead of result/info triggers", r({"jobId": 400, "code": 200, "msg": "ok"})),
    ], [("result 200 with info stays silent", r(APP_UPG_RESULT)),
        ("result 500 without info, next to an app install result, stays silent",
         app_install_flow(r(m(APP_UPG_RESULT, result=500, info=None)), 8.0))])


def dump(rid, cases):
    """One message per line, so that a case reads as a session transcript."""
    j = lambda v: json.dumps(v, ensure_ascii=False)
    out = ['{', f'  "rule": {j(rid)},', '  "cases": [']
    for ci, c in enumerate(cases):
        out.append('    {')
        out.append(f'      "name": {j(c["name"])},')
        out.append('      "messages": [')
        for mi, msg in enumerate(c["messages"]):
            out.append('        ' + j(msg) + (',' if mi < len(c["messages"]) - 1 else ''))
        out.append('      ],')
        tail = [f'      "fires": {j(c["fires"])}']
        if c.get("allow"):
            tail.append(f'      "allow": {j(c["allow"])}')
        out.append(',\n'.join(tail))
        out.append('    }' + (',' if ci < len(cases) - 1 else ''))
    out.append('  ]')
    out.append('}')
    return '\n'.join(out) + '\n'


def main(outdir, ids_file=None):
    os.makedirs(outdir, exist_ok=True)
    if ids_file:
        ids = [l.strip() for l in open(ids_file) if l.strip()]
        missing = [i for i in ids if i not in R]
        extra = [i for i in R if i not in ids]
        assert not missing and not extra, (missing, extra)
    for rid, fn in sorted(R.items()):
        with open(os.path.join(outdir, f"{rid}.json"), "w") as f:
            f.write(dump(rid, fn()))
    print(len(R), "files")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(here), sys.argv[2] if len(sys.argv) > 2 else None)
