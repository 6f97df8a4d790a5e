"""Cases of issue 9 (verdicts grounded in the standard's words), written into
tests/rule_cases/ once: new rules (dialects, outcomes, pending work, values given by
example), and sessions of behaviour the standard permits, which must raise no error.

Run from the repository root:  python3 tests/rule_cases/_generator/verdicts.py
It edits the generated files in place (moves cases whose rule was split) and writes
the new files; running it twice is harmless."""
import json, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from fixtures import *

DIR = os.path.join(os.path.dirname(__file__), "..")


def load(rule):
    p = os.path.join(DIR, rule + ".json")
    if os.path.exists(p):
        return json.load(open(p))
    return {"rule": rule, "cases": []}


def save(f):
    p = os.path.join(DIR, f["rule"] + ".json")
    with open(p, "w") as out:
        json.dump(f, out, ensure_ascii=False, indent=2)
        out.write("\n")


def put(f, c):
    f["cases"] = [x for x in f["cases"] if x["name"] != c["name"]] + [c]


def move(src_rule, dst_rule, pick, rename=None):
    """Moves the cases of src that `pick` selects into dst, firing dst's rule."""
    src, dst = load(src_rule), load(dst_rule)
    keep = []
    for c in src["cases"]:
        if pick(c):
            n = c["fires"].pop(src_rule, 0)
            if n:
                c["fires"][dst_rule] = n
            put(dst, c)
        else:
            keep.append(c)
    src["cases"] = keep
    save(src)
    save(dst)


# ---- split rules: values given by example (warnings), the port format (warning)
RANGE = lambda c: (any(k in c["name"] for k in ("cpuRate", "diskUsed", "memUsed.virt", "memUsed.phy", "DateTime"))
                   and not any(k in c["name"] for k in ("missing", " as a ", "absent")))
if any(RANGE(c) for c in load("t10.REP_SYS_STATUS")["cases"] if c["fires"].get("t10.REP_SYS_STATUS")):
    move("t10.REP_SYS_STATUS", "t10.REP_SYS_STATUS.values", lambda c: c["fires"].get("t10.REP_SYS_STATUS") and RANGE(c))
    move("t13.CMD_SYS_STATUS.reply", "t13.CMD_SYS_STATUS.reply.values",
         lambda c: c["fires"].get("t13.CMD_SYS_STATUS.reply") and RANGE(c))
    move("t34.CMD_CON_INSTALL", "t34.CMD_CON_INSTALL.port", lambda c: c["name"].startswith("port \""))
    move("envelope.request", "envelope.string_number", lambda c: c["name"] == "mid as a string in a report triggers")

v = load("t10.REP_SYS_STATUS.values")
put(v, case("a conforming status report stays silent", S().report(1, "device", "REP_SYS_STATUS", sys_status(1))))
put(v, case("cpuRate 250 (a load over all cores) is a warning, not an error",
            S().report(1, "device", "REP_SYS_STATUS", m(sys_status(1), cpuRate=250)),
            {"t10.REP_SYS_STATUS.values": 1}))
save(v)
v = load("t13.CMD_SYS_STATUS.reply.values")
put(v, case("a conforming status reply stays silent", S().command(1, "CMD_SYS_STATUS", reply_param=sys_status(1))))
save(v)
v = load("t34.CMD_CON_INSTALL.port")
put(v, case("port 8080:80,8443:443 stays silent", S().command(1, "CMD_CON_INSTALL", CON_INSTALL_EMPTY, code=200)))
put(v, case("port \"\" accepted with 200: a warning on the request, nothing against the edge",
            S().command(1, "CMD_CON_INSTALL", m(CON_INSTALL_EMPTY, port=""), code=200),
            {"t34.CMD_CON_INSTALL.port": 1}))
put(v, case("port 127.0.0.1:8080:80 accepted with 202 and a result: a warning only",
            S().command(1, "CMD_CON_INSTALL", m(CON_INSTALL, port="127.0.0.1:8080:80"), code=202)
               .report(4, "container", "REP_JOB_RESULT", CON_RESULT),
            {"t34.CMD_CON_INSTALL.port": 1}))
save(v)

# ---- negative policy: table 6/34/39 state no range
for rule in ("t6.CMD_SYS_UPGRADE", "t34.CMD_CON_INSTALL", "t39.CMD_APP_INSTALL"):
    f = load(rule)
    for c in f["cases"]:
        if c["name"].startswith("policy -") and c["name"].endswith(" triggers"):
            c["name"] = c["name"][: -len(" triggers")] + " stays silent (the table states no range)"
            c["fires"] = {}
    save(f)

