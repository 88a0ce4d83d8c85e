//! The fleet deployment agent's loop: takes Greengrass fleet deployments from the cloud — thing
//! group deployments as `aws-gg-deployment` jobs, thing deployments in the
//! `AWSManagedGreengrassV2Deployment` shadow — runs them on the core and reports the result
//! (greengrass-v2.md §5.2–5.4).
//!
//! - On every (re)connect it asks for the next job (`$next/namespace-aws-gg-deployment/get`)
//!   and the shadow (`…/get`); a notify-next or a shadow delta while connected does the same.
//! - One deployment is in flight at a time; a job that arrives meanwhile is asked for again
//!   (`$next/get`) once the current one is reported, the newest shadow document waits.
//! - The core deployment id is the document's `deploymentId`, so a re-delivered job (or the
//!   shadow seen again after a restart) reports the earlier result instead of deploying twice.
//! - A job that leaves `$next` while in flight, or `desiredStatus: CANCELED`, cancels the
//!   core deployment (the core refuses once it is applying; the result is then reported).
//! - A report that cannot be published (offline) is kept and sent on the next connect.
//! - A deployment the core stopped in while applying it (SIGTERM, power cut: rolled back at
//!   the next start, `CORE_RESTARTED`) is still IN_PROGRESS in the cloud; it is run again
//!   under the core id `<deploymentId>:retry<N>`, at most [`MAX_INTERRUPTED_RETRIES`] times,
//!   so a device that was stopped mid-deployment catches up instead of reporting a failure
//!   it did not have, and one that dies in every attempt still ends.
//!
//! Bounds: documents at most [`MAX_DOCUMENT_BYTES`]; a malformed one is reported FAILED with
//! the field named; [`MAX_REMEMBERED_JOBS`] finished jobs remembered for re-delivery; a core
//! deployment waited for at most [`AgentOptions::deployment_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use lichen_core::CoreHandle;
use lichen_model::deployment::{DeploymentRecord, DeploymentStatus};
use lichen_model::fleet::{
    DEPLOYMENT_JOBS_NAMESPACE, DEPLOYMENT_SHADOW_NAME, DESIRED_STATUS_CANCELED, FleetConfiguration,
    ShadowDeploymentDesired, ShadowDeploymentReported, fleet_status_topic,
};
use lichen_mqtt_client::{Publish, QoS};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::status::{
    GGC_VERSION, LastDeployment, Outcome, Trigger, fleet_status, job_status_details,
};
use crate::services::cloud::{CloudLink, LinkState};

/// Largest deployment document accepted (job document or shadow `desired`).
pub const MAX_DOCUMENT_BYTES: usize = 128 * 1024;
/// Finished job ids remembered so that a re-delivery re-reports instead of redeploying.
pub const MAX_REMEMBERED_JOBS: usize = 64;
/// Times a fleet deployment interrupted by a core stop is run again (see the module docs).
pub const MAX_INTERRUPTED_RETRIES: u32 = 2;
/// How often a running core deployment is checked.
const POLL: Duration = Duration::from_millis(200);

/// Timing of the agent (Greengrass defaults; tests shorten them).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `fleetStatus.periodicStatusPublishIntervalSeconds` (Greengrass default 86400 s).
    pub status_interval: Duration,
    /// Component state changes within this window make one fleet-status message.
    pub status_debounce: Duration,
    /// A core deployment not final after this is reported FAILED.
    pub deployment_timeout: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            status_interval: Duration::from_secs(86_400),
            status_debounce: Duration::from_secs(1),
            deployment_timeout: Duration::from_secs(3600),
        }
    }
}

/// The MQTT topics of one thing.
pub struct Topics {
    pub notify_next: String,
    pub next_get: String,
    pub next_get_accepted: String,
    pub next_get_rejected: String,
    jobs_base: String,
    pub shadow_get: String,
    pub shadow_get_accepted: String,
    pub shadow_delta: String,
    pub shadow_update: String,
    pub shadow_update_accepted: String,
    pub fleet_status: String,
}

