"""A Greengrass component for the shadow IPC test, written against awsiotsdk's
GreengrassCoreIPCClientV2 as a Greengrass component would be.

Runs every local shadow operation with its success and error cases and writes what happened
to ./results.json (one entry per case: the outcome, the exception's class and message, or the
answer), then ./done. The test (crates/cli/tests/shadow_sdk.rs) asserts on that file, so this
script decides nothing itself. Its access control allows its own thing's shadows only, so
another thing's shadow is the unauthorized case.
"""

import json
import os
import threading
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

THING = os.environ["AWS_IOT_THING_NAME"]
LIMIT = int(os.environ.get("SIZE_LIMIT", "1024"))

ipc = GreengrassCoreIPCClientV2()
results = {}
events = []
events_lock = threading.Lock()


def on_event(event):
    msg = event.binary_message
    if msg is None:
        return
    with events_lock:
        events.append({"topic": msg.context.topic, "body": json.loads(msg.message)})


def case(name, fn):
    try:
        answer = fn()
        results[name] = {"ok": True, "answer": answer}
    except Exception as e:  # the test looks at the class and message
        results[name] = {
            "ok": False,
            "error": type(e).__name__,
            "message": getattr(e, "message", None) or str(e),
        }


def doc(response):
    return json.loads(response.payload) if response.payload else None


def get(name=None, thing=THING):
    return doc(ipc.get_thing_shadow(thing_name=thing, shadow_name=name))


def update(body, name=None, thing=THING):
    payload = json.dumps(body).encode() if body is not None else b""
    return doc(
        ipc.update_thing_shadow(thing_name=thing, shadow_name=name, payload=payload)
    )


def delete(name=None, thing=THING):
    r = ipc.delete_thing_shadow(thing_name=thing, shadow_name=name)
    return {"payloadBytes": len(r.payload or b"")}


def listing(page_size=None, token=None, thing=THING):
    r = ipc.list_named_shadows_for_thing(
        thing_name=thing, page_size=page_size, next_token=token
    )
    return {"results": r.results, "nextToken": r.next_token}


_, stream = ipc.subscribe_to_topic(
    topic="$aws/things/%s/shadow/#" % THING, on_stream_event=on_event
)

case("get_missing", lambda: get())
case("update", lambda: update({"state": {"desired": {"color": "red"}}, "clientToken": "sdk-1"}))
case("get", lambda: get())
case("conflict", lambda: update({"state": {"reported": {"color": "red"}}, "version": 7}))
case("oversized", lambda: update({"state": {"reported": {"b": "x" * (LIMIT + 10)}}}))
case(
    "too_deep",
    lambda: update({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}}),
)
case("bad_name", lambda: update({"state": {"reported": {"a": 1}}}, name="bad/name"))
case("empty_payload", lambda: update(None))
case("unauthorized", lambda: get(thing="someone-else"))
case("reported", lambda: update({"state": {"reported": {"color": "red"}}}))
for n in ["n1", "n2", "n3"]:
    case("named_" + n, lambda n=n: update({"state": {"reported": {"n": n}}}, name=n))
case("list_page1", lambda: listing(page_size=2))
token = (results["list_page1"].get("answer") or {}).get("nextToken")
case("list_page2", lambda: listing(page_size=2, token=token))
case("list_bad_size", lambda: listing(page_size=101))
case("list_unauthorized", lambda: listing(thing="someone-else"))
case("delete", lambda: delete(name="n2"))
case("delete_missing", lambda: delete(name="n2"))

# Over the per-thing rate limit: a burst of gets, some throttled; a second later one passes.
throttled = []
for _ in range(int(os.environ.get("BURST", "200"))):
    try:
        get()
    except Exception as e:
        throttled.append({"error": type(e).__name__, "message": getattr(e, "message", None) or str(e)})
results["burst"] = {"ok": True, "answer": {"throttled": throttled}}
time.sleep(1.1)
case("after_burst", lambda: get())

# The local pub/sub messages of the operations above (delivery is asynchronous).
deadline = time.time() + 10
while time.time() < deadline:
    with events_lock:
        topics = [e["topic"] for e in events]
    if any(t.endswith("/name/n2/delete/rejected") for t in topics):
        break
    time.sleep(0.05)
stream.close()
with events_lock:
    results["events"] = list(events)

with open("results.json.tmp", "w") as f:
    json.dump(results, f)
os.rename("results.json.tmp", "results.json")
open("done", "w").close()
print("shadow component done", flush=True)