# ---- dialects: once per connection, then judged as meant
f = load("payload.trailing_bytes")
s = S()
for i, t in enumerate((1, 2, 3)):
    s.raw_text(t, "edge", s.topic("device", "data"), json.dumps(s.envelope(t, "REP_SYS_STATUS", sys_status(t))) + "\u0000")
put(f, case("C agent: three reports with a trailing NUL: reported once", s, {"payload.trailing_bytes": 1}))
s = S()
s.raw(1, "platform", s.topic("device", "command"), s.envelope(1, "CMD_SYS_STATUS", None, 7))
s.raw_text(1.5, "edge", s.topic("device", "reply"), json.dumps(s.reply_env(1.5, "CMD_SYS_STATUS", 7, 200, m(sys_status(1), cpuRate=None))) + "\u0000")
put(f, case("a NUL-terminated reply is still paired and judged: its missing field is found", s,
            {"payload.trailing_bytes": 1, "t13.CMD_SYS_STATUS.reply": 1}))
put(f, case("trailing newline is valid JSON and stays silent",
            S().raw_text(1, "edge", "/v1/E1/device/data", json.dumps(S.envelope(1, "REP_SYS_STATUS", sys_status(1))) + "\r\n")))
save(f)
f = load("payload.bom")
put(f, case("a byte order mark: a warning once, the message judged",
            S().raw_text(1, "edge", "/v1/E1/device/data", "\ufeff" + json.dumps(S.envelope(1, "REP_SYS_STATUS", sys_status(1))))
               .raw_text(2, "edge", "/v1/E1/device/data", "\ufeff" + json.dumps(S.envelope(2, "REP_SYS_STATUS", sys_status(2)))),
            {"payload.bom": 1}))
put(f, case("no byte order mark stays silent", S().report(1, "device", "REP_SYS_STATUS", sys_status(1))))
save(f)
f = load("envelope.string_number")
s = S()
for i, t in enumerate((1, 3)):
    s.command(t, "CMD_SYS_STATUS", reply_param=sys_status(t), code="200")
put(f, case("code \"200\" on two replies: once per connection, the replies paired", s, {"envelope.string_number": 1}))
put(f, case("numeric mid and code stay silent", S().command(1, "CMD_SYS_STATUS", reply_param=sys_status(1))))
save(f)
f = load("envelope.timestamp_form")
s = S()
s.report(1, "device", "REP_SYS_STATUS", sys_status(1), timestamp=1795629601)
s.report(2, "device", "REP_SYS_STATUS", sys_status(2), timestamp="2026-11-26T10:00:02+08:00")
s.report(3, "device", "REP_SYS_STATUS", sys_status(3), timestamp=1795629603000)
put(f, case("epoch and ISO 8601 timestamps: reported once per connection", s, {"envelope.timestamp_form": 1}))
put(f, case("yyyy-MM-dd HH:mm:ss stays silent", S().report(1, "device", "REP_SYS_STATUS", sys_status(1))))
save(f)
f = load("topic.unattributed")
s = S()
s.raw(1, "edge", "sensors/temperature", {"value": 21.5})
s.raw(2, "edge", "sensors/temperature", {"value": 21.6})
put(f, case("a PUBLISH outside the standard's topics is reported once per topic", s, {"topic.unattributed": 1}))
put(f, case("protocol topics stay silent", S().report(1, "device", "REP_SYS_STATUS", sys_status(1)), {"topic.unattributed": 0}))
save(f)

# ---- no invented deadlines
f = load("reply.missing")
for c in f["cases"]:
    if c["fires"].get("reply.missing"):
        c["reply_timeout"] = 30
        c["end"] = 90
save(f)
put(f, case("unanswered for 60 s with no --reply-timeout: pending, no warning",
            S().command(1, "CMD_CON_START", CON, answer=False), {"reply.missing": 0, "reply.pending": 1}))
f["cases"][-1]["end"] = 61
save(f)
f = load("reply.pending")
put(f, case("a request unanswered at the end is pending", S().command(1, "CMD_CON_START", CON, answer=False), {"reply.pending": 1}))
put(f, case("an answered request is not pending", S().command(1, "CMD_CON_START", CON), {"reply.pending": 0}))
save(f)
f = load("reply.late")
for c in f["cases"]:
    if c["fires"].get("reply.late"):
        c["reply_timeout"] = 30
