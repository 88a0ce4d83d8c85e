"""Drives the endpoint's Device Shadow service with awsiotsdk's awsiot.iotshadow client.

Usage: shadow_client.py PORT CAFILE CERTFILE KEYFILE THING
Prints "ok <check>" per passed check and "all ok" at the end; exits non-zero on a failure.
"""
import queue
import sys
import uuid

from awscrt import mqtt
from awsiot import iotshadow, mqtt_connection_builder

PORT, CA, CERT, KEY, THING = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
TIMEOUT = 10


def fail(msg):
    print("FAIL", msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok", msg, flush=True)


conn = mqtt_connection_builder.mtls_from_path(
    endpoint="localhost",
    port=PORT,
    cert_filepath=CERT,
    pri_key_filepath=KEY,
    ca_filepath=CA,
    client_id=THING,
    clean_session=True,
    keep_alive_secs=30,
)
conn.connect().result(TIMEOUT)
ok("connected")
shadow = iotshadow.IotShadowClient(conn)
Q = mqtt.QoS.AT_LEAST_ONCE
inbox = {name: queue.Queue() for name in [
    "get_ok", "get_err", "upd_ok", "upd_err", "del_ok", "del_err", "delta", "docs",
    "nget_ok", "nget_err", "nupd_ok", "nupd_err", "ndel_ok", "ndel_err", "ndelta",
]}


def put(name):
    return lambda resp: inbox[name].put(resp)


def subscribe(fn, request, name):
    fut, _ = fn(request=request, qos=Q, callback=put(name))
    fut.result(TIMEOUT)


subscribe(shadow.subscribe_to_get_shadow_accepted, iotshadow.GetShadowSubscriptionRequest(thing_name=THING), "get_ok")
subscribe(shadow.subscribe_to_get_shadow_rejected, iotshadow.GetShadowSubscriptionRequest(thing_name=THING), "get_err")
subscribe(shadow.subscribe_to_update_shadow_accepted, iotshadow.UpdateShadowSubscriptionRequest(thing_name=THING), "upd_ok")
subscribe(shadow.subscribe_to_update_shadow_rejected, iotshadow.UpdateShadowSubscriptionRequest(thing_name=THING), "upd_err")
subscribe(shadow.subscribe_to_delete_shadow_accepted, iotshadow.DeleteShadowSubscriptionRequest(thing_name=THING), "del_ok")
subscribe(shadow.subscribe_to_delete_shadow_rejected, iotshadow.DeleteShadowSubscriptionRequest(thing_name=THING), "del_err")
subscribe(shadow.subscribe_to_shadow_delta_updated_events, iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=THING), "delta")
subscribe(shadow.subscribe_to_shadow_updated_events, iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=THING), "docs")
NAME = "config"
subscribe(shadow.subscribe_to_get_named_shadow_accepted, iotshadow.GetNamedShadowSubscriptionRequest(thing_name=THING, shadow_name=NAME), "nget_ok")
subscribe(shadow.subscribe_to_get_named_shadow_rejected, iotshadow.GetNamedShadowSubscriptionRequest(thing_name=THING, shadow_name=NAME), "nget_err")
subscribe(shadow.subscribe_to_update_named_shadow_accepted, iotshadow.UpdateNamedShadowSubscriptionRequest(thing_name=THING, shadow_name=NAME), "nupd_ok")
subscribe(shadow.subscribe_to_update_named_shadow_rejected, iotshadow.UpdateNamedShadowSubscriptionRequest(thing_name=THING, shadow_name=NAME), "nupd_err")
subscribe(shadow.subscribe_to_delete_named_shadow_accepted, iotshadow.DeleteNamedShadowSubscriptionRequest(thing_name=THING, shadow_name=NAME), "ndel_ok")
subscribe(shadow.subscribe_to_delete_named_shadow_rejected, iotshadow.DeleteNamedShadowSubscriptionRequest(thing_name=THING, shadow_name=NAME), "ndel_err")
subscribe(shadow.subscribe_to_named_shadow_delta_updated_events, iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=THING, shadow_name=NAME), "ndelta")
ok("subscribed")


def take(name, what):
    try:
        return inbox[name].get(timeout=TIMEOUT)
    except queue.Empty:
        fail(f"{what}: nothing on {name}")


def token():
    return uuid.uuid4().hex


# Classic shadow: absent at first.
t = token()
shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=THING, client_token=t), Q).result(TIMEOUT)
err = take("get_err", "get of a missing shadow")
if err.code != 404 or err.client_token != t:
    fail(f"missing shadow: {err.code} {err.message} {err.client_token}")
ok("get missing -> 404")

t = token()
shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
    thing_name=THING, client_token=t, state=iotshadow.ShadowState(desired={"color": "red", "power": 1})), Q).result(TIMEOUT)
