"""A Greengrass component that exercises lichen's IPC server with the real AWS SDK.

It uses awsiotsdk's GreengrassCoreIPCClientV2 exactly as a Greengrass v2 component would
(socket path and SVCUID from the environment). Every check records its outcome; the results
go to $LICHEN_IPC_TEST_RESULTS (default ./ipc-test-results.json) as
{"checks": [{"name", "ok", "detail"}], "done": true}, and the process exits 0 only if all
checks passed. The Rust test that starts it asserts each check by name.

Environment:
  LICHEN_IPC_TEST_MODE     "inprocess" (a core in a test process; this process is not a
                           supervised component) or "deployed" (deployed by a recipe).
  LICHEN_IPC_TEST_PEER     another component with configuration {"peerKey": "peer-value"}.
  LICHEN_IPC_TEST_RESULTS  where to write the results.
  LICHEN_IPC_TEST_RECIPES  (deployed) recipe dir holding an extra component to deploy.
  LICHEN_IPC_TEST_EXTRA    (deployed) its name (version 1.0.0).
"""

import datetime
import json
import os
import sys
import threading
import time
import traceback

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model

MODE = os.environ.get("LICHEN_IPC_TEST_MODE", "deployed")
PEER = os.environ.get("LICHEN_IPC_TEST_PEER", "com.lichen.test.IpcPeer")
RESULTS = os.environ.get("LICHEN_IPC_TEST_RESULTS", "ipc-test-results.json")
DEPLOYED = MODE == "deployed"
TIMEOUT = 10.0

checks = []


def record(name, ok, detail=""):
    checks.append({"name": name, "ok": bool(ok), "detail": str(detail)[:500]})
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else ": " + str(detail)), flush=True)


