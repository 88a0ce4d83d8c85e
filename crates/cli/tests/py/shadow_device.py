"""A client device using its shadow on a core, with awsiotsdk's awsiot.iotshadow client over
the core's embedded broker (plain TCP listener, client id = the thing), as a Greengrass client
device would: the core's bridge maps the shadow topics to local pub/sub, where the shadow
service answers.

Usage: shadow_device.py HOST PORT THING READY_FILE GO_FILE
Prints "ok <check>" per passed check and "all ok" at the end; exits non-zero on a failure.
After its own update it writes READY_FILE and waits for GO_FILE: the test then sets `desired`
on the core (lichen shadow update), and the device must see the delta.
"""
import os
import queue
import sys
import time

from awscrt import io, mqtt
from awsiot import iotshadow

HOST, PORT, THING, READY, GO = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
TIMEOUT = 20
Q = mqtt.QoS.AT_LEAST_ONCE


def fail(msg):
    print("FAIL", msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok", msg, flush=True)


bootstrap = io.ClientBootstrap(io.EventLoopGroup(1), io.DefaultHostResolver(io.EventLoopGroup(1)))
conn = mqtt.Connection(
    client=mqtt.Client(bootstrap, None),
    host_name=HOST,
    port=PORT,
    client_id=THING,
    clean_session=True,
    keep_alive_secs=30,
)
conn.connect().result(TIMEOUT)
ok("connected")
shadow = iotshadow.IotShadowClient(conn)
inbox = {n: queue.Queue() for n in ["get_ok", "get_err", "upd_ok", "upd_err", "delta", "docs", "nupd_ok"]}


def subscribe(fn, request, name):
    fut, _ = fn(request=request, qos=Q, callback=lambda r: inbox[name].put(r))
    fut.result(TIMEOUT)


def take(name, what):
    try:
        return inbox[name].get(timeout=TIMEOUT)
    except queue.Empty:
        fail(f"{what}: nothing on {name}")


subscribe(shadow.subscribe_to_get_shadow_accepted, iotshadow.GetShadowSubscriptionRequest(thing_name=THING), "get_ok")
subscribe(shadow.subscribe_to_get_shadow_rejected, iotshadow.GetShadowSubscriptionRequest(thing_name=THING), "get_err")
subscribe(shadow.subscribe_to_update_shadow_accepted, iotshadow.UpdateShadowSubscriptionRequest(thing_name=THING), "upd_ok")
subscribe(shadow.subscribe_to_update_shadow_rejected, iotshadow.UpdateShadowSubscriptionRequest(thing_name=THING), "upd_err")
subscribe(shadow.subscribe_to_shadow_delta_updated_events, iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=THING), "delta")
subscribe(shadow.subscribe_to_shadow_updated_events, iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=THING), "docs")
subscribe(
    shadow.subscribe_to_update_named_shadow_accepted,
    iotshadow.UpdateNamedShadowSubscriptionRequest(thing_name=THING, shadow_name="cfg"),
    "nupd_ok",
)
ok("subscribed")

# Not found yet.
shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=THING, client_token="g1"), Q).result(TIMEOUT)
err = take("get_err", "get of a missing shadow")
if err.code != 404 or err.client_token != "g1":
    fail(f"get rejected: {err.code} {err.message} {err.client_token}")
ok("get 404")

# Report state.
shadow.publish_update_shadow(
    iotshadow.UpdateShadowRequest(
        thing_name=THING,
        state=iotshadow.ShadowState(reported={"temp": 21, "on": True}),
        client_token="u1",
    ),
    Q,
).result(TIMEOUT)
acc = take("upd_ok", "update")
if acc.version != 1 or acc.state.reported != {"temp": 21, "on": True} or acc.client_token != "u1":
    fail(f"update accepted: {acc.version} {acc.state} {acc.client_token}")
docs = take("docs", "update/documents")
if docs.current.version != 1 or docs.previous is not None:
    fail(f"documents: {docs.current} {docs.previous}")
ok("update accepted v1 with documents")

# A version conflict.
shadow.publish_update_shadow(
    iotshadow.UpdateShadowRequest(
        thing_name=THING, state=iotshadow.ShadowState(reported={"temp": 1}), version=9, client_token="u2"
    ),
    Q,
).result(TIMEOUT)
err = take("upd_err", "conflicting update")
if err.code != 409:
    fail(f"conflict: {err.code} {err.message}")
ok("conflict 409")

# A named shadow.
shadow.publish_update_named_shadow(
    iotshadow.UpdateNamedShadowRequest(
        thing_name=THING, shadow_name="cfg", state=iotshadow.ShadowState(reported={"mode": "eco"})
    ),
    Q,
).result(TIMEOUT)
acc = take("nupd_ok", "named update")
if acc.state.reported != {"mode": "eco"}:
    fail(f"named update: {acc.state}")
ok("named update")

# The core sets desired: the device sees the delta, then reads the whole document.
open(READY, "w").close()
deadline = time.time() + 60
while not os.path.exists(GO):
    if time.time() > deadline:
        fail("no go from the test")
    time.sleep(0.05)
delta = take("delta", "delta after the core's desired change")
if delta.state != {"temp": 18}:
    fail(f"delta: {delta.state}")
ok("delta")
shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=THING, client_token="g2"), Q).result(TIMEOUT)
got = take("get_ok", "get")
if got.state.desired != {"temp": 18} or got.state.reported != {"temp": 21, "on": True} or got.state.delta != {"temp": 18}:
    fail(f"get: {got.state}")
if got.version != 2:
    fail(f"get version {got.version}")
ok("get with delta")
conn.disconnect().result(TIMEOUT)
print("all ok", flush=True)
