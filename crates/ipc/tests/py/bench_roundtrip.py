"""awsiotsdk publish→receive round trip over lichen IPC: one component publishes to a topic it
is subscribed to and waits for the event before the next publish. Prints JSON with p50/p99 in
microseconds. Needs SVCUID and AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT."""

import json
import sys
import threading
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
TOPIC = "bench/python/rt"

ipc = GreengrassCoreIPCClientV2()
got = threading.Event()


def on_event(_ev):
    got.set()


ipc.subscribe_to_topic(topic=TOPIC, on_stream_event=on_event)
msg = model.PublishMessage(binary_message=model.BinaryMessage(message=b"x" * 64))
samples = []
for i in range(N + 100):
    got.clear()
    t0 = time.perf_counter()
    ipc.publish_to_topic(topic=TOPIC, publish_message=msg)
    if not got.wait(5):
        raise SystemExit("no event for message %d" % i)
    if i >= 100:  # warm-up
        samples.append((time.perf_counter() - t0) * 1e6)
samples.sort()
print(json.dumps({"python_roundtrips": N, "p50_us": round(samples[len(samples) // 2], 1),
                  "p99_us": round(samples[int(len(samples) * 0.99)], 1)}))
ipc.close()
