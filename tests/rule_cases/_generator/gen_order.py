"""Generates the rule cases of the orders clause 6 sets (issue 20): a job's reply before
its result, a result after a refusal, a result for a job nobody opened, a reply on
another edge's topic, access before data. Writes tests/rule_cases/{file}.json.

Run from the repository root:  python3 tests/rule_cases/_generator/gen_order.py
Each case is one message per line, so a review reads the session top to bottom."""
import json, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from fixtures import *

OUT = os.path.join(os.path.dirname(__file__), "..")
FILES = {}


def add(file, rule, name, s, fires, **extra):
    f = FILES.setdefault(file, {"rule": rule, "cases": []})
    c = case(name, s, fires)
    c.update(extra)
    f["cases"].append(c)


def segment(s, t, *parts):
    """Several publishes of the edge in one TCP segment: (topic, payload) pairs."""
    hexes = "".join(publish_hex(topic, json.dumps(p, ensure_ascii=False).encode()) for topic, p in parts)
    return s.hex(t, "edge", hexes)


def relink(s, t, frm="edge"):
    """The edge reboots: EVENT_LINKDOWN, then a fresh EVENT_LINKUP answered."""
    s.raw(t, frm, s.topic("device", "data"), s.envelope(t, "EVENT_LINKDOWN", {"reason": "Reboot OS"}))
    s.emid += 1
    mid = s.emid
    s.raw(t + 5, frm, s.topic("device", "request"), s.envelope(t + 5, "EVENT_LINKUP", LINKUP, mid))
    s.raw(t + 5.2, "platform", s.topic("device", "response"), s.reply_env(t + 5.2, "EVENT_LINKUP", mid, 200))
    return s


def reply(s, t, typ, mid, code, chan=None):
    return s.raw(t, "edge", s.topic(chan or CHANNEL_OF[typ], "reply"), s.reply_env(t, typ, mid, code))


# ------------------------------------------------------------- job.result_early
E = "job.result_early.order"
for typ, param, chan, result in [("CMD_SYS_UPGRADE", UPGRADE, "device", UPGRADE_RESULT),
                                 ("CMD_APP_UPGRADE", APP_UPGRADE, "app", APP_UPG_RESULT)]:
    s = S().command(1, typ, param, answer=False)
    s.report(2, chan, "REP_JOB_RESULT", result)
    reply(s, 3, typ, s.last_mid, 202)
    add(E, "job.result_early", f"{typ}: its result, then its 202 reply: the reply is optional (可以), but one given comes first (表3 202 未处理完)", s, {"job.result_early": 1})

s = S().command(1, "CMD_SYS_UPGRADE", UPGRADE, code=202)
relink(s, 3)
s.report(10, "device", "REP_JOB_RESULT", UPGRADE_RESULT)
add(E, "job.result_early", "an upgrade accepted with 202, the edge reboots, links up and reports: silent", s, {"job.result_early": 0})

s = S().command(1, "CMD_APP_INSTALL", APP_INSTALL, answer=False)
relink(s, 2)
s.report(10, "app", "REP_JOB_RESULT", APP_RESULT)
add(E, "job.result_early", "an app install, the edge reboots before any reply seen, then reports: held, silent (a reply may have been lost with the connection)", s, {"job.result_early": 0})

s = S().command(1, "CMD_APP_INSTALL", APP_INSTALL, answer=False)
relink(s, 2)
s.report(10, "app", "REP_JOB_RESULT", APP_RESULT)
reply(s, 11, "CMD_APP_INSTALL", s.last_mid, 202)
add(E, "job.result_early", "an app install, the edge reboots, reports, then replies 202: the reply after the result fires", s, {"job.result_early": 1})

for typ, param, chan, result in [("CMD_APP_INSTALL", APP_INSTALL, "app", APP_RESULT),
                                 ("CMD_CON_INSTALL", CON_INSTALL, "container", CON_RESULT),
                                 ("CMD_SYS_UPGRADE", UPGRADE, "device", UPGRADE_RESULT)]:
    s = S().command(1, typ, param, answer=False)
    mid = s.last_mid
    segment(s, 1.5, (s.topic(chan, "reply"), S.reply_env(1.5, typ, mid, 202)),
            (s.topic(chan, "data"), S.envelope(1.5, "REP_JOB_RESULT", result)))
    add(E, "job.result_early", f"{typ}: the 202 and the result in one TCP segment, the reply first: silent (position in the stream, not time)", s, {"job.result_early": 0})

s = S().command(1, "CMD_APP_INSTALL", APP_INSTALL, answer=False)
mid = s.last_mid
segment(s, 1.5, (s.topic("app", "data"), S.envelope(1.5, "REP_JOB_RESULT", APP_RESULT)),
        (s.topic("app", "reply"), S.reply_env(1.5, "CMD_APP_INSTALL", mid, 202)))