acc = take("upd_ok", "first update")
if acc.version != 1 or acc.client_token != t or acc.state.desired != {"color": "red", "power": 1}:
    fail(f"first update: {acc.version} {acc.state}")
if acc.metadata is None or "color" not in acc.metadata.desired:
    fail("first update: no metadata")
ok("update desired -> accepted v1 with metadata")
delta = take("delta", "delta after desired")
if delta.state != {"color": "red", "power": 1} or delta.version != 1:
    fail(f"delta: {delta.state} {delta.version}")
ok("delta received")
docs = take("docs", "documents")
if docs.current.version != 1 or docs.current.state.desired != {"color": "red", "power": 1}:
    fail(f"documents: {docs.current}")
ok("documents received")

shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
    thing_name=THING, client_token=token(), state=iotshadow.ShadowState(reported={"color": "red"})), Q).result(TIMEOUT)
acc = take("upd_ok", "reported update")
if acc.version != 2:
    fail(f"reported update version {acc.version}")
ok("update reported -> v2")

t = token()
shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=THING, client_token=t), Q).result(TIMEOUT)
got = take("get_ok", "get")
if got.version != 2 or got.state.desired != {"color": "red", "power": 1} or got.state.reported != {"color": "red"} \
        or got.state.delta != {"power": 1} or got.client_token != t:
    fail(f"get: {got.version} {got.state}")
ok("get -> desired, reported, delta, v2")

# Null deletes a key.
shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
    thing_name=THING, client_token=token(),
    state=iotshadow.ShadowState(desired={"power": None})), Q).result(TIMEOUT)
acc = take("upd_ok", "null update")
shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=THING, client_token=token()), Q).result(TIMEOUT)
got = take("get_ok", "get after null")
if got.state.desired != {"color": "red"} or got.version != 3:
    fail(f"after null: {got.state.desired} v{got.version}")
ok("null deletes a key")

# Version conflict.
t = token()
shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
    thing_name=THING, client_token=t, version=1, state=iotshadow.ShadowState(reported={"color": "blue"})), Q).result(TIMEOUT)
err = take("upd_err", "stale version")
if err.code != 409 or err.client_token != t:
    fail(f"version conflict: {err.code} {err.message}")
ok("stale version -> 409")

# Too large.
shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
    thing_name=THING, client_token=token(), state=iotshadow.ShadowState(reported={"blob": "x" * 9000})), Q).result(TIMEOUT)
err = take("upd_err", "oversized")
if err.code != 413:
    fail(f"oversized: {err.code} {err.message}")
ok("oversized -> 413")

t = token()
shadow.publish_delete_shadow(iotshadow.DeleteShadowRequest(thing_name=THING, client_token=t), Q).result(TIMEOUT)
d = take("del_ok", "delete")
if d.version != 3 or d.client_token != t:
    fail(f"delete: v{d.version}")
shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=THING, client_token=token()), Q).result(TIMEOUT)
err = take("get_err", "get after delete")
if err.code != 404:
    fail(f"get after delete: {err.code}")
ok("delete -> accepted, then 404")

# Named shadow.
shadow.publish_update_named_shadow(iotshadow.UpdateNamedShadowRequest(
    thing_name=THING, shadow_name=NAME, client_token=token(),
    state=iotshadow.ShadowState(desired={"rate": 5}, reported={"rate": 1})), Q).result(TIMEOUT)
acc = take("nupd_ok", "named update")
if acc.version != 1:
    fail(f"named update v{acc.version}")
nd = take("ndelta", "named delta")
if nd.state != {"rate": 5}:
    fail(f"named delta {nd.state}")
shadow.publish_get_named_shadow(iotshadow.GetNamedShadowRequest(thing_name=THING, shadow_name=NAME, client_token=token()), Q).result(TIMEOUT)
got = take("nget_ok", "named get")
if got.state.reported != {"rate": 1} or got.state.delta != {"rate": 5}:
    fail(f"named get {got.state}")
if not inbox["get_ok"].empty() or not inbox["get_err"].empty():
    fail("named shadow replies reached the classic topics")
shadow.publish_delete_named_shadow(iotshadow.DeleteNamedShadowRequest(thing_name=THING, shadow_name=NAME, client_token=token()), Q).result(TIMEOUT)
take("ndel_ok", "named delete")
shadow.publish_get_named_shadow(iotshadow.GetNamedShadowRequest(thing_name=THING, shadow_name=NAME, client_token=token()), Q).result(TIMEOUT)
err = take("nget_err", "named get after delete")
if err.code != 404 or NAME not in err.message:
    fail(f"named after delete: {err.code} {err.message}")
ok("named shadow: update, delta, get, delete")

conn.disconnect().result(TIMEOUT)
print("all ok", flush=True)
