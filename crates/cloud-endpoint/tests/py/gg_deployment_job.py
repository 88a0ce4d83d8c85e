"""A Greengrass core's side of a thing-group deployment, with awsiotsdk's iotjobs.

Usage: gg_deployment_job.py PORT CAFILE CERTFILE KEYFILE THING JOB_ID DEPLOYMENT_ID COMPONENT VERSION

Greengrass delivers group deployments as jobs in the `aws-gg-deployment` namespace. The
SDK's IotJobsClient has no namespace parameter: its topics are the plain ones
(`jobs/notify-next`, `jobs/{jobId}/update`, ...). So the namespaced topics are used as
Greengrass's nucleus uses them, through the SDK's model classes (request `to_payload`,
response `from_payload`) on the same awscrt MQTT connection:
  notify-next-namespace-aws-gg-deployment, $next/namespace-aws-gg-deployment/get[/accepted],
  {jobId}/namespace-aws-gg-deployment/update[/accepted|/rejected];
and StartNextPendingJobExecution, which AWS defines without a namespace, through the SDK
client itself (it reaches every namespace's jobs).

Prints "ready" once subscribed (the test then creates the deployment and notifies), then
"ok <check>" per passed check and "all ok"; exits non-zero on a failure.
"""
import json
import queue
import sys
import uuid

from awscrt import mqtt
from awsiot import iotjobs, mqtt_connection_builder

PORT, CA, CERT, KEY, THING, JOB, DEPLOYMENT, COMPONENT, VERSION = (
    int(sys.argv[1]), *sys.argv[2:10])
NS = "namespace-aws-gg-deployment"
BASE = f"$aws/things/{THING}/jobs"
TIMEOUT = 15
Q = mqtt.QoS.AT_LEAST_ONCE


def fail(msg):
    print("FAIL", msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok", msg, flush=True)


conn = mqtt_connection_builder.mtls_from_path(
    endpoint="localhost", port=PORT, cert_filepath=CERT, pri_key_filepath=KEY,
    ca_filepath=CA, client_id=THING, clean_session=True, keep_alive_secs=30,
)
conn.connect().result(TIMEOUT)
jobs = iotjobs.IotJobsClient(conn)
inbox = {n: queue.Queue() for n in [
    "ns_next", "plain_next", "ns_desc", "start_ok", "start_err", "ns_upd_ok", "ns_upd_err"]}


def raw_sub(topic, model, name):
    """Subscribes on the connection itself; payloads decoded by the SDK's model class."""
    def on_message(topic, payload, **_):
        inbox[name].put(model.from_payload(json.loads(payload)))
    fut, _ = conn.subscribe(topic=topic, qos=Q, callback=on_message)
    fut.result(TIMEOUT)


def sdk_sub(fn, request, name):
    fut, _ = fn(request=request, qos=Q, callback=lambda r: inbox[name].put(r))
    fut.result(TIMEOUT)


def raw_pub(topic, request):
    fut, _ = conn.publish(topic=topic, payload=json.dumps(request.to_payload()), qos=Q)
    fut.result(TIMEOUT)


def take(name, what):
    try:
        return inbox[name].get(timeout=TIMEOUT)
    except queue.Empty:
        fail(f"{what}: nothing on {name}")


def check_document(doc, where):
    """The job document is the Greengrass deployment Configuration (FleetConfiguration)."""
    if not isinstance(doc, dict):
        fail(f"{where}: job document {doc!r}")
    if doc.get("deploymentId") != DEPLOYMENT:
        fail(f"{where}: deploymentId {doc.get('deploymentId')!r}, not {DEPLOYMENT}")
    comps = doc.get("components") or {}
    if comps.get(COMPONENT, {}).get("version") != VERSION:
        fail(f"{where}: components {comps!r}")
    if not str(doc.get("configurationArn", "")).startswith("arn:") or "thinggroup/" not in doc["configurationArn"]:
        fail(f"{where}: configurationArn {doc.get('configurationArn')!r}")
    if "thinggroup/" not in str(doc.get("onBehalfOf", "")):
        fail(f"{where}: onBehalfOf {doc.get('onBehalfOf')!r}")


raw_sub(f"{BASE}/notify-next-{NS}", iotjobs.NextJobExecutionChangedEvent, "ns_next")
raw_sub(f"{BASE}/$next/{NS}/get/accepted", iotjobs.DescribeJobExecutionResponse, "ns_desc")
raw_sub(f"{BASE}/{JOB}/{NS}/update/accepted", iotjobs.UpdateJobExecutionResponse, "ns_upd_ok")
raw_sub(f"{BASE}/{JOB}/{NS}/update/rejected", iotjobs.RejectedError, "ns_upd_err")
sdk_sub(jobs.subscribe_to_next_job_execution_changed_events,
        iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=THING), "plain_next")
