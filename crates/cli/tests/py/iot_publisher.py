"""A Greengrass component for the cloud outage test, written against awsiotsdk.

Publishes TOTAL QoS 1 messages to IoT Core over IPC, spread over TOPICS topics
(`outage/<t>`), one thread per topic publishing in order. After each acknowledged publish it
appends the message's number to ./acked-<t> (so a restarted instance continues after the
last acknowledged one: the core may be killed and restarted under it; each instance notes
its start and where it resumed in ./instances). Writes ./done when
every message was acknowledged. Any IPC failure ends the process; the core restarts it.
"""

import os
import sys
import threading

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

TOTAL = int(os.environ.get("TOTAL", "10000"))
TOPICS = int(os.environ.get("TOPICS", "8"))
PAD = b"x" * 64

ipc = GreengrassCoreIPCClientV2()
failed = []


def say(text):
    # With the core killed, stdout (a pipe to it) is gone too.
    try:
        print(text, flush=True)
    except Exception:
        pass


def last_acked(t):
    try:
        with open("acked-%d" % t) as f:
            lines = [l for l in f.read().split("\n") if l.strip()]
        return int(lines[-1]) if lines else -1
    except FileNotFoundError:
        return -1


def run(t):
    # Message n goes to topic n % TOPICS.
    n = last_acked(t)
    n = t if n < 0 else n + TOPICS
    with open("acked-%d" % t, "a", buffering=1) as log:
        while n < TOTAL:
            try:
                ipc.publish_to_iot_core(
                    topic_name="outage/%d" % t,
                    qos=model.QOS.AT_LEAST_ONCE,
                    payload=b"%d:" % n + PAD,
                )
            except Exception as e:  # the core went away (or refused): exit, be restarted
                failed.append(e)
                say("publish %d failed: %r" % (n, e))
                return
            log.write("%d\n" % n)
            n += TOPICS


with open("instances", "a") as f:
    f.write("%d start %s\n" % (os.getpid(), [last_acked(t) for t in range(TOPICS)]))
threads = [threading.Thread(target=run, args=(t,)) for t in range(TOPICS)]
for th in threads:
    th.start()
for th in threads:
    th.join()
if failed:
    os._exit(1)
with open("done", "w") as f:
    f.write("done by %d" % os.getpid())
say("all %d acknowledged" % TOTAL)
threading.Event().wait()