impl Topics {
    pub fn new(thing: &str) -> Topics {
        let jobs = format!("$aws/things/{thing}/jobs");
        let ns = format!("namespace-{DEPLOYMENT_JOBS_NAMESPACE}");
        let shadow = format!("$aws/things/{thing}/shadow/name/{DEPLOYMENT_SHADOW_NAME}");
        Topics {
            notify_next: format!("{jobs}/notify-next-{ns}"),
            next_get: format!("{jobs}/$next/{ns}/get"),
            next_get_accepted: format!("{jobs}/$next/{ns}/get/accepted"),
            next_get_rejected: format!("{jobs}/$next/{ns}/get/rejected"),
            jobs_base: jobs,
            shadow_get: format!("{shadow}/get"),
            shadow_get_accepted: format!("{shadow}/get/accepted"),
            shadow_delta: format!("{shadow}/update/delta"),
            shadow_update: format!("{shadow}/update"),
            shadow_update_accepted: format!("{shadow}/update/accepted"),
            fleet_status: fleet_status_topic(thing),
        }
    }

    /// `$aws/things/<t>/jobs/<jobId>/namespace-aws-gg-deployment/update`.
    pub fn job_update(&self, job_id: &str) -> String {
        format!(
            "{}/{job_id}/namespace-{DEPLOYMENT_JOBS_NAMESPACE}/update",
            self.jobs_base
        )
    }
}

/// Where a deployment came from, and so where its status goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Job(String),
    Shadow,
}

/// A deployment the agent was handed: the document parsed, or why it could not be.
struct Work {
    source: Source,
    /// The document's deploymentId and configurationArn when they could be read.
    deployment_id: Option<String>,
    configuration_arn: String,
    parsed: Result<FleetConfiguration, String>,
}

struct InFlight {
    source: Source,
    deployment_id: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

struct Done {
    source: Source,
    deployment_id: Option<String>,
    configuration_arn: String,
    outcome: Outcome,
}

/// A report not yet accepted by the cloud.
struct Report {
    topic: String,
    payload: Vec<u8>,
}

pub struct Agent {
    pub core: CoreHandle,
    pub link: CloudLink,
    pub options: AgentOptions,
    /// Fetching from the cloud's `apiEndpoint`; without one, components resolve from the
    /// core's store; `Err`: why fetching cannot work (each deployment fails with it).
    pub staging: Result<Option<std::sync::Arc<super::fetch::Staging>>, String>,
}

impl Agent {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let thing = self.link.thing_name().to_string();
        let topics = Topics::new(&thing);
        let mut subs = Vec::new();
        for filter in [
            &topics.notify_next,
            &topics.next_get_accepted,
            &topics.next_get_rejected,
            &topics.shadow_get_accepted,
            &topics.shadow_delta,
            &topics.shadow_update_accepted,
        ] {
            match self.link.subscribe(filter, QoS::AtLeastOnce).await {
                Ok(rx) => subs.push(rx),
                Err(e) => {
                    tracing::error!(filter = %filter, error = %e, "fleet agent cannot subscribe; fleet deployments are off");
                    return;
                }
            }
        }
        // One channel for every subscription, so the loop selects on one receiver.
        let (msg_tx, mut messages) = mpsc::channel::<Publish>(64);
        for mut rx in subs {
            let tx = msg_tx.clone();
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    if tx.send(p).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(msg_tx);

        let mut state = self.link.state();
        let mut lifecycle = self.core.subscribe_lifecycle();
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(4);
        let mut cadence = tokio::time::interval_at(
            Instant::now() + self.options.status_interval,
            self.options.status_interval,
        );
        let mut st = LoopState {
            agent: &self,
            topics: &topics,
            thing,
            in_flight: None,
            waiting_shadow: None,
            finished_jobs: VecDeque::new(),
            pending_reports: VecDeque::new(),
            last: None,
            sequence: 0,
            status_due: None,
            done_tx,
        };
        if *state.borrow_and_update() == LinkState::Connected {
            st.on_connect().await;
        }
        loop {
            let due = st.status_due;
            tokio::select! {
                _ = stop.changed() => break,
                changed = state.changed() => {
                    if changed.is_err() { break; }
                    let connected = *state.borrow_and_update() == LinkState::Connected;
                    if connected { st.on_connect().await; }
                }
                Some(p) = messages.recv() => st.on_message(&p).await,
                Some(done) = done_rx.recv() => st.on_done(done).await,
                event = lifecycle.recv() => match event {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if st.status_due.is_none() {
                            st.status_due = Some(Instant::now() + self.options.status_debounce);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = async { tokio::time::sleep_until(due.unwrap_or_else(Instant::now)).await }, if due.is_some() => {
                    st.status_due = None;
                    st.publish_status(Trigger::ComponentStatusChange).await;
                }
                _ = cadence.tick() => st.publish_status(Trigger::Cadence).await,
            }
        }
        if let Some(f) = st.in_flight.take() {
            f.task.abort();
        }
    }
}

struct LoopState<'a> {
    agent: &'a Agent,
    topics: &'a Topics,
    thing: String,
    in_flight: Option<InFlight>,
    waiting_shadow: Option<Work>,
    finished_jobs: VecDeque<(String, Outcome)>,
    pending_reports: VecDeque<Report>,
    last: Option<LastDeployment>,
    sequence: u64,
    status_due: Option<Instant>,
    done_tx: mpsc::Sender<Done>,
}

impl LoopState<'_> {
    async fn on_connect(&mut self) {
        tracing::info!("fleet agent: connected; asking for deployments");
        while let Some(r) = self.pending_reports.pop_front() {
            if let Err(e) = self
                .agent
                .link
                .publish(&r.topic, r.payload.clone(), QoS::AtLeastOnce)
                .await
            {
                tracing::warn!(topic = %r.topic, error = %e, "fleet report not sent; kept");
                self.pending_reports.push_front(r);
                return;
            }
        }
        self.publish(self.topics.next_get.clone(), b"{}".to_vec())
            .await;
        self.publish(self.topics.shadow_get.clone(), b"{}".to_vec())
            .await;
        self.publish_status(Trigger::Reconnect).await;
    }

