"""Shared building blocks for the rule cases: a session builder and valid params."""
import copy, datetime, json

BASE = datetime.datetime(2026, 11, 26, 10, 0, 0)


def ts(t):
    return (BASE + datetime.timedelta(seconds=int(t))).strftime("%Y-%m-%d %H:%M:%S")


def publish_hex(topic, payload):
    """A QoS 0 MQTT PUBLISH packet, as hex."""
    body = len(topic.encode()).to_bytes(2, "big") + topic.encode() + payload
    rl, n = b"", len(body)
    while True:
        b = n % 128
        n //= 128
        rl += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    return (bytes([0x30]) + rl + body).hex()


def D(x):
    return copy.deepcopy(x)


FILE = {"name": "package.tar.gz", "fileType": "tar", "url": "https://fw.example.com/package.tar.gz",
        "size": 1048576, "md5": "d41d8cd98f00b204e9800998ecf8427e"}
DEV = {"devSN": "SN2026110001", "devType": "EdgeAgent-1", "devName": "Edge001",
       "mfgInfo": "Example Electric", "devStatus": "normal"}
CPU = {"cpus": 4, "frequency": 1200, "cache": 512, "arch": "armv7"}
MEM = {"phy": 1024, "virt": 2048}
DISK = {"disk": 8192}
OS = {"distro": "Linux", "version": "4.19", "kernel": "4.19.0"}
LINKS = [{"type": "ethernet", "id": "eth0", "name": "eth0", "mac": "00:11:22:33:44:55"}]
LINKUP = {"dev": DEV, "cpu": CPU, "mem": MEM, "disk": DISK, "os": OS, "links": LINKS}

UPGRADE = {"jobId": 100, "policy": 0, "version": "V2.1.0", "upgradeType": 1, "file": FILE}
STATUS_QUERY = {"jobId": 100}
STATUS_REPLY = {"progress": 50, "state": "2", "jobId": 100}
UPGRADE_RESULT = {"jobId": 100, "result": 200, "info": "upgrade finished"}


def sys_status(t):
    return {"cpuRate": 35.5, "memUsed": {"phy": 42, "virt": 10}, "diskUsed": 61.5, "tempValue": 48,
            "devDateTime": ts(t), "devStDateTime": "2026-11-20 08:00:00", "devRunTime": 525600 + int(t),
            "linkState": [{"name": "eth1", "status": "up"}, {"name": "eth2", "status": "down"}],
            "longitude": "120.98", "latitude": "28.12"}


INFO = {"dev": DEV, "cpu": CPU, "mem": MEM, "disk": DISK, "temperature": {"temLow": -20, "temHigh": 70},
        "os": OS, "links": LINKS, "repPeriod": {"devPeriod": 60, "conPeriod": 300, "appPeriod": 300}}
ALARM = {"event": "1001", "msg": "cpu usage 92% over the threshold of 90%"}

NODE = {"nodeId": "node-001", "name": "Meter A", "description": "three-phase meter",
        "mfgInfo": "Example Meter Co", "model": "DTZ-1", "modelId": "M-100"}
TOPO_ADD = {"deviceInfos": [NODE]}
TOPO_ADD_REPLY = {"data": [{"code": 200, "statusDesc": "success", "deviceId": "D1001", "nodeId": "node-001",
                            "profile": {"url": "https://iot.example.com/profile/M-100"}}]}
TOPO_DEL = {"deviceIds": ["D1001"]}
TOPO_DEL_REPLY = {"data": [{"code": 200, "statusDesc": "success", "nodeId": "node-001", "deviceId": "D1001"}]}
TOPO_UPD = {"deviceStatuses": [{"deviceId": "D1001", "deviceStatus": "ONLINE"}]}
TOPO_UPD_REPLY = {"data": [{"code": 200, "statusDesc": "success", "deviceId": "D1001"}]}

WITH_APP = {"app": "meterApp", "version": "1.0.0", "file": FILE, "enable": "1"}
CON_INSTALL = {"container": "c1", "image": {"name": "edge-base", "version": "1.0", "url": "https://fw.example.com/edge-base.tar",
                                            "md5": "0cc175b9c0f1b6a831c399e269772661"},
               "withAPP": WITH_APP, "cfgCpu": {"cpus": 1, "cpuLmt": 50}, "cfgMem": {"memory": 512, "memLmt": 80},
               "cfgDisk": {"disk": 1024, "diskLmt": 80}, "port": "8080:80,8443:443", "mount": ["/data:/data"],
               "dev": ["/dev/ttyS1"], "jobId": 200, "policy": 0, "networkMode": "bridge", "env": "TZ=Asia/Shanghai"}
CON_INSTALL_EMPTY = {k: v for k, v in CON_INSTALL.items() if k != "withAPP"}
CON_INSTALL_EMPTY["jobId"] = 201
CON_RESULT = {"jobId": 200, "code": 200, "msg": "container installed"}
CON = {"container": "c1"}