sdk_sub(jobs.subscribe_to_start_next_pending_job_execution_accepted,
        iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=THING), "start_ok")
sdk_sub(jobs.subscribe_to_start_next_pending_job_execution_rejected,
        iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=THING), "start_err")
print("ready", flush=True)

ev = take("ns_next", "namespaced notify-next after the deployment")
if ev.execution is None or ev.execution.job_id != JOB or ev.execution.status != "QUEUED":
    fail(f"notify-next-{NS}: {ev.execution}")
check_document(ev.execution.job_document, "notify-next")
ok("notify-next-namespace-aws-gg-deployment carries the QUEUED job and its FleetConfiguration")

ev = take("plain_next", "plain notify-next")
if ev.execution is not None:
    fail(f"the namespaced job leaked into the plain notify-next: {ev.execution}")
ok("the plain notify-next (the SDK client's) does not carry the namespaced job")

raw_pub(f"{BASE}/$next/{NS}/get", iotjobs.DescribeJobExecutionRequest(
    thing_name=THING, job_id="$next", include_job_document=True, client_token="d1"))
d = take("ns_desc", "describe $next in the namespace")
if d.execution is None or d.execution.job_id != JOB or d.client_token != "d1":
    fail(f"$next/{NS}/get: {d.execution}")
check_document(d.execution.job_document, "describe")
ok("$next/namespace-aws-gg-deployment/get describes it")

t = uuid.uuid4().hex
jobs.publish_start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
    thing_name=THING, client_token=t, status_details={"source": "awsiotsdk"}), Q).result(TIMEOUT)
s = take("start_ok", "start-next")
if s.execution is None or s.execution.job_id != JOB or s.execution.status != "IN_PROGRESS" \
        or s.execution.version_number != 2 or s.client_token != t:
    fail(f"start-next: {s.execution}")
check_document(s.execution.job_document, "start-next")
ok("StartNextPendingJobExecution -> IN_PROGRESS v2 with the document")

raw_pub(f"{BASE}/{JOB}/{NS}/update", iotjobs.UpdateJobExecutionRequest(
    thing_name=THING, job_id=JOB, status="IN_PROGRESS", expected_version=2,
    status_details={"detailed-deployment-status": "IN_PROGRESS"},
    include_job_execution_state=True, client_token="u1"))
u = take("ns_upd_ok", "update IN_PROGRESS")
if u.execution_state is None or u.execution_state.status != "IN_PROGRESS" \
        or u.execution_state.version_number != 3 or u.client_token != "u1":
    fail(f"update IN_PROGRESS: {u.execution_state}")
ok("namespaced update IN_PROGRESS -> v3")

raw_pub(f"{BASE}/{JOB}/{NS}/update", iotjobs.UpdateJobExecutionRequest(
    thing_name=THING, job_id=JOB, status="SUCCEEDED", expected_version=2, client_token="u2"))
e = take("ns_upd_err", "stale update")
if e.code != "VersionMismatch":
    fail(f"stale update: {e.code} {e.message}")
ok("a stale expectedVersion is rejected VersionMismatch")

raw_pub(f"{BASE}/{JOB}/{NS}/update", iotjobs.UpdateJobExecutionRequest(
    thing_name=THING, job_id=JOB, status="SUCCEEDED", expected_version=3,
    status_details={"detailed-deployment-status": "SUCCESSFUL"},
    include_job_execution_state=True, client_token="u3"))
u = take("ns_upd_ok", "update SUCCEEDED")
if u.execution_state is None or u.execution_state.status != "SUCCEEDED" or u.client_token != "u3":
    fail(f"update SUCCEEDED: {u.execution_state}")
ok("namespaced update SUCCEEDED")

ev = take("ns_next", "namespaced notify-next after completion")
if ev.execution is not None:
    fail(f"nothing should be next in the namespace: {ev.execution}")
ok("notify-next-namespace-aws-gg-deployment: nothing pending")

conn.disconnect().result(TIMEOUT)
print("all ok", flush=True)