    /// Best effort: a request lost while offline is asked again at the next connect.
    async fn publish(&self, topic: String, payload: Vec<u8>) {
        if let Err(e) = self
            .agent
            .link
            .publish(&topic, payload, QoS::AtLeastOnce)
            .await
        {
            tracing::debug!(topic = %topic, error = %e, "fleet agent publish failed");
        }
    }

    /// A status that must reach the cloud: kept and sent again at the next connect.
    async fn report(&mut self, topic: String, payload: Vec<u8>) {
        match self
            .agent
            .link
            .publish(&topic, payload.clone(), QoS::AtLeastOnce)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "fleet report not sent; kept for the next connect");
                // Bounded: one report per deployment, one deployment at a time.
                if self.pending_reports.len() >= 16 {
                    self.pending_reports.pop_front();
                }
                self.pending_reports.push_back(Report { topic, payload });
            }
        }
    }

    async fn publish_status(&mut self, trigger: Trigger) {
        self.sequence += 1;
        let message = fleet_status(
            &self.agent.core,
            &self.thing,
            self.sequence,
            trigger,
            self.last.as_ref(),
        );
        match serde_json::to_vec(&message) {
            Ok(payload) => {
                self.publish(self.topics.fleet_status.clone(), payload)
                    .await
            }
            Err(e) => tracing::warn!(error = %e, "fleet status not encoded"),
        }
    }

    async fn on_message(&mut self, p: &Publish) {
        let topic: &str = &p.topic;
        if topic == self.topics.next_get_rejected {
            tracing::warn!(reply = %String::from_utf8_lossy(&p.payload), "next job request rejected");
            return;
        }
        if topic == self.topics.shadow_delta {
            // A delta holds only what changed; the whole document comes with get.
            self.publish(self.topics.shadow_get.clone(), b"{}".to_vec())
                .await;
            return;
        }
        if topic == self.topics.shadow_update_accepted {
            return;
        }
        let value: Value = match serde_json::from_slice(&p.payload) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(topic, error = %e, "fleet message is not JSON; ignored");
                return;
            }
        };
        if topic == self.topics.notify_next || topic == self.topics.next_get_accepted {
            self.on_job(&value, p.payload.len()).await;
        } else if topic == self.topics.shadow_get_accepted {
            self.on_shadow(&value, p.payload.len()).await;
        }
    }

    async fn on_job(&mut self, value: &Value, size: usize) {
        let execution = value.get("execution");
        let job_id = execution
            .and_then(|e| e.get("jobId"))
            .and_then(Value::as_str)
            .map(str::to_string);
        // The job in flight left $next: it was canceled.
        if let Some(f) = &self.in_flight
            && let Source::Job(current) = &f.source
            && job_id.as_deref() != Some(current.as_str())
        {
            if let Some(id) = &f.deployment_id {
                tracing::info!(job = %current, deployment = %id, "job canceled; canceling its deployment");
                cancel(&self.agent.core, id).await;
            }
            return;
        }
        let Some(job_id) = job_id else {
            return; // no job waiting
        };
        if job_id.is_empty() || job_id.len() > 64 || job_id.contains(['/', '#', '+']) {
            tracing::warn!(job = %job_id, "job id not usable in a topic; ignored");
            return;
        }
        if self.in_flight.is_some() {
            return; // asked for again once the current one is reported
        }
        if let Some((_, outcome)) = self.finished_jobs.iter().find(|(j, _)| *j == job_id) {
            let outcome = outcome.clone();
            self.report_job(&job_id, &outcome).await;
            return;
        }
        let document = execution.and_then(|e| e.get("jobDocument"));
        let work = parse_work(Source::Job(job_id), document, size, |d| {
            serde_json::from_value::<FleetConfiguration>(d.clone())
                .map_err(|e| format!("jobDocument: {e}"))
        });
        self.begin(work).await;
    }

    async fn on_shadow(&mut self, value: &Value, size: usize) {
        let state = value.get("state");
        let Some(desired) = state.and_then(|s| s.get("desired")) else {
            return;
        };
        if desired.get("fleetConfig").is_none() {
            return;
        }
        let desired_status = desired.get("desiredStatus").and_then(Value::as_str);
        if desired_status == Some(DESIRED_STATUS_CANCELED) {
            if let Some(f) = &self.in_flight
                && f.source == Source::Shadow
                && let Some(id) = &f.deployment_id
            {
                tracing::info!(deployment = %id, "shadow deployment canceled");
                cancel(&self.agent.core, id).await;
            }
            self.waiting_shadow = None;
            return;
        }
        let work = parse_work(Source::Shadow, Some(desired), size, |d| {
            serde_json::from_value::<ShadowDeploymentDesired>(d.clone())
                .map(|s| s.fleet_config)
                .map_err(|e| format!("desired: {e}"))
        });
        // Already reported for this configuration: nothing to do (a restart, a re-get).
        let reported = state
            .and_then(|s| s.get("reported"))
            .and_then(|r| serde_json::from_value::<ShadowDeploymentReported>(r.clone()).ok());
        if let Some(r) = reported
            && r.fleet_configuration_arn_for_status == work.configuration_arn
            && matches!(r.status.as_str(), "SUCCEEDED" | "FAILED" | "CANCELED")
        {
            return;
        }
        if let Some(f) = &self.in_flight {
            if f.source == Source::Shadow && f.deployment_id == work.deployment_id {
                return;
            }
            self.waiting_shadow = Some(work);
            return;
        }
        self.begin(work).await;
    }

    async fn begin(&mut self, work: Work) {
        let arn = work.configuration_arn.clone();
        self.report_progress(&work.source, &arn).await;
        let config = match work.parsed {
            Ok(c) => c,
            Err(cause) => {
                tracing::warn!(cause = %cause, "fleet deployment document refused");
                // Reported through the loop like any result, so that what waits runs next.
                let done = Done {
                    source: work.source.clone(),
                    deployment_id: work.deployment_id.clone(),
                    configuration_arn: arn.clone(),
                    outcome: Outcome::failed(cause),
                };
                let done_tx = self.done_tx.clone();
                let task = tokio::spawn(async move {
                    let _ = done_tx.send(done).await;
                });
                self.in_flight = Some(InFlight {
                    source: work.source,
                    deployment_id: work.deployment_id,
                    task,
                });
                return;
            }
        };
        let core = self.agent.core.clone();
        let timeout = self.agent.options.deployment_timeout;
        let done_tx = self.done_tx.clone();
        let source = work.source.clone();
        let deployment_id = Some(config.deployment_id.clone());
        let staging = self.agent.staging.clone();
        let task = tokio::spawn(async move {
            let outcome = match staging {
                Ok(staging) => {
                    let outcome = run_deployment(&core, &config, staging.as_deref(), timeout).await;
                    if let Some(staging) = staging.as_deref() {
                        staging.sweep(&pending_recipe_dirs(&core));
                    }
                    outcome
                }
                Err(e) => Outcome::failed(format!("fetching from the cloud: {e}")),
            };
            let _ = done_tx
                .send(Done {
                    source,
                    deployment_id: Some(config.deployment_id.clone()),
                    configuration_arn: config.configuration_arn.clone(),
                    outcome,
                })
                .await;
        });
        self.in_flight = Some(InFlight {
            source: work.source,
            deployment_id,
            task,
        });
    }

    async fn report_progress(&mut self, source: &Source, arn: &str) {
        match source {
            Source::Job(job_id) => {
                let body = json!({"status": "IN_PROGRESS", "statusDetails": {}});
                self.publish(
                    self.topics.job_update(job_id),
                    body.to_string().into_bytes(),
                )
                .await;
            }
            Source::Shadow => {
                let body = shadow_report(arn, "IN_PROGRESS", &Default::default());
                self.publish(self.topics.shadow_update.clone(), body).await;
            }
        }
    }

    async fn report_job(&mut self, job_id: &str, outcome: &Outcome) {
        let body = json!({
            "status": outcome.status,
            "statusDetails": job_status_details(&outcome.details),
        });
        self.report(
            self.topics.job_update(job_id),
            body.to_string().into_bytes(),
        )
        .await;
    }

    async fn on_done(&mut self, done: Done) {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.source == done.source && f.deployment_id == done.deployment_id)
        {
            self.in_flight = None;
        }
        tracing::info!(
            deployment = done.deployment_id.as_deref().unwrap_or("?"),
            status = done.outcome.status,
            cause = done.outcome.details.failure_cause.as_deref().unwrap_or(""),
            "fleet deployment finished"
        );
        let trigger = match &done.source {
            Source::Job(job_id) => {
                self.report_job(job_id, &done.outcome).await;
                if self.finished_jobs.len() >= MAX_REMEMBERED_JOBS {
                    self.finished_jobs.pop_front();
                }
                self.finished_jobs
                    .push_back((job_id.clone(), done.outcome.clone()));
                Trigger::ThingGroupDeployment
            }
            Source::Shadow => {
                let body = shadow_report(
                    &done.configuration_arn,
                    done.outcome.status,
                    &done.outcome.details,
                );
                self.report(self.topics.shadow_update.clone(), body).await;
                Trigger::ThingDeployment
            }
        };
        self.last = Some(LastDeployment {
            deployment_id: done.deployment_id.unwrap_or_default(),
            configuration_arn: done.configuration_arn,
            outcome: done.outcome,
        });
        self.publish_status(trigger).await;
        // What waited: the newest shadow document, then the next job.
        if let Some(work) = self.waiting_shadow.take() {
            self.begin(work).await;
        }
        if self.in_flight.is_none() {
            self.publish(self.topics.next_get.clone(), b"{}".to_vec())
                .await;
        }
    }
}

