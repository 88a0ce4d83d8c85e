"""A Greengrass component for the ML service tests, written against awsiotsdk's
GreengrassCoreIPCClientV2: it asks the ML service for inferences over IPC pub/sub.

It subscribes to its reply topic `lichen/ml/<MODEL>/result/py` and to `test/ask`; each message
on `test/ask` is a request: JSON (forwarded as a JSON message) or `{"binaryRequest": b64}`
(forwarded as a binary message) to `lichen/ml/<MODEL>/infer`. Every reply it receives is
published back, as JSON, on `test/answer`. It announces itself with {"ready": true}.
"""

import base64
import json
import os
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

MODEL = os.environ.get("MODEL", "mlp")
ipc = GreengrassCoreIPCClientV2()


def answer(message):
    ipc.publish_to_topic(topic="test/answer",
                         publish_message=model.PublishMessage(json_message=model.JsonMessage(message=message)))


def on_reply(event):
    if event.json_message is not None:
        answer(event.json_message.message)
    else:
        answer({"unexpectedBinary": len(event.binary_message.message)})


def on_ask(event):
    request = event.json_message.message
    if "binaryRequest" in request:
        msg = model.PublishMessage(binary_message=model.BinaryMessage(
            message=base64.b64decode(request["binaryRequest"])))
    else:
        msg = model.PublishMessage(json_message=model.JsonMessage(message=request))
    ipc.publish_to_topic(topic=f"lichen/ml/{MODEL}/infer", publish_message=msg)


ipc.subscribe_to_topic(topic=f"lichen/ml/{MODEL}/result/py", on_stream_event=on_reply)
ipc.subscribe_to_topic(topic="test/ask", on_stream_event=on_ask)
answer({"ready": True})
while True:
    time.sleep(1)
