//! The payloads this crate builds, parsed by the real awsiotsdk 1.31 model classes
//! (`awsiot.iotshadow`, `awsiot.iotjobs`, `awsiot.iotidentity`) from the project's Python
//! venv: the fields a device client reads must come out with the right values and types.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lichen_iot::jobs::{self, Execution};
use lichen_iot::provisioning::{
    CreateKeysAndCertificateResponse, ProvisioningError, RegisterThingResponse,
};
use lichen_iot::shadow::{self, ShadowLimits};
use lichen_iot::topic::ShadowAddress;
use serde_json::{Value, json};

fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup-test-deps to create the Python venv with awsiotsdk",
        venv.display()
    );
    venv
}

/// Runs `script` with `payloads` (a JSON object) on stdin; the script prints a JSON report.
fn run(script: &str, payloads: &Value) -> Value {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payloads.to_string().as_bytes())
        .expect("write payloads");
    let out = child.wait_with_output().expect("python ran");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

const T: u64 = 1_700_000_000;

#[test]
fn shadow_payloads_parse_with_iotshadow() {
    let limits = ShadowLimits::default();
    let addr = ShadowAddress::new("dev", None).unwrap();
    let first = shadow::apply_update(
        None,
        br#"{"state":{"reported":{"color":"red","n":1}},"clientToken":"c1"}"#,
        T,
        &limits,
    )
    .unwrap();
    let second = shadow::apply_update(
        Some(&first.stored),
        br#"{"state":{"desired":{"color":"blue"}},"clientToken":"c2","version":1}"#,
        T + 1,
        &limits,
    )
    .unwrap();
    let got = shadow::get(
        Some(&second.stored),
        br#"{"clientToken":"g"}"#,
        &addr,
        T + 2,
        &limits,
    )
    .unwrap();
    let deleted = shadow::delete(
        Some(&second.stored),
        br#"{"clientToken":"d"}"#,
        &addr,
        T + 3,
        &limits,
    )
    .unwrap();
    let rejected = shadow::get(None, br#"{"clientToken":"g2"}"#, &addr, T, &limits)
        .unwrap_err()
        .payload(T);
    let payloads = json!({
        "accepted": second.accepted,
        "delta": second.delta.clone().expect("blue vs red is a delta"),
        "documents": second.documents,
        "get": got,
        "delete": deleted.accepted,
        "rejected": rejected,
    });
    let report = run(
        r#"
import json, sys
from awsiot import iotshadow as s
p = json.load(sys.stdin)
a = s.UpdateShadowResponse.from_payload(p["accepted"])
d = s.ShadowDeltaUpdatedEvent.from_payload(p["delta"])
u = s.ShadowUpdatedEvent.from_payload(p["documents"])
g = s.GetShadowResponse.from_payload(p["get"])
x = s.DeleteShadowResponse.from_payload(p["delete"])
r = s.ErrorResponse.from_payload(p["rejected"])
print(json.dumps({
  "accepted": [a.version, a.client_token, a.state.desired, a.timestamp.timestamp()],
  "delta": [d.version, d.state, d.metadata, d.timestamp.timestamp()],
  "documents": [u.previous.version, u.current.version, u.current.state.desired, u.current.state.reported],
  "get": [g.version, g.client_token, g.state.desired, g.state.reported, g.state.delta],
  "delete": [x.version, x.client_token],
  "rejected": [r.code, r.message, r.client_token],
}))
"#,
        &payloads,
    );
    assert_eq!(
        report["accepted"],
        json!([2, "c2", {"color": "blue"}, (T + 1) as f64])
    );
    assert_eq!(report["delta"][0], 2);
    assert_eq!(report["delta"][1], json!({"color": "blue"}));
    assert_eq!(report["delta"][2]["color"]["timestamp"], T + 1);
    assert_eq!(
        report["documents"],
        json!([1, 2, {"color": "blue"}, {"color": "red", "n": 1}])
    );
    assert_eq!(
        report["get"],
        json!([2, "g", {"color": "blue"}, {"color": "red", "n": 1}, {"color": "blue"}])
    );
    assert_eq!(report["delete"], json!([2, "d"]));
    assert_eq!(
        report["rejected"],
        json!([404, "No shadow exists with name: 'dev'", "g2"])
    );
}

#[test]
fn jobs_payloads_parse_with_iotjobs() {
    let doc = json!({"deploymentId": "d-1"});
    let exec = Execution::queued("job-1", "dev", 1, T);
    let started = jobs::start_next(Some((&exec, &doc)), br#"{"clientToken":"s"}"#, T + 1).unwrap();
    let running = started.changed.clone().unwrap();
    let updated = jobs::update(
        Some((&running, &doc)),
        "job-1",
        br#"{"status":"SUCCEEDED","statusDetails":{"k":"v"},"includeJobExecutionState":true,"includeJobDocument":true,"clientToken":"u"}"#,
        T + 2,
    )
    .unwrap();
    let mismatch = jobs::update(
        Some((&running, &doc)),
        "job-1",
        br#"{"status":"FAILED","expectedVersion":9}"#,
        T,
    )
    .unwrap_err()
    .payload(T);
    let other = Execution::queued("job-2", "dev", 1, T + 5);
    let all = [running.clone(), other];
    let payloads = json!({
        "start": started.accepted,
        "update": updated.accepted,
        "describe": jobs::describe(Some((&running, &doc)), false, "job-1", b"{}", T).unwrap(),
        "pending": jobs::get_pending(&all, b"{}", T).unwrap(),
        "notify": jobs::notify_payload(&all, T),
        "next": jobs::notify_next_payload(jobs::next_pending(&all).map(|e| (e, &doc)), T),
        "rejected": mismatch,
    });
    let report = run(
        r#"
import json, sys
from awsiot import iotjobs as j
p = json.load(sys.stdin)
s = j.StartNextJobExecutionResponse.from_payload(p["start"])
u = j.UpdateJobExecutionResponse.from_payload(p["update"])
d = j.DescribeJobExecutionResponse.from_payload(p["describe"])
g = j.GetPendingJobExecutionsResponse.from_payload(p["pending"])
n = j.JobExecutionsChangedEvent.from_payload(p["notify"])
x = j.NextJobExecutionChangedEvent.from_payload(p["next"])
r = j.RejectedError.from_payload(p["rejected"])
print(json.dumps({
  "start": [s.execution.job_id, s.execution.status, s.execution.version_number, s.execution.job_document, s.execution.started_at.timestamp(), s.client_token],
  "update": [u.execution_state.status, u.execution_state.version_number, u.execution_state.status_details, u.job_document, u.client_token],
  "describe": [d.execution.job_id, d.execution.thing_name, d.execution.queued_at.timestamp()],
  "pending": [[e.job_id for e in g.in_progress_jobs], [e.job_id for e in g.queued_jobs]],
  "notify": {k: [e.job_id for e in v] for k, v in n.jobs.items()},
  "next": [x.execution.job_id, x.execution.job_document],
  "rejected": [r.code, r.execution_state.version_number, r.execution_state.status],
}))
"#,
        &payloads,
    );
    assert_eq!(
        report["start"],
        json!(["job-1", "IN_PROGRESS", 2, {"deploymentId": "d-1"}, (T + 1) as f64, "s"])
    );
    assert_eq!(
        report["update"],
        json!(["SUCCEEDED", 3, {"k": "v"}, {"deploymentId": "d-1"}, "u"])
    );
    assert_eq!(report["describe"], json!(["job-1", "dev", T as f64]));
    assert_eq!(report["pending"], json!([["job-1"], ["job-2"]]));
    assert_eq!(
        report["notify"],
        json!({"IN_PROGRESS": ["job-1"], "QUEUED": ["job-2"]})
    );
    assert_eq!(report["next"], json!(["job-1", {"deploymentId": "d-1"}]));
    assert_eq!(
        report["rejected"],
        json!(["VersionMismatch", 2, "IN_PROGRESS"])
    );
}

#[test]
fn provisioning_payloads_parse_with_iotidentity() {
    let keys = CreateKeysAndCertificateResponse {
        certificate_id: "cid".into(),
        certificate_pem: "PEM".into(),
        private_key: "KEY".into(),
        certificate_ownership_token: "tok".into(),
    };
    let reg = RegisterThingResponse {
        device_configuration: [("k".to_string(), "v".to_string())].into(),
        thing_name: "core-1".into(),
    };
    let rejected = ProvisioningError::InvalidParameters {
        name: "ThingName".into(),
        reason: "is required but was not provided".into(),
    }
    .payload();
    let payloads = json!({"keys": keys, "register": reg, "rejected": rejected});
    let report = run(
        r#"
import json, sys
from awsiot import iotidentity as i
p = json.load(sys.stdin)
k = i.CreateKeysAndCertificateResponse.from_payload(p["keys"])
r = i.RegisterThingResponse.from_payload(p["register"])
e = i.ErrorResponse.from_payload(p["rejected"])
print(json.dumps({
  "keys": [k.certificate_id, k.certificate_pem, k.private_key, k.certificate_ownership_token],
  "register": [r.thing_name, r.device_configuration],
  "rejected": [e.status_code, e.error_code, e.error_message],
}))
"#,
        &payloads,
    );
    assert_eq!(report["keys"], json!(["cid", "PEM", "KEY", "tok"]));
    assert_eq!(report["register"], json!(["core-1", {"k": "v"}]));
    assert_eq!(report["rejected"][0], 400);
    assert_eq!(report["rejected"][1], "InvalidParameters");
    assert!(
        report["rejected"][2]
            .as_str()
            .unwrap()
            .contains("ThingName")
    );
}

#[test]
fn sdk_request_payloads_are_accepted() {
    let requests = run(
        r#"
import json, sys
json.load(sys.stdin)
from awsiot import iotshadow as s, iotjobs as j, iotidentity as i
print(json.dumps({
  "update": s.UpdateShadowRequest(thing_name="dev", client_token="c",
            state=s.ShadowState(reported={"on": True}, desired=None, desired_is_nullable=True)).to_payload(),
  "get": s.GetShadowRequest(thing_name="dev", client_token="g").to_payload(),
  "delete": s.DeleteShadowRequest(thing_name="dev", client_token="d").to_payload(),
  "start": j.StartNextPendingJobExecutionRequest(thing_name="dev", client_token="s", step_timeout_in_minutes=5).to_payload(),
  "job_update": j.UpdateJobExecutionRequest(thing_name="dev", job_id="job-1", status="IN_PROGRESS",
            status_details={"step": "1"}, expected_version=1, include_job_execution_state=True,
            client_token="u").to_payload(),
  "describe": j.DescribeJobExecutionRequest(thing_name="dev", job_id="$next", include_job_document=True, client_token="x").to_payload(),
  "register": i.RegisterThingRequest(template_name="T", certificate_ownership_token="tok",
            parameters={"ThingName": "core-1"}).to_payload(),
  "csr": i.CreateCertificateFromCsrRequest(certificate_signing_request="-----BEGIN CERTIFICATE REQUEST-----\nx\n-----END CERTIFICATE REQUEST-----\n").to_payload(),
}))
"#,
        &json!({}),
    );
    let bytes = |k: &str| serde_json::to_vec(&requests[k]).unwrap();
    let limits = ShadowLimits::default();
    let addr = ShadowAddress::new("dev", None).unwrap();
    let before =
        shadow::apply_update(None, br#"{"state":{"desired":{"on":true}}}"#, T, &limits).unwrap();
    let out = shadow::apply_update(Some(&before.stored), &bytes("update"), T, &limits).unwrap();
    assert!(
        out.stored.state.desired.is_none(),
        "desired: null (desired_is_nullable) clears desired"
    );
    assert_eq!(out.accepted["clientToken"], "c");
    assert_eq!(
        shadow::get(Some(&out.stored), &bytes("get"), &addr, T, &limits).unwrap()["clientToken"],
        "g"
    );
    assert_eq!(
        shadow::delete(Some(&out.stored), &bytes("delete"), &addr, T, &limits)
            .unwrap()
            .accepted["clientToken"],
        "d"
    );

    let doc = json!({});
    let exec = Execution::queued("job-1", "dev", 1, T);
    let started = jobs::start_next(Some((&exec, &doc)), &bytes("start"), T).unwrap();
    assert_eq!(started.step_timeout_in_minutes, Some(5));
    let updated = jobs::update(Some((&exec, &doc)), "job-1", &bytes("job_update"), T).unwrap();
    assert_eq!(updated.execution.status_details["step"], "1");
    assert_eq!(updated.accepted["executionState"]["versionNumber"], 2);
    assert_eq!(
        jobs::describe(Some((&exec, &doc)), true, "$next", &bytes("describe"), T).unwrap()["clientToken"],
        "x"
    );

    let reg = lichen_iot::provisioning::parse_register_thing_request(&bytes("register")).unwrap();
    assert_eq!(reg.parameters["ThingName"], "core-1");
    assert!(lichen_iot::provisioning::parse_create_from_csr_request(&bytes("csr")).is_ok());
}