fn shadow_report(
    arn: &str,
    status: &str,
    details: &lichen_model::fleet::DeploymentStatusDetails,
) -> Vec<u8> {
    let reported = ShadowDeploymentReported {
        fleet_configuration_arn_for_status: arn.to_string(),
        status: status.to_string(),
        status_details: details.clone(),
        ggc_version: Some(GGC_VERSION.into()),
    };
    json!({"state": {"reported": reported}})
        .to_string()
        .into_bytes()
}

/// Reads what can be read of a document even when it is refused, so the failure is reported
/// against the right deployment.
fn parse_work(
    source: Source,
    document: Option<&Value>,
    size: usize,
    parse: impl FnOnce(&Value) -> Result<FleetConfiguration, String>,
) -> Work {
    let config_part = document.map(|d| d.get("fleetConfig").unwrap_or(d));
    let text = |key: &str| {
        config_part
            .and_then(|c| c.get(key))
            .and_then(Value::as_str)
            .map(|s| super::status::truncate(s, 256))
    };
    let deployment_id = text("deploymentId");
    let configuration_arn = text("configurationArn").unwrap_or_default();
    let parsed = match document {
        None => Err("jobDocument: missing".to_string()),
        Some(_) if size > MAX_DOCUMENT_BYTES => Err(format!(
            "document: {size} bytes; at most {MAX_DOCUMENT_BYTES}"
        )),
        Some(d) => parse(d),
    };
    Work {
        source,
        deployment_id,
        configuration_arn,
        parsed,
    }
}

