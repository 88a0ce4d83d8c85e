"""A Greengrass component for the bridge end-to-end test, written against awsiotsdk.

Subscribes over IPC to `devices/+/up` (which the MQTT bridge feeds from client devices) and
answers each message on `devices/<id>/down` (which the bridge forwards to the devices), with
the payload prefixed by "echo:". Writes "ready" to ./ready once subscribed.
"""

import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

ipc = GreengrassCoreIPCClientV2()


def on_message(event):
    msg = event.binary_message or event.json_message
    topic = msg.context.topic
    device = topic.split("/")[1]
    if event.binary_message is not None:
        payload = b"echo:" + event.binary_message.message
    else:
        payload = ("echo:%s" % event.json_message.message).encode()
    ipc.publish_to_topic(
        topic="devices/%s/down" % device,
        publish_message=model.PublishMessage(binary_message=model.BinaryMessage(message=payload)),
    )
    print("answered", topic, flush=True)


ipc.subscribe_to_topic(topic="devices/+/up", on_stream_event=on_message)
with open("ready", "w") as f:
    f.write("ready")
print("subscribed", flush=True)
while True:
    time.sleep(60)