add(E, "job.result_early", "the result and the 202 in one TCP segment, the result first: fires", s, {"job.result_early": 1})

s = S(linkup=False).report(1, "app", "REP_JOB_RESULT", APP_RESULT)
add(E, "job.result_early", "capture joined mid-session: a result of a job opened before it is silent", s, {"job.result_early": 0}, joined=True)

# ------------------------------------------------------------- job.result_refused
R = "job.result_refused"
for typ, param, chan, result, code in [("CMD_APP_INSTALL", APP_INSTALL, "app", APP_RESULT, 403),
                                       ("CMD_SYS_UPGRADE", UPGRADE, "device", UPGRADE_RESULT, 400),
                                       ("CMD_CON_INSTALL", CON_INSTALL, "container", CON_RESULT, 403)]:
    s = S().command(1, typ, param, code=code, msg="refused")
    s.report(4, chan, "REP_JOB_RESULT", result)
    add(R, R, f"{typ} refused with {code}, then a success result for its jobId: fires", s, {R: 1})

s = S().command(1, "CMD_APP_INSTALL", APP_INSTALL, code=403, msg="refused")
s.report(4, "app", "REP_JOB_RESULT", m(APP_RESULT, code=403, msg="refused: no space"))
add(R, R, "refused with 403, then a failed result: it agrees with the reply, silent (an outcome)", s, {R: 0})

s = S().command(1, "CMD_APP_INSTALL", APP_INSTALL, code=202)
s.report(4, "app", "REP_JOB_RESULT", APP_RESULT)
add(R, R, "accepted with 202, then a success result: silent", s, {R: 0})

# ------------------------------------------------------------- job.result_orphan
O = "job.result_orphan.order"
s = S().command(1, "CMD_APP_UPGRADE", APP_UPGRADE, code=202)
s.report(5, "app", "REP_JOB_RESULT", m(APP_UPG_RESULT, jobId=401))
# The wrong jobId is the one fault: job 400 is named in the error, not also pending.
add(O, "job.result_orphan", "an app upgrade (job 400, 202) never reports; a result names job 401, which no command opened: fires, and job 400 is not also pending", s, {"job.result_orphan": 1, "job.pending": 0})

s = S(linkup=False).command(1, "CMD_SYS_UPGRADE", UPGRADE, code=202)
s.report(5, "device", "REP_JOB_RESULT", m(UPGRADE_RESULT, jobId=999))
add(O, "job.result_orphan", "capture joined mid-session: job 100 open, a result for job 999 (opened before the capture): silent", s, {"job.result_orphan": 0}, joined=True)

s = S()
relink(s, 1)
s.report(8, "device", "REP_JOB_RESULT", m(UPGRADE_RESULT, jobId=999))
add(O, "job.result_orphan", "the edge reboots and reports job 999, begun before the input: silent", s, {"job.result_orphan": 0})

# ------------------------------------------------------------- reply.wrong_edge
W = "reply.wrong_edge"


def two_edges():
    s = S()
    s.raw(0.5, "edge2", s.topic("device", "request", "E2"), S.envelope(0.5, "EVENT_LINKUP", LINKUP, 1))
    s.raw(0.7, "platform", s.topic("device", "response", "E2"), S.reply_env(0.7, "EVENT_LINKUP", 1, 200))
    return s


s = two_edges()
s.raw(2, "edge", s.topic("topo", "request"), S.envelope(2, "CMD_TOPO_ADD", TOPO_ADD, 7))
s.raw(2.3, "platform", s.topic("topo", "response", "E2"), S.reply_env(2.3, "CMD_TOPO_ADD", 7, 200, TOPO_ADD_REPLY))
add(W, W, "E1's CMD_TOPO_ADD (mid 7) answered on E2's topo/response, E2's session in the input from its EVENT_LINKUP: fires, naming both", s, {W: 1})

s = two_edges()
s.raw(2, "platform", s.topic("device", "command", "E2"), S.envelope(2, "CMD_SYS_STATUS", None, 1000000000020040))
s.raw(2.4, "edge", s.topic("device", "reply"), S.reply_env(2.4, "CMD_SYS_STATUS", 1000000000020040, 200, sys_status(2)))
add(W, W, "the platform's CMD_SYS_STATUS to E2 answered on E1's device/reply: fires", s, {W: 1})