def check(name, fn):
    try:
        detail = fn()
        record(name, True, detail or "")
    except Exception as e:  # noqa: BLE001 - every failure is a result
        record(name, False, "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc(limit=3)))


def expect_error(cls, fn, contains=None):
    try:
        fn()
    except cls as e:
        if contains and contains not in str(getattr(e, "message", "") or e):
            raise AssertionError("error %r lacks %r" % (e, contains))
        return type(e).__name__
    except Exception as e:  # noqa: BLE001
        raise AssertionError("expected %s, got %s: %s" % (cls.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, call succeeded" % cls.__name__)


class Inbox:
    """Collects stream events and lets the test wait for them."""

    def __init__(self):
        self.events = []
        self.closed = threading.Event()
        self.cond = threading.Condition()

    def on_event(self, event):
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def on_error(self, error):
        self.on_event(error)
        return True

    def on_closed(self):
        self.closed.set()

    def wait(self, n=1, timeout=TIMEOUT):
        deadline = time.time() + timeout
        with self.cond:
            while len(self.events) < n:
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("got %d events, wanted %d" % (len(self.events), n))
                self.cond.wait(left)
            return self.events[n - 1]

    def handlers(self):
        return dict(on_stream_event=self.on_event, on_stream_error=self.on_error,
                    on_stream_closed=self.on_closed)


def main():
    me = None
    ipc = GreengrassCoreIPCClientV2()
    record("connect", True)

    # --- pub/sub -------------------------------------------------------------------------
    def json_roundtrip():
        inbox = Inbox()
        _, op = ipc.subscribe_to_topic(topic="lichen/test/json", **inbox.handlers())
        msg = {"n": 1, "nested": {"list": [1, "two", None, True]}, "f": 1.5}
        ipc.publish_to_topic(topic="lichen/test/json",
                             publish_message=model.PublishMessage(json_message=model.JsonMessage(message=msg)))
        ev = inbox.wait()
        assert ev.json_message.message == msg, ev.json_message.message
        assert ev.json_message.context.topic == "lichen/test/json", ev.json_message.context.topic
        op.close()
    check("pubsub_json_roundtrip", json_roundtrip)

    def binary_roundtrip():
        inbox = Inbox()
        _, op = ipc.subscribe_to_topic(topic="lichen/test/bin", **inbox.handlers())
        data = bytes(range(256))
        ipc.publish_to_topic(topic="lichen/test/bin",
                             publish_message=model.PublishMessage(binary_message=model.BinaryMessage(message=data)))
        ev = inbox.wait()
        assert ev.binary_message.message == data
        assert ev.binary_message.context.topic == "lichen/test/bin"
        op.close()
    check("pubsub_binary_roundtrip", binary_roundtrip)

    def large_roundtrip():
        inbox = Inbox()
        _, op = ipc.subscribe_to_topic(topic="lichen/test/large", **inbox.handlers())
        data = os.urandom(4 * 1024 * 1024)
        ipc.publish_to_topic(topic="lichen/test/large",
                             publish_message=model.PublishMessage(binary_message=model.BinaryMessage(message=data)))
        ev = inbox.wait()
        assert ev.binary_message.message == data
        op.close()
    check("pubsub_large_message", large_roundtrip)

    def v1_client():
        """The older IPC client (V1) on its own connection: same wire protocol."""
        import awsiot.greengrasscoreipc
        import awsiot.greengrasscoreipc.client as client_v1
        got = threading.Event()

        class Handler(client_v1.SubscribeToTopicStreamHandler):
            def on_stream_event(self, event):
                if event.json_message and event.json_message.message == {"v": 1}:
                    got.set()

            def on_stream_error(self, error):
                return True

            def on_stream_closed(self):
                pass

        v1 = awsiot.greengrasscoreipc.connect()
        sub = v1.new_subscribe_to_topic(Handler())
        sub.activate(model.SubscribeToTopicRequest(topic="lichen/test/v1")).result(TIMEOUT)
        sub.get_response().result(TIMEOUT)
        pub = v1.new_publish_to_topic()
        pub.activate(model.PublishToTopicRequest(topic="lichen/test/v1", publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"v": 1})))).result(TIMEOUT)
        pub.get_response().result(TIMEOUT)
        assert got.wait(TIMEOUT), "V1 subscriber got nothing"
        sub.close().result(TIMEOUT)
        v1.close()
    check("v1_client_publish_subscribe", v1_client)

    def receive_modes():
        others, everyone = Inbox(), Inbox()
        _, op1 = ipc.subscribe_to_topic(topic="lichen/test/#", **others.handlers())
        _, op2 = ipc.subscribe_to_topic(topic="lichen/test/#", receive_mode=model.ReceiveMode.RECEIVE_ALL_MESSAGES,
                                        **everyone.handlers())
        ipc.publish_to_topic(topic="lichen/test/mode/a",
                             publish_message=model.PublishMessage(json_message=model.JsonMessage(message={"m": 1})))
        ev = everyone.wait()
        assert ev.json_message.context.topic == "lichen/test/mode/a"
        time.sleep(0.3)
        assert not others.events, "a wildcard subscription received its own message by default"
        op1.close()
        op2.close()
    check("pubsub_wildcard_receive_modes", receive_modes)

    check("pubsub_unauthorized_publish", lambda: expect_error(model.UnauthorizedError, lambda: ipc.publish_to_topic(
        topic="forbidden/topic", publish_message=model.PublishMessage(json_message=model.JsonMessage(message={})))))
    check("pubsub_unauthorized_subscribe", lambda: expect_error(model.UnauthorizedError, lambda: ipc.subscribe_to_topic(
        topic="forbidden/#", on_stream_event=lambda e: None)))
    # PublishToTopic declares no InvalidArgumentsError: lichen answers ServiceError naming it.
    check("pubsub_invalid_topic", lambda: expect_error(model.ServiceError, lambda: ipc.publish_to_topic(
        topic="lichen/test/+", publish_message=model.PublishMessage(json_message=model.JsonMessage(message={}))),
        contains="InvalidArgumentsError"))
    check("pubsub_invalid_filter", lambda: expect_error(model.InvalidArgumentsError, lambda: ipc.subscribe_to_topic(
        topic="lichen/test/#/x", on_stream_event=lambda e: None)))

    def stream_close():
        inbox = Inbox()
        _, op = ipc.subscribe_to_topic(topic="lichen/test/close", **inbox.handlers())
        pub = lambda i: ipc.publish_to_topic(topic="lichen/test/close", publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"i": i})))
        pub(1)
        inbox.wait(1)
        op.close().result(TIMEOUT)
        pub(2)
        time.sleep(0.3)
        assert len(inbox.events) == 1, inbox.events
        assert inbox.closed.wait(TIMEOUT), "on_stream_closed not called"
    check("stream_opened_received_closed", stream_close)

    # --- configuration -------------------------------------------------------------------
    def get_own():
        r = ipc.get_configuration(key_path=["testKey"])
        assert r.value == {"testKey": "hello"}, r.value
        assert r.component_name, r.component_name
        return r.component_name
    check("get_configuration_own", get_own)

    def get_peer():
        r = ipc.get_configuration(component_name=PEER, key_path=[])
        assert r.value.get("peerKey") == "peer-value", r.value
        assert r.component_name == PEER
    check("get_configuration_other_component", get_peer)
    check("get_configuration_unknown_component", lambda: expect_error(
        model.ResourceNotFoundError, lambda: ipc.get_configuration(component_name="com.example.DoesNotExist", key_path=[])))
    check("get_configuration_unknown_key", lambda: expect_error(
        model.ResourceNotFoundError, lambda: ipc.get_configuration(key_path=["no", "such", "key"])))

    def update_and_subscribe():
        inbox = Inbox()
        _, op = ipc.subscribe_to_configuration_update(key_path=["dynamic"], **inbox.handlers())
        ipc.update_configuration(key_path=["dynamic"], timestamp=datetime.datetime.now(datetime.timezone.utc),
                                 value_to_merge={"level": 7})
        ev = inbox.wait()
        assert ev.configuration_update_event.key_path[:1] == ["dynamic"], ev.configuration_update_event.key_path
        assert ipc.get_configuration(key_path=["dynamic"]).value == {"level": 7}
        op.close()
    check("update_configuration_and_subscribe", update_and_subscribe)

    check("update_configuration_stale_timestamp", lambda: expect_error(
        model.FailedUpdateConditionCheckError, lambda: ipc.update_configuration(
            key_path=["dynamic"], timestamp=datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc),
            value_to_merge={"level": 1})))
    check("update_configuration_access_control_refused", lambda: expect_error(
        model.InvalidArgumentsError, lambda: ipc.update_configuration(
            key_path=["accessControl"], timestamp=datetime.datetime.now(datetime.timezone.utc),
            value_to_merge={"aws.greengrass.ipc.pubsub": {}})))

    # --- lifecycle -----------------------------------------------------------------------
    if DEPLOYED:
        check("update_state_running", lambda: ipc.update_state(state=model.ReportedLifecycleState.RUNNING))
    else:
        check("update_state_running", lambda: expect_error(
            model.ResourceNotFoundError, lambda: ipc.update_state(state=model.ReportedLifecycleState.RUNNING)))
    check("update_state_invalid", lambda: expect_error(
        model.ServiceError, lambda: ipc.update_state(state="SLEEPING"), contains="RUNNING or ERRORED"))

    def list_components():
        names = [c.component_name for c in ipc.list_components().components]
        if DEPLOYED:
            assert PEER in names, names
        return names
    check("list_components", list_components)

    if DEPLOYED:
        def details():
            d = ipc.get_component_details(component_name=PEER).component_details
            assert d.component_name == PEER and d.version and d.state in ("RUNNING", "FINISHED"), vars(d)
        check("get_component_details", details)
    else:
        check("get_component_details", lambda: expect_error(
            model.ResourceNotFoundError, lambda: ipc.get_component_details(component_name=PEER)))
    check("get_component_details_unknown", lambda: expect_error(
        model.ResourceNotFoundError, lambda: ipc.get_component_details(component_name="com.example.DoesNotExist")))
    check("restart_component_unknown", lambda: expect_error(
        model.ComponentNotFoundError, lambda: ipc.restart_component(component_name="com.example.DoesNotExist")))
    check("stop_component_unknown", lambda: expect_error(
        model.ComponentNotFoundError, lambda: ipc.stop_component(component_name="com.example.DoesNotExist")))
    check("pause_component_unauthorized", lambda: expect_error(
        model.UnauthorizedError, lambda: ipc.pause_component(component_name="com.example.NotMine")))
    if DEPLOYED:
        check("pause_resume_component", lambda: (ipc.pause_component(component_name=PEER),
                                                 ipc.resume_component(component_name=PEER)) and None)
    else:
        check("pause_resume_component", lambda: expect_error(
            model.ResourceNotFoundError, lambda: ipc.pause_component(component_name=PEER)))

    # --- local deployments ---------------------------------------------------------------
    check("create_local_deployment_bad_recipe_dir", lambda: expect_error(
        model.InvalidRecipeDirectoryPathError, lambda: ipc.create_local_deployment(
            recipe_directory_path="/nonexistent/recipes")))
    check("get_local_deployment_status_unknown", lambda: expect_error(
        model.ResourceNotFoundError, lambda: ipc.get_local_deployment_status(deployment_id="no-such-deployment")))
    check("cancel_local_deployment_unknown", lambda: expect_error(
        model.ResourceNotFoundError, lambda: ipc.cancel_local_deployment(deployment_id="no-such-deployment")))
    check("list_local_deployments", lambda: [d.deployment_id for d in ipc.list_local_deployments().local_deployments])

    if DEPLOYED:
        deployment_flow(ipc)

    # --- tokens, metrics, unsupported ----------------------------------------------------
    def token_valid():
        assert ipc.validate_authorization_token(token=os.environ["SVCUID"]).is_valid is True
    check("validate_authorization_token", token_valid)
    check("validate_authorization_token_invalid", lambda: expect_error(
        model.InvalidTokenError, lambda: ipc.validate_authorization_token(token="0" * 32)))
    check("put_component_metric", lambda: ipc.put_component_metric(metrics=[
        model.Metric(name="requests", unit=model.MetricUnitType.COUNT, value=3.0)]) and None)
    check("put_component_metric_invalid", lambda: expect_error(
        model.InvalidArgumentsError, lambda: ipc.put_component_metric(metrics=[
            model.Metric(name="requests", unit=model.MetricUnitType.COUNT, value=-1.0)])))
    check("unsupported_operation", lambda: expect_error(
        model.ServiceError, lambda: ipc.get_secret_value(secret_id="s"), contains="not supported yet"))

    ipc.close()


