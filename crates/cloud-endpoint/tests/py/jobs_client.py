"""Drives the endpoint's Jobs service with awsiotsdk's awsiot.iotjobs client.

Usage: jobs_client.py PORT CAFILE CERTFILE KEYFILE THING JOB_ID
Prints "ready" once subscribed (the test then queues JOB_ID for THING and notifies), then
"ok <check>" per passed check and "all ok"; exits non-zero on a failure.
"""
import queue
import sys
import uuid

from awscrt import mqtt
from awsiot import iotjobs, mqtt_connection_builder

PORT, CA, CERT, KEY, THING, JOB = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
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
    "next", "start_ok", "start_err", "pend_ok", "desc_ok", "desc_err", "upd_ok", "upd_err"]}


def sub(fn, request, name):
    fut, _ = fn(request=request, qos=Q, callback=lambda r: inbox[name].put(r))
    fut.result(TIMEOUT)


def take(name, what):
    try:
        return inbox[name].get(timeout=TIMEOUT)
    except queue.Empty:
        fail(f"{what}: nothing on {name}")


sub(jobs.subscribe_to_next_job_execution_changed_events,
    iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=THING), "next")
sub(jobs.subscribe_to_start_next_pending_job_execution_accepted,
    iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=THING), "start_ok")
sub(jobs.subscribe_to_start_next_pending_job_execution_rejected,
    iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=THING), "start_err")
sub(jobs.subscribe_to_get_pending_job_executions_accepted,
    iotjobs.GetPendingJobExecutionsSubscriptionRequest(thing_name=THING), "pend_ok")
sub(jobs.subscribe_to_describe_job_execution_accepted,
    iotjobs.DescribeJobExecutionSubscriptionRequest(thing_name=THING, job_id="$next"), "desc_ok")
sub(jobs.subscribe_to_describe_job_execution_rejected,
    iotjobs.DescribeJobExecutionSubscriptionRequest(thing_name=THING, job_id="$next"), "desc_err")
sub(jobs.subscribe_to_update_job_execution_accepted,
    iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=THING, job_id=JOB), "upd_ok")
sub(jobs.subscribe_to_update_job_execution_rejected,
    iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=THING, job_id=JOB), "upd_err")
print("ready", flush=True)

ev = take("next", "notify-next after queueing")
if ev.execution is None or ev.execution.job_id != JOB or ev.execution.status != "QUEUED":
    fail(f"notify-next: {ev.execution}")
if ev.execution.job_document != {"operation": "install", "component": "com.example.Hello"}:
    fail(f"job document: {ev.execution.job_document}")
ok("notify-next carries the queued job and its document")

jobs.publish_get_pending_job_executions(
    iotjobs.GetPendingJobExecutionsRequest(thing_name=THING, client_token="p1"), Q).result(TIMEOUT)
pend = take("pend_ok", "get pending")
if [j.job_id for j in pend.queued_jobs] != [JOB] or pend.in_progress_jobs or pend.client_token != "p1":
    fail(f"pending: {pend.queued_jobs} {pend.in_progress_jobs}")
ok("get pending lists it as queued")

jobs.publish_describe_job_execution(iotjobs.DescribeJobExecutionRequest(
    thing_name=THING, job_id="$next", include_job_document=True), Q).result(TIMEOUT)
d = take("desc_ok", "describe $next")
if d.execution.job_id != JOB or d.execution.version_number != 1:
    fail(f"describe: {d.execution}")
ok("$next/get describes it")

t = uuid.uuid4().hex
jobs.publish_start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
    thing_name=THING, client_token=t), Q).result(TIMEOUT)
s = take("start_ok", "start-next")
if s.execution is None or s.execution.job_id != JOB or s.execution.status != "IN_PROGRESS" \
        or s.execution.version_number != 2 or s.client_token != t:
    fail(f"start-next: {s.execution}")
ok("start-next -> IN_PROGRESS v2")

jobs.publish_update_job_execution(iotjobs.UpdateJobExecutionRequest(
    thing_name=THING, job_id=JOB, status="SUCCEEDED", expected_version=1, client_token="u0"), Q).result(TIMEOUT)
e = take("upd_err", "stale update")
if e.code != "VersionMismatch":
    fail(f"stale update: {e.code} {e.message}")
ok("stale expectedVersion -> VersionMismatch")

jobs.publish_update_job_execution(iotjobs.UpdateJobExecutionRequest(
    thing_name=THING, job_id=JOB, status="SUCCEEDED", expected_version=2,
    status_details={"result": "installed"}, include_job_execution_state=True, client_token="u1"), Q).result(TIMEOUT)
u = take("upd_ok", "update SUCCEEDED")
if u.execution_state is None or u.execution_state.status != "SUCCEEDED" or u.client_token != "u1":
    fail(f"update: {u.execution_state}")
ok("update -> SUCCEEDED")

ev = take("next", "notify-next after completion")
if ev.execution is not None:
    fail(f"nothing should be next: {ev.execution}")
ok("notify-next: nothing pending")

jobs.publish_update_job_execution(iotjobs.UpdateJobExecutionRequest(
    thing_name=THING, job_id=JOB, status="IN_PROGRESS", client_token="u2"), Q).result(TIMEOUT)
e = take("upd_err", "update after terminal")
if e.code not in ("InvalidStateTransition", "TerminalStateReached"):
    fail(f"after terminal: {e.code}")
ok("a terminal execution accepts no update")

conn.disconnect().result(TIMEOUT)
print("all ok", flush=True)