/// The core deployment id of attempt `attempt` of fleet deployment `fleet_id` (0: the first):
/// `<fleet_id>:retry<N>`, or, when that would pass the core's
/// [`MAX_DEPLOYMENT_ID_LEN`](lichen_core::deployment::validate::MAX_DEPLOYMENT_ID_LEN),
/// the id cut short + `.` + 16 hex digits of its SHA-256 + `:retry<N>`. Deterministic, so the
/// attempt is found again after a restart; the hash keeps two long ids with one prefix apart.
fn attempt_id(fleet_id: &str, attempt: u32) -> String {
    use sha2::Digest;
    const MAX: usize = lichen_core::deployment::validate::MAX_DEPLOYMENT_ID_LEN;
    if attempt == 0 {
        return fleet_id.to_string();
    }
    let suffix = format!(":retry{attempt}");
    if fleet_id.len() + suffix.len() <= MAX {
        return format!("{fleet_id}{suffix}");
    }
    let hash: String = sha2::Sha256::digest(fleet_id.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut keep = MAX - suffix.len() - hash.len() - 1;
    while !fleet_id.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}.{hash}{suffix}", &fleet_id[..keep])
}

/// The latest core deployment made for fleet deployment `fleet_id` and its attempt number, if
/// any. The core keeps each deployment's request, fleet id included, so this survives
/// restarts without a file of its own.
fn core_deployment_of(core: &CoreHandle, fleet_id: &str) -> Option<(String, u32)> {
    let records = core.list_deployments();
    (0..=MAX_INTERRUPTED_RETRIES).rev().find_map(|attempt| {
        let id = attempt_id(fleet_id, attempt);
        records
            .iter()
            .find(|r| r.request.deployment_id.as_deref() == Some(&id) || r.deployment_id == id)
            .map(|r| (r.deployment_id.clone(), attempt))
    })
}