put(f, case("an empty container installed, then answered after 45 s: no deadline in the standard",
            S().command(1, "CMD_CON_INSTALL", CON_INSTALL_EMPTY, code=200, dt=45)))
save(f)
f = load("job.result_missing")
for c in f["cases"]:
    if c["fires"].get("job.result_missing"):
        c["job_timeout"] = 10
        c["end"] = 120
put(f, case("policy 3600, input ends after 60 s: pending, not missing (even with --job-timeout 10)",
            S().command(1, "CMD_SYS_UPGRADE", m(UPGRADE, policy=3600), code=202),
            {"job.result_missing": 0, "job.pending": 1}))
f["cases"][-1]["job_timeout"] = 10
f["cases"][-1]["end"] = 61
save(f)
f = load("job.pending")
put(f, case("an accepted upgrade without result at the end is pending",
            S().command(1, "CMD_SYS_UPGRADE", UPGRADE, code=202), {"job.pending": 1}))
put(f, case("a finished upgrade is not pending",
            S().command(1, "CMD_SYS_UPGRADE", UPGRADE, code=202).report(5, "device", "REP_JOB_RESULT", UPGRADE_RESULT),
            {"job.pending": 0}))
save(f)

# ---- outcomes
f = load("job.failed")
put(f, case("an app install that failed is an outcome, not an error",
            S().command(1, "CMD_APP_INSTALL", APP_INSTALL, code=202)
               .report(4, "app", "REP_JOB_RESULT", m(APP_RESULT, code=500, msg="download address unavailable")),
            {"job.failed": 1}))
put(f, case("a device upgrade with result 500 is an outcome",
            S().command(1, "CMD_SYS_UPGRADE", UPGRADE, code=202)
               .report(5, "device", "REP_JOB_RESULT", m(UPGRADE_RESULT, result=500, info="md5 mismatch")),
            {"job.failed": 1}))
put(f, case("a successful job is no outcome finding",
            S().command(1, "CMD_APP_INSTALL", APP_INSTALL, code=202).report(4, "app", "REP_JOB_RESULT", APP_RESULT),
            {"job.failed": 0}))
save(f)
f = load("reply.error_to_valid")
put(f, case("CMD_APP_INSTALL refused with 400 \"disk full\": an outcome, no error",
            S().command(1, "CMD_APP_INSTALL", APP_INSTALL, code=400, msg="disk full"), {"reply.error_to_valid": 1}))
save(f)

# ---- sessions seen from the middle: history-dependent rules stay silent
def joined(c):
    c["joined"] = True
    return c

f = load("seq.linkup_first")
s = S(linkup=False)
s.report(1, "device", "REP_SYS_STATUS", sys_status(1))
s.command(2, "CMD_SYS_STATUS", reply_param=sys_status(2))
put(f, joined(case("capture joined after the edge connected: not exercised, no finding", s, {"seq.linkup_first": 0})))
save(f)
f = load("alarm.recovery_without_alarm")
put(f, joined(case("capture joined mid-session: a recovery of an alarm raised before it stays silent",
                   S(linkup=False).report(1, "device", "EVENT_SYS_ALARM", m(ALARM, event="1002")),
                   {"alarm.recovery_without_alarm": 0})))
save(f)
f = load("topo.unknown_device")
put(f, joined(case("capture joined mid-session: a device registered before it stays silent",
                   S(linkup=False).edge_request(1, "CMD_TOPO_UPDATE", TOPO_UPD, reply_param=TOPO_UPD_REPLY),
                   {"topo.unknown_device": 0})))
save(f)
f = load("reply.orphan")
put(f, joined(case("capture joined mid-session: a reply to an earlier command stays silent",
                   S(linkup=False).raw(1, "edge", "/v1/E1/device/reply", S.reply_env(1, "CMD_SYS_STATUS", 55, 200, sys_status(1))),
                   {"reply.orphan": 0})))
save(f)
f = load("job.result_orphan")
put(f, joined(case("capture joined mid-session: a result of a job begun before it stays silent",
                   S(linkup=False).report(1, "device", "REP_JOB_RESULT", UPGRADE_RESULT),
                   {"job.result_orphan": 0})))
save(f)

