"""Drives the lichen broker with paho-mqtt and checks real behaviour for one protocol version.

Usage: mqtt_features.py HOST PORT {311|5} [CAFILE CERTFILE KEYFILE]
Prints "ok <check>" per passed check; exits non-zero on the first failure.
"""
import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT, VER = sys.argv[1], int(sys.argv[2]), sys.argv[3]
TLS = sys.argv[4:7] if len(sys.argv) >= 7 else None
V5 = VER == "5"
PROTO = mqtt.MQTTv5 if V5 else mqtt.MQTTv311
RUN = uuid.uuid4().hex[:6]


def fail(msg):
    print("FAIL", msg, flush=True)
    sys.exit(1)


class C:
    def __init__(self, cid, clean=True, expiry=None, will=None, connect=True):
        self.cid = cid
        kwargs = {}
        if not V5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=PROTO, **kwargs)
        if TLS:
            self.c.tls_set(ca_certs=TLS[0], certfile=TLS[1], keyfile=TLS[2])
        self.msgs = queue.Queue()
        self.acks = queue.Queue()
        self.connack = queue.Queue()
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_connect = lambda c, u, f, rc, p=None: self.connack.put((f, rc, p))
        self.c.on_subscribe = lambda c, u, mid, rcs, p=None: self.acks.put(rcs)
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p=None: self.acks.put(rcs)
        if will:
            self.c.will_set(*will)
        self.clean, self.expiry = clean, expiry
        if connect:
            self.connect()

    def connect(self):
        if V5:
            props = Properties(PacketTypes.CONNECT)
            if self.expiry is not None:
                props.SessionExpiryInterval = self.expiry
            self.c.connect(HOST, PORT, 30, clean_start=self.clean, properties=props)
        else:
            self.c.connect(HOST, PORT, 30)
        self.c.loop_start()
        flags, rc, props = self.connack.get(timeout=5)
        if rc != 0:
            fail(f"{self.cid}: connect refused: {rc}")
        return flags, props

    def sub(self, topic, qos=0, options=None, props=None):
        if V5 and options is not None:
            self.c.subscribe(topic, options=options, properties=props)
        else:
            self.c.subscribe(topic, qos, properties=props) if V5 else self.c.subscribe(topic, qos)
        return self.acks.get(timeout=5)

    def pub(self, topic, payload, qos=0, retain=False, props=None):
        info = self.c.publish(topic, payload, qos, retain, properties=props) if V5 else self.c.publish(topic, payload, qos, retain)
        if qos:
            info.wait_for_publish(5)
        return info

    def get(self, timeout=3):
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            return None

    def none(self, timeout=0.5):
        m = self.get(timeout)
        if m is not None:
            fail(f"{self.cid}: unexpected message {m.topic} {m.payload!r}")

    def stop(self, disconnect=True):
        if disconnect:
            self.c.disconnect()
        self.c.loop_stop()


def t(name):
    return f"{RUN}/{VER}/{name}"


def check(name, cond, detail=""):
    if not cond:
        fail(f"{name} {detail}")
    print("ok", name, flush=True)


# QoS 0/1/2 round trips.
s = C(f"s-{RUN}")
s.sub(t("q/#"), 2)
p = C(f"p-{RUN}")
for q in (0, 1, 2):
    p.pub(t(f"q/{q}"), f"m{q}".encode(), q)
    m = s.get()
    check(f"qos{q}", m is not None and m.payload == f"m{q}".encode() and m.qos == q, repr(m and (m.payload, m.qos)))

# Ordering of a QoS 1 burst.
for i in range(200):
    p.pub(t("q/order"), str(i).encode(), 1)
got = [s.get() for _ in range(200)]
check("qos1-order", [int(m.payload) for m in got if m] == list(range(200)))

# Retained.
p.pub(t("ret/a"), b"kept", 1, retain=True)
r = C(f"r-{RUN}")
r.sub(t("ret/+"), 1)
m = r.get()
check("retained", m is not None and m.payload == b"kept" and m.retain)
p.pub(t("ret/a"), b"", 1, retain=True)
r2 = C(f"r2-{RUN}")
r2.sub(t("ret/+"), 1)
r2.none()
check("retained-cleared", True)

