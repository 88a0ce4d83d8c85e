"""A paho-mqtt client driven line by line, for tests that need to act and observe step by step.

Usage: mqtt_agent.py HOST PORT {311|5} CLIENT_ID [CAFILE CERTFILE KEYFILE]
Prints one JSON object per line on stdout:
  {"event": "connack", "rc": N}            the CONNACK (paho's reason code value; 0 = accepted)
  {"event": "suback", "codes": [N, ...]}
  {"event": "puback", "mid": N, "rc": N}   QoS 1 acknowledgement (rc is 0 for MQTT 3.1.1)
  {"event": "message", "topic": T, "payload": P, "qos": N}
  {"event": "disconnect", "rc": N}
Reads one JSON command per line on stdin:
  {"op": "sub", "filter": F, "qos": N}
  {"op": "pub", "topic": T, "payload": P, "qos": N}
  {"op": "quit"}
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

HOST, PORT, VER, CID = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TLS = sys.argv[5:8] if len(sys.argv) >= 8 else None
V5 = VER == "5"
lock = threading.Lock()


def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def code(rc):
    return getattr(rc, "value", rc)


c = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id=CID,
    protocol=mqtt.MQTTv5 if V5 else mqtt.MQTTv311,
)
if TLS:
    c.tls_set(ca_certs=TLS[0], certfile=TLS[1], keyfile=TLS[2])
connected = threading.Event()
c.on_connect = lambda cl, u, f, rc, p: (emit({"event": "connack", "rc": code(rc)}), connected.set())
c.on_subscribe = lambda cl, u, mid, rcs, p: emit({"event": "suback", "codes": [code(r) for r in rcs]})
c.on_publish = lambda cl, u, mid, rc, p: emit({"event": "puback", "mid": mid, "rc": code(rc)})
c.on_message = lambda cl, u, m: emit(
    {"event": "message", "topic": m.topic, "payload": m.payload.decode("utf-8", "replace"), "qos": m.qos}
)
c.on_disconnect = lambda cl, u, f, rc, p: emit({"event": "disconnect", "rc": code(rc)})
try:
    c.connect(HOST, PORT, keepalive=30)
except Exception as e:  # a TLS refusal shows up here
    emit({"event": "error", "error": str(e)})
    sys.exit(0)
c.loop_start()
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "sub":
        c.subscribe(cmd["filter"], qos=cmd.get("qos", 1))
    elif cmd["op"] == "pub":
        c.publish(cmd["topic"], cmd["payload"], qos=cmd.get("qos", 1))
    elif cmd["op"] == "quit":
        break
c.disconnect()
c.loop_stop()