APP_INSTALL = {"jobId": 300, "policy": 0, "container": "c1", "version": "1.0.0", "file": FILE,
               "cpu": {"cpus": 1, "cpuLmt": 30}, "mem": {"memory": 256, "memLmt": 50}, "enable": "1", "app": "meterApp"}
APP_RESULT = {"jobId": 300, "code": 200, "msg": "app installed"}
APP_CTRL = {"container": "c1", "app": "meterApp"}
APP_UPGRADE = {"version": "1.1.0", "container": "c1", "file": FILE, "jobId": 400, "policy": 0}
APP_UPG_RESULT = {"jobId": 400, "result": 200, "info": "upgrade finished"}

CHANNEL_OF = {"CMD_SYS_UPGRADE": "device", "CMD_STATUS_QUERY": "device", "CMD_SYS_STATUS": "device",
              "CMD_INFO_QUERY": "device", "CMD_CON_INSTALL": "container", "CMD_CON_START": "container",
              "CMD_CON_STOP": "container", "CMD_CON_REMOVE": "container", "CMD_APP_INSTALL": "app",
              "CMD_APP_START": "app", "CMD_APP_STOP": "app", "CMD_APP_REMOVE": "app", "CMD_APP_ENABLE": "app",
              "CMD_APP_UNENABLE": "app", "CMD_APP_UPGRADE": "app"}


def m(d, **kw):
    """Copy of d with keys replaced (value None deletes)."""
    d = D(d)
    for k, v in kw.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


class S:
    """One session: builds the `messages` list of a case."""

    def __init__(self, edge="E1", linkup=True):
        self.edge_id = edge
        self.msgs = []
        self.pmid = 1000000000020033  # platform mids: 64-bit, as in figure 3
        self.emid = 0
        if linkup:
            self.linkup(0.0)

    def topic(self, chan, role, edge=None):
        return f"/v1/{edge or self.edge_id}/{chan}/{role}"

    def raw(self, t, frm, topic, payload):
        self.msgs.append({"t": t, "from": frm, "topic": topic, "payload": payload})
        return self

    def raw_text(self, t, frm, topic, text):
        self.msgs.append({"t": t, "from": frm, "topic": topic, "payload_raw": text})
        return self

    def hex(self, t, frm, hexstr):
        self.msgs.append({"t": t, "from": frm, "mqtt_raw_hex": hexstr})
        return self

    @staticmethod
    def envelope(t, typ, param=None, mid=None, **extra):
        p = {}
        if mid is not None:
            p["mid"] = mid
        p["type"] = typ
        p["timestamp"] = ts(t)
        if param is not None:
            p["param"] = D(param)
        p.update(extra)
        return p

    @staticmethod
    def reply_env(t, typ, mid, code, param=None, msg=None, **extra):
        p = {"mid": mid, "type": typ, "timestamp": ts(t), "code": code}
        if msg is not None:
            p["msg"] = msg
        if param is not None:
            p["param"] = D(param)
        p.update(extra)
        return p

    # --- edge requests (device/request, topo/request), answered by the platform ---
    def edge_request(self, t, typ, param, code=200, reply_param=None, dt=0.2, chan=None, mid=None, answer=True,
                     req_extra=None, reply_extra=None, msg=None):
        chan = chan or ("device" if typ == "EVENT_LINKUP" else "topo")
        if mid is None:
            self.emid += 1
            mid = self.emid
        self.raw(t, "edge", self.topic(chan, "request"), self.envelope(t, typ, param, mid, **(req_extra or {})))
        if answer:
            self.raw(round(t + dt, 3), "platform", self.topic(chan, "response"),
                     self.reply_env(t + dt, typ, mid, code, reply_param, msg, **(reply_extra or {})))
        self.last_mid = mid
        return self

    def linkup(self, t, param=None, code=200):
        return self.edge_request(t, "EVENT_LINKUP", LINKUP if param is None else param, code)

    # --- platform commands, answered by the edge ---
    def command(self, t, typ, param=None, code=200, reply_param=None, dt=0.5, mid=None, answer=True,
                req_extra=None, reply_extra=None, msg=None, chan=None, reply_type=None):
        chan = chan or CHANNEL_OF[typ]
        if mid is None:
            self.pmid += 1
            mid = self.pmid
        self.raw(t, "platform", self.topic(chan, "command"), self.envelope(t, typ, param, mid, **(req_extra or {})))
        if answer:
            self.raw(round(t + dt, 3), "edge", self.topic(chan, "reply"),
                     self.reply_env(t + dt, reply_type or typ, mid, code, reply_param, msg, **(reply_extra or {})))
        self.last_mid = mid
        return self

    # --- edge reports on data topics ---
    def report(self, t, chan, typ, param, mid=None, **extra):
        self.raw(t, "edge", self.topic(chan, "data"), self.envelope(t, typ, param, mid, **extra))
        return self


def case(name, s, fires=None, allow=None):
    c = {"name": name, "messages": s.msgs, "fires": fires or {}}
    if allow:
        c["allow"] = allow
    return c