/// The recipe directories of the core deployments not final yet (the core plans from them).
fn pending_recipe_dirs(core: &CoreHandle) -> Vec<std::path::PathBuf> {
    core.list_deployments()
        .into_iter()
        .filter(|r| !r.status.is_final())
        .filter_map(|r| r.request.recipe_dir)
        .collect()
}

/// Whether the core stopped while applying `record` (and put the previous state back).
fn interrupted_by_core_stop(record: &DeploymentRecord) -> bool {
    record.status == DeploymentStatus::Failed
        && record
            .error_stack
            .iter()
            .any(|c| c == lichen_core::deployment::status::CORE_RESTARTED)
}

/// Cancels the core deployment of fleet deployment `fleet_id` (refused once it is applying).
async fn cancel(core: &CoreHandle, fleet_id: &str) {
    let Some((id, _)) = core_deployment_of(core, fleet_id) else {
        tracing::info!(deployment = %fleet_id, "canceled before it reached the core");
        return;
    };
    match core.cancel_deployment(&id).await {
        Ok(()) => {
            tracing::info!(deployment = %fleet_id, core_deployment = %id, "deployment canceled")
        }
        Err(e) => tracing::warn!(deployment = %fleet_id, error = %e, "deployment not canceled"),
    }
}

/// Runs `config` on the core, or finds the earlier run of the same deploymentId, and waits
/// for its result.
async fn run_deployment(
    core: &CoreHandle,
    config: &FleetConfiguration,
    staging: Option<&super::fetch::Staging>,
    timeout: Duration,
) -> Outcome {
    let fleet_id = config.deployment_id.clone();
    let attempt = match core_deployment_of(core, &fleet_id) {
        None => 0,
        Some((id, attempt)) => {
            // An earlier attempt may still be running, or being rolled back by the core's
            // restart recovery: its final record decides whether to run it again.
            tracing::info!(deployment = %fleet_id, core_deployment = %id, "deployment seen before; waiting for its result");
            let record = match wait_record(core, &fleet_id, &id, timeout).await {
                Ok(record) => record,
                Err(outcome) => return outcome,
            };
            if interrupted_by_core_stop(&record) && attempt < MAX_INTERRUPTED_RETRIES {
                tracing::info!(deployment = %fleet_id, core_deployment = %id, "the core stopped while applying this deployment; running it again");
                attempt + 1
            } else {
                return Outcome::of_record(&record);
            }
        }
    };
    let (recipe_dir, artifact_dir) = match staging {
        Some(staging) => {
            let roots: BTreeMap<String, String> = config
                .components
                .iter()
                .map(|(n, c)| (n.clone(), c.version.clone()))
                .collect();
            staging.sweep(&pending_recipe_dirs(core));
            let store = lichen_core::store::ComponentStore::new(core.layout().clone());
            let stored = |name: &str, version: &str| {
                semver::Version::parse(version).is_ok_and(|v| store.recipe_path(name, &v).is_file())
            };
            match staging.fetch(&fleet_id, &roots, stored).await {
                Ok(dir) => (Some(dir), Some(staging.dir.clone())),
                Err(e) => {
                    staging.sweep(&pending_recipe_dirs(core));
                    return Outcome::failed(e.to_string());
                }
            }
        }
        None => (None, None),
    };
    let mut request = match config.to_request(recipe_dir, artifact_dir) {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e.to_string()),
    };
    request.deployment_id = Some(attempt_id(&fleet_id, attempt));
    match core.create_deployment(request).await {
        Ok(id) => {
            tracing::info!(deployment = %fleet_id, core_deployment = %id, attempt, "fleet deployment submitted");
            wait_result(core, &fleet_id, &id, timeout).await
        }
        Err(e) => Outcome::failed(format!("deployment {fleet_id} refused by the core: {e}")),
    }
}