def deployment_flow(ipc):
    """Validation (REJECTED fails the deployment) and component update notices with a defer."""
    me = ipc.get_configuration(key_path=[]).component_name
    version = ipc.get_component_details(component_name=me).component_details.version
    validations, updates = Inbox(), Inbox()
    deferred = {}

    def on_update(ev):
        updates.on_event(ev)
        pre = ev.pre_update_event
        if pre is not None:
            dep = pre.deployment_id
            if dep not in deferred:
                deferred[dep] = time.time()
                ipc.defer_component_update(deployment_id=dep, recheck_after_ms=1000, message=me)
            else:
                deferred[dep] = time.time() - deferred[dep]
                ipc.defer_component_update(deployment_id=dep, recheck_after_ms=0, message=me)

    def on_validate(ev):
        validations.on_event(ev)
        e = ev.validate_configuration_update_event
        status = model.ConfigurationValidityStatus.REJECTED if e.configuration.get("rejectMe") \
            else model.ConfigurationValidityStatus.ACCEPTED
        ipc.send_configuration_validity_report(configuration_validity_report=model.ConfigurationValidityReport(
            status=status, deployment_id=e.deployment_id, message="rejectMe is set"))

    ipc.subscribe_to_component_updates(on_stream_event=on_update)
    ipc.subscribe_to_validate_configuration_updates(on_stream_event=on_validate)

    def wait_final(dep_id, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            d = ipc.get_local_deployment_status(deployment_id=dep_id).deployment
            if d.status in ("SUCCEEDED", "FAILED", "CANCELED"):
                return d
            time.sleep(0.5)
        raise AssertionError("deployment %s did not finish" % dep_id)

    def rejected():
        dep = ipc.create_local_deployment(root_component_versions_to_add={me: version},
                                          component_to_configuration={me: {"MERGE": {"rejectMe": True}}}).deployment_id
        d = wait_final(dep)
        assert d.status == "FAILED", d.status
        ev = validations.wait()
        assert ev.validate_configuration_update_event.deployment_id == dep
        assert ev.validate_configuration_update_event.configuration.get("rejectMe") is True
        assert ipc.get_configuration(key_path=["testKey"]).value == {"testKey": "hello"}
        return d.deployment_status_details.deployment_failure_cause if d.deployment_status_details else ""
    check("deployment_rejected_by_validation", rejected)

    def deferred_update():
        recipes = os.environ.get("LICHEN_IPC_TEST_RECIPES")
        # A new component: components are told before the update is applied. (Not a new peer
        # version: this component HARD-depends on the peer and would be restarted with it.)
        extra = os.environ.get("LICHEN_IPC_TEST_EXTRA", "com.lichen.test.IpcExtra")
        dep = ipc.create_local_deployment(recipe_directory_path=recipes,
                                          root_component_versions_to_add={extra: "1.0.0"},
                                          component_to_configuration={extra: {"MERGE": {"bump": 1}}}).deployment_id
        d = wait_final(dep)
        assert d.status == "SUCCEEDED", (d.status, vars(d.deployment_status_details or object()))
        pre = [e for e in updates.events if getattr(e, "pre_update_event", None) and e.pre_update_event.deployment_id == dep]
        assert len(pre) >= 2, "expected a second preUpdateEvent after the defer, got %d" % len(pre)
        waited = deferred.get(dep, 0)
        assert waited >= 0.9, "recheck came after %.2fs, wanted >= 1s" % waited
        post = [e for e in updates.events if getattr(e, "post_update_event", None)]
        assert any(e.post_update_event.deployment_id == dep for e in post), "no postUpdateEvent"
        assert dep in [x.deployment_id for x in ipc.list_local_deployments().local_deployments]
        details = ipc.get_component_details(component_name=extra).component_details
        assert details.version == "1.0.0", details.version
        assert ipc.get_configuration(component_name=extra, key_path=["bump"]).value == {"bump": 1}
    check("deployment_deferred_then_succeeded", deferred_update)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        record("script", False, "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))
    with open(RESULTS + ".tmp", "w") as f:
        json.dump({"checks": checks, "done": True}, f, indent=1)
    os.replace(RESULTS + ".tmp", RESULTS)
    failed = [c["name"] for c in checks if not c["ok"]]
    print("%d checks, %d failed %s" % (len(checks), len(failed), failed), flush=True)
    sys.exit(1 if failed else 0)