s = two_edges()
s.raw(2, "edge", s.topic("topo", "request"), S.envelope(2, "CMD_TOPO_ADD", TOPO_ADD, 2))
s.raw(2.1, "edge2", s.topic("topo", "request", "E2"), S.envelope(2.1, "CMD_TOPO_ADD", TOPO_ADD, 2))
s.raw(2.3, "platform", s.topic("topo", "response", "E2"), S.reply_env(2.3, "CMD_TOPO_ADD", 2, 200, TOPO_ADD_REPLY))
s.raw(2.4, "platform", s.topic("topo", "response"), S.reply_env(2.4, "CMD_TOPO_ADD", 2, 200, TOPO_ADD_REPLY))
add(W, W, "two edges using the same mids, each answered on its own topic (E2 first): silent", s, {W: 0})

s = S()
s.raw(0.5, "edge2", s.topic("device", "data", "E2"), S.envelope(0.5, "REP_SYS_STATUS", sys_status(0.5)))
s.raw(2, "edge", s.topic("topo", "request"), S.envelope(2, "CMD_TOPO_ADD", TOPO_ADD, 7))
s.raw(2.3, "platform", s.topic("topo", "response", "E2"), S.reply_env(2.3, "CMD_TOPO_ADD", 7, 200, TOPO_ADD_REPLY))
add(W, W, "E2's session began before the input (no EVENT_LINKUP of it): a reply on its topic may answer its own earlier request: silent", s, {W: 0}, allow=["seq.linkup_first"])

s = two_edges()
s.raw(2, "edge", s.topic("topo", "request"), S.envelope(2, "CMD_TOPO_ADD", TOPO_ADD, 7))
s.raw(2.3, "platform", s.topic("topo", "response", "E2"), S.reply_env(2.3, "CMD_TOPO_ADD", 7, 200, TOPO_ADD_REPLY))
s.raw(2.5, "platform", s.topic("topo", "response"), S.reply_env(2.5, "CMD_TOPO_ADD", 7, 200, TOPO_ADD_REPLY))
add(W, W, "E1's request is answered on its own topic too: the reply on E2 was not its answer: silent (noted)", s, {W: 0})

# ------------------------------------------------------------- seq.access_first
A = "seq.access_first"
s = S(linkup=False).report(0, "device", "REP_SYS_STATUS", sys_status(0))
s.linkup(1)
add(A, A, "REP_SYS_STATUS, then EVENT_LINKUP on the same connection: fires", s, {A: 1})

s = S(linkup=False).edge_request(0, "CMD_TOPO_ADD", TOPO_ADD, reply_param=TOPO_ADD_REPLY)
s.report(0.5, "device", "REP_SYS_STATUS", sys_status(0.5))
s.linkup(1)
add(A, A, "CMD_TOPO_ADD and REP_SYS_STATUS, then EVENT_LINKUP: one finding for the connection", s, {A: 1})

s = S().report(1, "device", "REP_SYS_STATUS", sys_status(1))
add(A, A, "EVENT_LINKUP first: silent", s, {A: 0})

s = S(linkup=False).report(1, "device", "REP_SYS_STATUS", sys_status(1))
s.linkup(2)
add(A, A, "capture joined mid-session (no CONNECT seen): silent", s, {A: 0}, joined=True)

s = S(linkup=False).report(0, "device", "REP_SYS_STATUS", sys_status(0))
L = "seq.linkup_first"
add(L + ".order", L, "no EVENT_LINKUP follows on the connection: seq.linkup_first (info) says what was seen, no warning", s, {A: 0, L: 1})

s = S(linkup=False).report(0, "device", "REP_SYS_STATUS", sys_status(0))
s.raw(1, "edge2", s.topic("device", "request"), S.envelope(1, "EVENT_LINKUP", LINKUP, 1))
s.raw(1.2, "platform", s.topic("device", "response"), S.reply_env(1.2, "EVENT_LINKUP", 1, 200))
add(L + ".order", L, "the link-up comes on another connection (a reconnect): info only", s, {A: 0, L: 1})


def dump(c):
    head = {k: v for k, v in c.items() if k != "messages"}
    lines = [json.dumps(x, ensure_ascii=False) for x in c["messages"]]
    text = '    {"name": ' + json.dumps(c["name"], ensure_ascii=False) + ',\n'
    for k, v in head.items():
        if k != "name":
            text += f'     "{k}": ' + json.dumps(v, ensure_ascii=False) + ',\n'
    text += '     "messages": [\n       ' + ',\n       '.join(lines) + '\n     ]}'
    return text


for file, f in FILES.items():
    body = '{\n  "rule": ' + json.dumps(f["rule"]) + ',\n  "cases": [\n' + ',\n'.join(dump(c) for c in f["cases"]) + '\n  ]\n}\n'
    json.loads(body)
    with open(os.path.join(OUT, file + ".json"), "w") as fh:
        fh.write(body)
    print(file, len(f["cases"]))