# ---- permitted behaviour seen whole
f = load("job.status_regress")
s = S().command(1, "CMD_SYS_UPGRADE", UPGRADE, code=202)
s.command(2, "CMD_STATUS_QUERY", STATUS_QUERY, reply_param={"progress": 100, "state": "3", "jobId": 100})
s.command(3, "CMD_STATUS_QUERY", STATUS_QUERY, reply_param={"progress": 10, "state": "4", "jobId": 100})
s.report(5, "device", "REP_JOB_RESULT", UPGRADE_RESULT)
put(f, case("progress 100 downloaded, then 10 installing: progress of a new phase", s, {"job.status_regress": 0}))
save(f)
f = load("job.result_channel")
s = S().command(1, "CMD_SYS_UPGRADE", m(UPGRADE, jobId=7), code=202)
s.command(2, "CMD_APP_INSTALL", m(APP_INSTALL, jobId=7), code=202)
s.report(4, "app", "REP_JOB_RESULT", m(APP_RESULT, jobId=7))
s.report(5, "device", "REP_JOB_RESULT", m(UPGRADE_RESULT, jobId=7))
put(f, case("a device upgrade and an app install share jobId 7: both judged, no finding", s, {"job.result_channel": 0}))
save(f)
f = load("reply.type")
s = S()  # EVENT_LINKUP by the edge has mid 1
s.command(1, "CMD_SYS_STATUS", reply_param=sys_status(1), mid=1)
s.command(2, "CMD_INFO_QUERY", reply_param=INFO, mid=2)
s.edge_request(3, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY, mid=2, chan="topo")
put(f, case("edge request mids and platform command mids both start at 1: independent spaces", s, {"reply.type": 0}))
save(f)
f = load("reply.duplicate")
put(f, case("edge EVENT_LINKUP mid 1 and platform CMD_SYS_STATUS mid 1 on one channel: no duplicate",
            S().command(1, "CMD_SYS_STATUS", reply_param=sys_status(1), mid=1), {"reply.duplicate": 0}))
save(f)
f = load("seq.after_linkdown")
put(f, case("alarm 3007 (power loss) after EVENT_LINKUP \"Power Off\": info at most",
            S().report(1, "device", "EVENT_LINKDOWN", {"reason": "Power Off"})
               .report(1.2, "device", "EVENT_SYS_ALARM", {"event": "3007", "msg": "power lost"})))
save(f)
f = load("reply.success_to_invalid")
put(f, case("an edge accepting a request with a port format edgetap doubts: no finding against it",
            S().command(1, "CMD_CON_INSTALL", m(CON_INSTALL_EMPTY, port=""), code=200),
            {"reply.success_to_invalid": 0}, allow=["t34.CMD_CON_INSTALL.port"]))
save(f)
print("ok")

# ---- optional replies (6.1.2.2, 6.3.3.2 "可以对升级命令做出应答")
f = load("job.result_early")
put(f, case("an upgrade answered only by its job result: the reply is optional (可以)",
            S().command(1, "CMD_SYS_UPGRADE", UPGRADE, answer=False).report(5, "device", "REP_JOB_RESULT", UPGRADE_RESULT),
            {"job.result_early": 0}))
put(f, case("an app upgrade answered only by its job result: the reply is optional (可以)",
            S().command(1, "CMD_APP_UPGRADE", APP_UPGRADE, answer=False).report(4, "app", "REP_JOB_RESULT", APP_UPG_RESULT),
            {"job.result_early": 0}))
put(f, case("an app install's result before its reply: 6.3.1.2 says the reply comes first",
            S().command(1, "CMD_APP_INSTALL", APP_INSTALL, answer=False).report(2, "app", "REP_JOB_RESULT", APP_RESULT),
            {"job.result_early": 1}))
save(f)
print("ok")

f = load("envelope.timestamp_form")
s = S()
s.report(1, "device", "REP_SYS_STATUS", sys_status(1), timestamp="2026-11-26 10:00:01.500")
s.report(2, "device", "REP_SYS_STATUS", sys_status(2), timestamp="2026-11-26 10:00:02.500")
put(f, case("milliseconds on every report: reported once per connection, not on every message", s,
            {"envelope.timestamp_form": 1}))
save(f)
print("ok")
move("envelope.request", "envelope.timestamp_form", lambda c: c["name"] == "timestamp in yyyy/MM/dd triggers")