# Unsubscribe.
rcs = s.c.unsubscribe(t("q/#"))
s.acks.get(timeout=5)
p.pub(t("q/after"), b"x", 1)
s.none()
check("unsubscribe", True)

# Will on abnormal disconnect.
w = C(f"w-{RUN}")
w.sub(t("will"), 1)
d = C(f"d-{RUN}", will=(t("will"), b"died", 1, False))
d.c._sock.close() if d.c._sock else None
d.c.loop_stop()
m = w.get(5)
check("will", m is not None and m.payload == b"died")

# Persistent session: queued QoS 1 while offline.
ps = C(f"ps-{RUN}", clean=False, expiry=300)
ps.sub(t("persist"), 1)
ps.stop()
p.pub(t("persist"), b"while-away", 1)
time.sleep(0.2)
ps = C(f"ps-{RUN}", clean=False, expiry=300, connect=False)
flags, _ = ps.connect()
m = ps.get()
check("persistent-session", flags.session_present and m is not None and m.payload == b"while-away")
ps.stop()

if V5:
    # User properties, response topic, correlation data, content type, message expiry.
    v = C(f"v-{RUN}")
    opts = SubscribeOptions(qos=1)
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 7
    v.sub(t("props"), options=opts, props=sp)
    pp = Properties(PacketTypes.PUBLISH)
    pp.UserProperty = [("a", "1"), ("b", "2")]
    pp.ResponseTopic = t("reply")
    pp.CorrelationData = b"\x01\x02"
    pp.ContentType = "text/plain"
    pp.MessageExpiryInterval = 30
    p.pub(t("props"), b"req", 1, props=pp)
    m = v.get()
    mp = m.properties if m else None
    check("user-properties", m is not None and list(mp.UserProperty) == [("a", "1"), ("b", "2")])
    check("response-topic-correlation", mp.ResponseTopic == t("reply") and mp.CorrelationData == b"\x01\x02")
    check("subscription-identifier", mp.SubscriptionIdentifier == [7], str(getattr(mp, "SubscriptionIdentifier", None)))
    check("message-expiry", 0 < mp.MessageExpiryInterval <= 30)
    # No Local.
    nl = C(f"nl-{RUN}")
    nl.sub(t("nl"), options=SubscribeOptions(qos=0, noLocal=True))
    nl.pub(t("nl"), b"self")
    nl.none()
    p.pub(t("nl"), b"other")
    m = nl.get()
    check("no-local", m is not None and m.payload == b"other")
    # Retain As Published and Retain Handling.
    p.pub(t("rh"), b"r", 1, retain=True)
    rh = C(f"rh-{RUN}")
    rh.sub(t("rh"), options=SubscribeOptions(qos=0, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
    rh.none()
    check("retain-handling", True)
    rap = C(f"rap-{RUN}")
    rap.sub(t("rap"), options=SubscribeOptions(qos=0, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
    p.pub(t("rap"), b"x", 1, retain=True)
    m = rap.get()
    check("retain-as-published", m is not None and m.retain)
    # Shared subscription.
    a, b = C(f"sa-{RUN}"), C(f"sb-{RUN}")
    a.sub(f"$share/g{RUN}/" + t("work"), 0)
    b.sub(f"$share/g{RUN}/" + t("work"), 0)
    for i in range(10):
        p.pub(t("work"), str(i).encode(), 1)
    time.sleep(0.5)
    na, nb = a.msgs.qsize(), b.msgs.qsize()
    check("shared-subscription", na + nb == 10 and na > 0 and nb > 0, f"{na}/{nb}")
    # Topic alias from the client.
    ta = C(f"ta-{RUN}")
    ta.sub(t("alias"), 0)
    ap = Properties(PacketTypes.PUBLISH)
    ap.TopicAlias = 1
    p.pub(t("alias"), b"first", 1, props=ap)
    p.c.publish("", b"second", 1, properties=ap).wait_for_publish(5)
    got = [ta.get(), ta.get()]
    check("topic-alias", [m.payload for m in got if m] == [b"first", b"second"])
    # Subscribe failure reason code for an invalid filter.
    rcs = v.sub(f"$share/nofilter{RUN}", options=SubscribeOptions(qos=0))
    check("suback-invalid-filter", rcs[0].value == 0x8F, str(rcs))

print("all ok", flush=True)