/// Waits for core deployment `id` (of fleet deployment `fleet_id`) to end.
async fn wait_result(core: &CoreHandle, fleet_id: &str, id: &str, timeout: Duration) -> Outcome {
    match wait_record(core, fleet_id, id, timeout).await {
        Ok(record) => Outcome::of_record(&record),
        Err(outcome) => outcome,
    }
}

/// The final record of core deployment `id`, or the failure to report instead.
async fn wait_record(
    core: &CoreHandle,
    fleet_id: &str,
    id: &str,
    timeout: Duration,
) -> Result<DeploymentRecord, Outcome> {
    let deadline = Instant::now() + timeout;
    loop {
        match core.deployment(id) {
            Ok(record) if record.status.is_final() => return Ok(record),
            Ok(_) => {}
            Err(e) => return Err(Outcome::failed(format!("deployment {fleet_id}: {e}"))),
        }
        if Instant::now() >= deadline {
            return Err(Outcome::failed(format!(
                "deployment {fleet_id} not finished after {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_greengrass_names() {
        let t = Topics::new("core-1");
        assert_eq!(
            t.notify_next,
            "$aws/things/core-1/jobs/notify-next-namespace-aws-gg-deployment"
        );
        assert_eq!(
            t.next_get_accepted,
            "$aws/things/core-1/jobs/$next/namespace-aws-gg-deployment/get/accepted"
        );
        assert_eq!(
            t.job_update("j1"),
            "$aws/things/core-1/jobs/j1/namespace-aws-gg-deployment/update"
        );
        assert_eq!(
            t.shadow_delta,
            "$aws/things/core-1/shadow/name/AWSManagedGreengrassV2Deployment/update/delta"
        );
    }

    #[test]
    fn only_a_deployment_the_core_stopped_in_is_run_again() {
        assert_eq!(attempt_id("d-1", 0), "d-1");
        assert_eq!(attempt_id("d-1", 2), "d-1:retry2");
        let mut record: DeploymentRecord = serde_json::from_value(json!({
            "deploymentId": "d-1", "status": "FAILED", "createdOn": 0,
            "errorStack": ["DEPLOYMENT_FAILURE", "CORE_RESTARTED"], "request": {}
        }))
        .unwrap();
        assert!(interrupted_by_core_stop(&record));
        record.error_stack = vec!["DEPLOYMENT_FAILURE".into(), "COMPONENT_UPDATE_ERROR".into()];
        assert!(
            !interrupted_by_core_stop(&record),
            "a real failure is reported"
        );
        record.error_stack = vec!["DEPLOYMENT_FAILURE".into(), "CORE_RESTARTED".into()];
        record.status = DeploymentStatus::Succeeded;
        assert!(!interrupted_by_core_stop(&record));
    }

    #[test]
    fn a_long_deployment_id_still_fits_its_retry_id() {
        use lichen_core::deployment::validate::MAX_DEPLOYMENT_ID_LEN;
        let long = "d".repeat(MAX_DEPLOYMENT_ID_LEN);
        let other = format!("{}e", "d".repeat(MAX_DEPLOYMENT_ID_LEN - 1));
        let (a, b) = (attempt_id(&long, 2), attempt_id(&other, 2));
        assert_eq!(a.len(), MAX_DEPLOYMENT_ID_LEN, "{a}");
        assert!(a.ends_with(":retry2") && a.starts_with("ddd"), "{a}");
        assert_ne!(a, b, "ids sharing a long prefix keep distinct retries");
        assert_eq!(a, attempt_id(&long, 2), "found again after a restart");
        assert_ne!(attempt_id(&long, 1), a);
        // At the edge: 121 + ":retry1" is exactly the bound and needs no hash.
        let edge = "x".repeat(MAX_DEPLOYMENT_ID_LEN - 7);
        assert_eq!(attempt_id(&edge, 1), format!("{edge}:retry1"));
        let over = "x".repeat(MAX_DEPLOYMENT_ID_LEN - 6);
        assert!(attempt_id(&over, 1).len() <= MAX_DEPLOYMENT_ID_LEN);
        // The core accepts it.
        let request = lichen_core::deployment::model::DeploymentRequest {
            deployment_id: Some(a),
            ..Default::default()
        };
        lichen_core::deployment::validate::check_request(&request).unwrap();
    }

    #[test]
    fn a_malformed_document_names_the_field_and_keeps_its_id() {
        let doc = json!({"deploymentId": "d-9", "configurationArn": "arn:x", "components": 3});
        let work = parse_work(Source::Job("j".into()), Some(&doc), 100, |d| {
            serde_json::from_value::<FleetConfiguration>(d.clone())
                .map_err(|e| format!("jobDocument: {e}"))
        });
        assert_eq!(work.deployment_id.as_deref(), Some("d-9"));
        let err = work.parsed.err().unwrap();
        assert!(err.starts_with("jobDocument: "), "{err}");
        let big = parse_work(Source::Shadow, Some(&doc), MAX_DOCUMENT_BYTES + 1, |_| {
            unreachable!("an oversized document is not parsed")
        });
        assert!(big.parsed.err().unwrap().contains("at most 131072"));
    }
}
