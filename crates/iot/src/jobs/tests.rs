use serde_json::{Value, json};

use super::*;

const T0: u64 = 1_700_000_000;

fn doc() -> Value {
    json!({"operation": "install", "components": {"a": "1.0.0"}})
}

fn queued(job: &str, at: u64) -> Execution {
    Execution::queued(job, "thing-1", 1, at)
}

#[test]
fn next_pending_prefers_in_progress_then_oldest_queued() {
    let mut a = queued("a", T0 + 5);
    let b = queued("b", T0 + 1);
    let mut done = queued("c", T0);
    done.status = ExecutionStatus::Succeeded;
    assert_eq!(
        next_pending(&[a.clone(), b.clone(), done.clone()])
            .unwrap()
            .job_id,
        "b"
    );
    a.status = ExecutionStatus::InProgress;
    assert_eq!(
        next_pending(&[a.clone(), b.clone(), done.clone()])
            .unwrap()
            .job_id,
        "a"
    );
    assert!(next_pending(&[done]).is_none());
}

#[test]
fn start_next_moves_queued_to_in_progress() {
    let e = queued("j1", T0);
    let out = start_next(
        Some((&e, &doc())),
        br#"{"clientToken":"c1","statusDetails":{"step":"download"},"stepTimeoutInMinutes":5}"#,
        T0 + 10,
    )
    .unwrap();
    let changed = out.changed.unwrap();
    assert_eq!(changed.status, ExecutionStatus::InProgress);
    assert_eq!(changed.version_number, 2);
    assert_eq!(changed.started_at, Some(T0 + 10));
    assert_eq!(changed.status_details["step"], "download");
    assert_eq!(out.step_timeout_in_minutes, Some(5));
    assert_eq!(out.accepted["execution"]["status"], "IN_PROGRESS");
    assert_eq!(out.accepted["execution"]["jobDocument"], doc());
    assert_eq!(out.accepted["clientToken"], "c1");
    // Already in progress: returned unchanged.
    let again = start_next(Some((&changed, &doc())), b"{}", T0 + 20).unwrap();
    assert!(again.changed.is_none());
    assert_eq!(again.accepted["execution"]["versionNumber"], 2);
    // Nothing pending: accepted without execution.
    let none = start_next(None, b"", T0).unwrap();
    assert_eq!(none.accepted, json!({"timestamp": T0}));
}

