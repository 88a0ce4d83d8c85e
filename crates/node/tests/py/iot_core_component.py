"""A Greengrass component for the cloud tests, written against awsiotsdk's
GreengrassCoreIPCClientV2: IoT Core messaging over IPC with the MQTT 5 properties.

MODE=allowed (its recipe grants aws.greengrass.ipc.mqttproxy on up/# and down/#):
  subscribes to `down/#`, writes "ready" to ./ready, then publishes one message with every
  property to `up/telemetry`, tries `forbidden/x` (must be UnauthorizedError), and records
  each message from the cloud as a JSON line in ./received.jsonl.
MODE=denied (no mqttproxy policy): tries to publish and to subscribe and writes the error
  class names to ./denied.json.
Results go to files in the working directory; the test reads them.
"""

import json
import os
import time
import traceback

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model


def write(name, value):
    tmp = name + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.rename(tmp, name)


def b(v):
    if v is None:
        return None
    return v.decode() if isinstance(v, (bytes, bytearray)) else v


def on_message(event):
    m = event.message
    line = {
        "topic": m.topic_name,
        "payload": b(m.payload),
        "userProperties": [[p.key, p.value] for p in (m.user_properties or [])],
        "messageExpiryIntervalSeconds": m.message_expiry_interval_seconds,
        "correlationData": b(m.correlation_data),
        "responseTopic": m.response_topic,
        "payloadFormat": m.payload_format,
        "contentType": m.content_type,
    }
    with open("received.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def allowed(ipc):
    ipc.subscribe_to_iot_core(topic_name="down/#", qos=model.QOS.AT_LEAST_ONCE,
                              on_stream_event=on_message)
    with open("ready", "w") as f:
        f.write("ready")
    ipc.publish_to_iot_core(
        topic_name="up/telemetry",
        qos=model.QOS.AT_LEAST_ONCE,
        payload=b"21.5",
        user_properties=[model.UserProperty(key="unit", value="C")],
        message_expiry_interval_seconds=120,
        correlation_data=b"req-1",
        response_topic="down/answers",
        payload_format=model.PayloadFormat.UTF8,
        content_type="text/plain",
    )
    try:
        ipc.publish_to_iot_core(topic_name="forbidden/x", qos=model.QOS.AT_MOST_ONCE, payload=b"x")
        forbidden = "accepted"
    except Exception as e:  # the class name is what the test checks
        forbidden = type(e).__name__
    write("published.json", {"forbidden": forbidden})


def denied(ipc):
    out = {}
    try:
        ipc.publish_to_iot_core(topic_name="up/telemetry", qos=model.QOS.AT_LEAST_ONCE, payload=b"no")
        out["publish"] = "accepted"
    except Exception as e:
        out["publish"] = type(e).__name__
    try:
        ipc.subscribe_to_iot_core(topic_name="down/#", qos=model.QOS.AT_MOST_ONCE,
                                  on_stream_event=on_message)
        out["subscribe"] = "accepted"
    except Exception as e:
        out["subscribe"] = type(e).__name__
    write("denied.json", out)


try:
    client = GreengrassCoreIPCClientV2()
    if os.environ.get("MODE") == "denied":
        denied(client)
    else:
        allowed(client)
except Exception:
    write("crashed.json", {"error": traceback.format_exc()})
    raise
print("done", flush=True)
while True:
    time.sleep(60)