#[test]
fn update_transitions_and_errors() {
    let e = queued("j1", T0);
    let out = update(
        Some((&e, &doc())),
        "j1",
        br#"{"status":"IN_PROGRESS","expectedVersion":1,"includeJobExecutionState":true,"clientToken":"u"}"#,
        T0 + 1,
    )
    .unwrap();
    assert_eq!(
        out.accepted,
        json!({
            "executionState": {"status": "IN_PROGRESS", "statusDetails": {}, "versionNumber": 2},
            "timestamp": T0 + 1, "clientToken": "u"
        })
    );
    let running = out.execution;
    assert_eq!(running.started_at, Some(T0 + 1));

    // Stale expectedVersion: VersionMismatch with the current state.
    let err = update(
        Some((&running, &doc())),
        "j1",
        br#"{"status":"SUCCEEDED","expectedVersion":1}"#,
        T0,
    )
    .unwrap_err();
    assert_eq!(err.code, JobsErrorCode::VersionMismatch);
    let payload = err.payload(T0);
    assert_eq!(payload["code"], "VersionMismatch");
    assert_eq!(payload["executionState"]["versionNumber"], 2);

    let done = update(
        Some((&running, &doc())),
        "j1",
        br#"{"status":"SUCCEEDED","statusDetails":{"detailed-deployment-status":"SUCCESSFUL"},"includeJobDocument":true}"#,
        T0 + 2,
    )
    .unwrap();
    assert_eq!(done.accepted["jobDocument"], doc());
    assert!(done.accepted.get("executionState").is_none());
    let done = done.execution;
    assert_eq!(
        (done.status, done.version_number),
        (ExecutionStatus::Succeeded, 3)
    );
    assert_eq!(
        done.started_at,
        Some(T0 + 1),
        "startedAt stays the first start"
    );

    // Terminal: nothing more.
    for status in ["IN_PROGRESS", "FAILED", "SUCCEEDED"] {
        let req = format!(r#"{{"status":"{status}"}}"#);
        let err = update(Some((&done, &doc())), "j1", req.as_bytes(), T0).unwrap_err();
        assert_eq!(err.code, JobsErrorCode::InvalidStateTransition, "{status}");
        assert_eq!(err.execution_state.as_ref().unwrap()["status"], "SUCCEEDED");
    }
    // Statuses only the service sets.
    let err = update(
        Some((&running, &doc())),
        "j1",
        br#"{"status":"CANCELED"}"#,
        T0,
    )
    .unwrap_err();
    assert_eq!(err.code, JobsErrorCode::InvalidStateTransition);
    // Queued straight to a terminal status is allowed (a device may reject a job).
    let rejected = update(Some((&e, &doc())), "j1", br#"{"status":"REJECTED"}"#, T0).unwrap();
    assert_eq!(rejected.execution.status, ExecutionStatus::Rejected);

    let cases: Vec<(&[u8], JobsErrorCode)> = vec![
        (b"{}", JobsErrorCode::InvalidRequest),
        (br#"{"status":"DONE"}"#, JobsErrorCode::InvalidRequest),
        (br#"{"status":5}"#, JobsErrorCode::InvalidRequest),
        (b"{bad", JobsErrorCode::InvalidJson),
        (b"[]", JobsErrorCode::InvalidJson),
        (
            br#"{"status":"FAILED","expectedVersion":-1}"#,
            JobsErrorCode::InvalidRequest,
        ),
        (
            br#"{"status":"FAILED","stepTimeoutInMinutes":0}"#,
            JobsErrorCode::InvalidRequest,
        ),
        (
            br#"{"status":"FAILED","stepTimeoutInMinutes":10081}"#,
            JobsErrorCode::InvalidRequest,
        ),
        (
            br#"{"status":"FAILED","includeJobDocument":"yes"}"#,
            JobsErrorCode::InvalidRequest,
        ),
        (
            br#"{"status":"FAILED","executionNumber":7}"#,
            JobsErrorCode::ResourceNotFound,
        ),
    ];
    for (req, code) in cases {
        let err = update(Some((&running, &doc())), "j1", req, T0).unwrap_err();
        assert_eq!(err.code, code, "{}", String::from_utf8_lossy(req));
    }
    let err = update(
        None,
        "nope",
        br#"{"status":"FAILED","clientToken":"t"}"#,
        T0,
    )
    .unwrap_err();
    assert_eq!(err.code, JobsErrorCode::ResourceNotFound);
    assert_eq!(err.payload(T0)["clientToken"], "t");
}

#[test]
fn status_details_bounds() {
    let e = queued("j1", T0);
    let eleven: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("k{i}"), json!("v"))).collect();
    let ten: serde_json::Map<String, Value> =
        (0..10).map(|i| (format!("k{i}"), json!("v"))).collect();
    let req =
        |details: Value| json!({"status": "IN_PROGRESS", "statusDetails": details}).to_string();
    assert!(
        update(
            Some((&e, &doc())),
            "j1",
            req(Value::Object(ten)).as_bytes(),
            T0
        )
        .is_ok()
    );
    for bad in [
        Value::Object(eleven),
        json!({"k": 1}),
        json!({"": "v"}),
        json!({"bad key": "v"}),
        json!({ "k".repeat(129): "v" }),
        json!({"k": "x".repeat(1025)}),
        json!({"k": ""}),
        json!({"k": "line\nbreak"}),
        json!(["k"]),
    ] {
        let err = update(Some((&e, &doc())), "j1", req(bad.clone()).as_bytes(), T0).unwrap_err();
        assert_eq!(err.code, JobsErrorCode::InvalidRequest, "{bad}");
        assert!(err.message.contains("statusDetails"), "{}", err.message);
    }
}

#[test]
fn describe_by_id_and_next() {
    let e = queued("j1", T0);
    let out = describe(
        Some((&e, &doc())),
        false,
        "j1",
        br#"{"clientToken":"d"}"#,
        T0,
    )
    .unwrap();
    assert_eq!(out["execution"]["jobId"], "j1");
    assert_eq!(out["execution"]["thingName"], "thing-1");
    assert_eq!(out["execution"]["jobDocument"], doc());
    assert_eq!(out["clientToken"], "d");
    let out = describe(
        Some((&e, &doc())),
        false,
        "j1",
        br#"{"includeJobDocument":false}"#,
        T0,
    )
    .unwrap();
    assert!(out["execution"].get("jobDocument").is_none());
    assert_eq!(
        describe(
            Some((&e, &doc())),
            false,
            "j1",
            br#"{"executionNumber":2}"#,
            T0
        )
        .unwrap_err()
        .code,
        JobsErrorCode::ResourceNotFound
    );
    assert_eq!(
        describe(None, false, "zz", b"", T0).unwrap_err().code,
        JobsErrorCode::ResourceNotFound
    );
    assert_eq!(
        describe(None, true, "$next", b"", T0).unwrap(),
        json!({"timestamp": T0})
    );
    let mut done = e.clone();
    done.status = ExecutionStatus::Failed;
    assert_eq!(
        describe(Some((&done, &doc())), false, "j1", b"", T0)
            .unwrap_err()
            .code,
        JobsErrorCode::TerminalStateReached
    );
}

#[test]
fn pending_and_notifications() {
    let mut a = queued("a", T0 + 2);
    a.status = ExecutionStatus::InProgress;
    a.started_at = Some(T0 + 3);
    let b = queued("b", T0 + 1);
    let mut c = queued("c", T0);
    c.status = ExecutionStatus::Canceled;
    let all = [a.clone(), b.clone(), c];
    let out = get_pending(&all, br#"{"clientToken":"p"}"#, T0 + 9).unwrap();
    assert_eq!(out["inProgressJobs"][0]["jobId"], "a");
    assert_eq!(out["inProgressJobs"][0]["startedAt"], T0 + 3);
    assert_eq!(out["queuedJobs"].as_array().unwrap().len(), 1);
    assert_eq!(out["queuedJobs"][0]["jobId"], "b");
    assert_eq!(out["clientToken"], "p");

    let n = notify_payload(&all, T0);
    assert_eq!(n["jobs"]["IN_PROGRESS"][0]["jobId"], "a");
    assert_eq!(n["jobs"]["QUEUED"][0]["jobId"], "b");
    assert!(n["jobs"].get("CANCELED").is_none());
    let many: Vec<Execution> = (0..40).map(|i| queued(&format!("j{i}"), T0 + i)).collect();
    assert_eq!(
        notify_payload(&many, T0)["jobs"]["QUEUED"]
            .as_array()
            .unwrap()
            .len(),
        MAX_NOTIFY_LISTED
    );
    assert_eq!(
        notify_payload(&[], T0),
        json!({"timestamp": T0, "jobs": {}})
    );

    let next = next_pending(&all).unwrap();
    let nn = notify_next_payload(Some((next, &doc())), T0);
    assert_eq!(nn["execution"]["jobId"], "a");
    assert_eq!(nn["execution"]["jobDocument"], doc());
    assert_eq!(notify_next_payload(None, T0), json!({"timestamp": T0}));
}

#[test]
fn execution_serde_uses_aws_names() {
    let e = queued("j1", T0);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["status"], "QUEUED");
    assert_eq!(v["thingName"], "thing-1");
    let back: Execution = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
    for s in ExecutionStatus::ALL {
        assert_eq!(ExecutionStatus::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
}
