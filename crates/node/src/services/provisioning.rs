//! The core's cloud identity: the bundle's certificate and key, or one obtained once by fleet
//! provisioning with a claim certificate (AWS IoT's MQTT API: CreateCertificateFromCsr, then
//! RegisterThing) and kept under `<root>/cloud/identity/`:
//!
//! ```text
//! <root>/cloud/identity/thing.private.key   generated here (rcgen, ECDSA P-256), 0600
//! <root>/cloud/identity/thing.cert.pem      issued by the cloud from our CSR
//! <root>/cloud/identity/identity.json       {"thingName": …}; written last: its presence
//!                                           means the identity is complete
//! ```
//!
//! Each file is written crash-safely (`lichen_sys::atomic`: temp + fsync + rename + directory
//! fsync). Once `identity.json` exists the claim certificate is never used again, also after
//! restarts. A crash before it leaves no identity, and the next start provisions afresh.
//! Each request waits at most [`PROVISIONING_TIMEOUT`] for its answer. Provisioning holds
//! `<root>/cloud/provisioning.lock` (flock) so two cores on one root never both register.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lichen_core::settings::{CloudSettings, FleetProvisioningSettings, Settings};
use lichen_mqtt_client::{
    Client, ClientError, ConnectOptions, Incoming, Protocol, QoS, TlsFiles, Transport,
};
use lichen_sys::atomic::{PRIVATE, PUBLIC, write_atomic, write_json_atomic};
use serde::{Deserialize, Serialize};

/// How long each provisioning request (CreateCertificateFromCsr, RegisterThing) may take.
pub const PROVISIONING_TIMEOUT: Duration = Duration::from_secs(60);

pub const CREATE_FROM_CSR_TOPIC: &str = "$aws/certificates/create-from-csr/json";

/// `$aws/provisioning-templates/<template>/provision/json`.
pub fn register_thing_topic(template: &str) -> String {
    format!("$aws/provisioning-templates/{template}/provision/json")
}

/// The identity the cloud connection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub thing_name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Obtained by fleet provisioning (as opposed to the bundle's files).
    pub provisioned: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error("fleet provisioning: cannot connect with the claim certificate: {0}")]
    Connect(#[source] ClientError),
    #[error("fleet provisioning: {topic}: {0}", topic = .1)]
    Mqtt(#[source] ClientError, String),
    #[error(
        "fleet provisioning rejected on {topic}: {error_code} (status {status_code}){}",
        message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Rejected {
        topic: String,
        status_code: u16,
        error_code: String,
        message: Option<String>,
    },
    #[error("fleet provisioning: no answer on {topic}/accepted or /rejected within {secs} s")]
    Timeout { topic: String, secs: u64 },
    #[error("fleet provisioning: the answer on {topic} is not valid: {reason}")]
    BadAnswer { topic: String, reason: String },
    #[error("fleet provisioning: {0}")]
    Key(String),
    #[error("cloud identity {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error("cloud: {0}")]
    Config(String),
}

/// What `identity.json` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityFile {
    thing_name: String,
}

/// `<root>/cloud/identity`.
pub fn identity_dir(root: &Path) -> PathBuf {
    // The cloud service owns `<root>/cloud/` (the core's RootLayout does not look inside).
    root.join("cloud").join("identity")
}

/// The identity stored by an earlier provisioning, if complete.
pub fn stored_identity(root: &Path) -> Result<Option<Identity>, ProvisioningError> {
    let dir = identity_dir(root);
    let file = dir.join("identity.json");
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ProvisioningError::Store {
                path: file,
                reason: e.to_string(),
            });
        }
    };
    let parsed: IdentityFile =
        serde_json::from_slice(&text).map_err(|e| ProvisioningError::Store {
            path: file.clone(),
            reason: e.to_string(),
        })?;
    let identity = Identity {
        thing_name: parsed.thing_name,
        cert_path: dir.join("thing.cert.pem"),
        key_path: dir.join("thing.private.key"),
        provisioned: true,
    };
    for p in [&identity.cert_path, &identity.key_path] {
        if !p.is_file() {
            return Err(ProvisioningError::Store {
                path: p.clone(),
                reason: "missing, though identity.json is present".into(),
            });
        }
    }
    Ok(Some(identity))
}

/// The identity to connect with: the bundle's, the stored one, or (fleet provisioning with
/// nothing stored yet) a new one obtained now with the claim certificate.
pub async fn ensure_identity(
    root: &Path,
    settings: &Settings,
    timeout: Duration,
) -> Result<Identity, ProvisioningError> {
    let cloud = settings
        .cloud
        .as_ref()
        .ok_or_else(|| ProvisioningError::Config("no cloud section".into()))?;
    let Some(fleet) = &cloud.fleet_provisioning else {
        let (Some(cert), Some(key)) = (&cloud.certificate_file_path, &cloud.private_key_path)
        else {
            return Err(ProvisioningError::Config(
                "needs certificateFilePath and privateKeyPath, or fleetProvisioning".into(),
            ));
        };
        return Ok(Identity {
            thing_name: settings.thing_name.clone(),
            cert_path: cert.clone(),
            key_path: key.clone(),
            provisioned: false,
        });
    };
    if let Some(identity) = stored_identity(root)? {
        return Ok(identity);
    }
    // One provisioning per root: a second core started on it meanwhile fails here instead of
    // registering a second thing.
    let cloud_dir = root.join("cloud");
    std::fs::create_dir_all(&cloud_dir).map_err(|e| ProvisioningError::Store {
        path: cloud_dir.clone(),
        reason: e.to_string(),
    })?;
    let lock_path = cloud_dir.join("provisioning.lock");
    let _lock = lichen_sys::lock::FileLock::try_exclusive(&lock_path).map_err(|e| {
        ProvisioningError::Store {
            path: lock_path.clone(),
            reason: e.to_string(),
        }
    })?;
    if let Some(identity) = stored_identity(root)? {
        return Ok(identity);
    }
    let ca = settings
        .root_ca_path
        .as_ref()
        .ok_or_else(|| ProvisioningError::Config("needs rootCaPath".into()))?;
    provision(root, cloud, fleet, ca, timeout).await
}

/// Requests one answer: publishes `request` on `topic` and waits for `topic/accepted` or
/// `topic/rejected` (both subscribed to beforehand by the caller).
async fn ask(
    client: &Client,
    incoming: &mut Incoming,
    topic: &str,
    request: serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, ProvisioningError> {
    let accepted = format!("{topic}/accepted");
    let rejected = format!("{topic}/rejected");
    client
        .publish(topic, request.to_string(), QoS::AtLeastOnce)
        .await
        .map_err(|e| ProvisioningError::Mqtt(e, topic.to_string()))?;
    let wait = async {
        while let Some(p) = incoming.recv().await {
            let body = || -> Result<serde_json::Value, ProvisioningError> {
                serde_json::from_slice(&p.payload).map_err(|e| ProvisioningError::BadAnswer {
                    topic: p.topic.to_string(),
                    reason: e.to_string(),
                })
            };
            if *p.topic == *accepted {
                return body();
            }
            if *p.topic == *rejected {
                let v = body()?;
                return Err(ProvisioningError::Rejected {
                    topic: rejected.clone(),
                    status_code: v["statusCode"].as_u64().unwrap_or(0).min(999) as u16,
                    error_code: v["errorCode"]
                        .as_str()
                        .unwrap_or("(no errorCode)")
                        .to_string(),
                    message: v["errorMessage"].as_str().map(str::to_string),
                });
            }
        }
        Err(ProvisioningError::Mqtt(
            client.closed().await,
            topic.to_string(),
        ))
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| ProvisioningError::Timeout {
            topic: topic.to_string(),
            secs: timeout.as_secs(),
        })?
}

fn field<'a>(
    v: &'a serde_json::Value,
    topic: &str,
    name: &str,
) -> Result<&'a str, ProvisioningError> {
    v[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProvisioningError::BadAnswer {
            topic: format!("{topic}/accepted"),
            reason: format!("no {name}"),
        })
}

/// Fleet provisioning by claim: connect with the claim certificate, CreateCertificateFromCsr
/// with a key generated here, RegisterThing, and store the identity.
pub async fn provision(
    root: &Path,
    cloud: &CloudSettings,
    fleet: &FleetProvisioningSettings,
    ca: &Path,
    timeout: Duration,
) -> Result<Identity, ProvisioningError> {
    let dir = identity_dir(root);
    tracing::info!(
        endpoint = %cloud.endpoint(),
        template = %fleet.provisioning_template,
        "provisioning the core with its claim certificate"
    );
    let mut options = ConnectOptions::new(cloud.endpoint(), claim_client_id());
    options.protocol = Protocol::V5;
    options.connect_timeout = timeout.min(Duration::from_secs(30));
    options.transport = Transport::Tls(TlsFiles {
        ca: ca.to_path_buf(),
        client_cert: Some(fleet.claim_certificate_path.clone()),
        client_key: Some(fleet.claim_certificate_private_key_path.clone()),
        server_name: None,
    });
    let (client, mut incoming) = Client::connect(options)
        .await
        .map_err(ProvisioningError::Connect)?;
    let result = provision_on(&client, &mut incoming, &dir, fleet, timeout).await;
    let _ = client.disconnect().await;
    let identity = result?;
    tracing::info!(thing = %identity.thing_name, "fleet provisioning done; the claim certificate is no longer used");
    Ok(identity)
}

async fn provision_on(
    client: &Client,
    incoming: &mut Incoming,
    dir: &Path,
    fleet: &FleetProvisioningSettings,
    timeout: Duration,
) -> Result<Identity, ProvisioningError> {
    let register = register_thing_topic(&fleet.provisioning_template);
    for topic in [CREATE_FROM_CSR_TOPIC, register.as_str()] {
        for answer in ["accepted", "rejected"] {
            let filter = format!("{topic}/{answer}");
            client
                .subscribe_one(&filter, QoS::AtLeastOnce)
                .await
                .map_err(|e| ProvisioningError::Mqtt(e, filter.clone()))?;
        }
    }
    let key = rcgen::KeyPair::generate().map_err(|e| ProvisioningError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| ProvisioningError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "lichen core");
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| ProvisioningError::Key(format!("building the CSR: {e}")))?;
    let created = ask(
        client,
        incoming,
        CREATE_FROM_CSR_TOPIC,
        serde_json::json!({ "certificateSigningRequest": csr }),
        timeout,
    )
    .await?;
    let cert_pem = field(&created, CREATE_FROM_CSR_TOPIC, "certificatePem")?.to_string();
    let token = field(&created, CREATE_FROM_CSR_TOPIC, "certificateOwnershipToken")?.to_string();
    if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ProvisioningError::BadAnswer {
            topic: format!("{CREATE_FROM_CSR_TOPIC}/accepted"),
            reason: "certificatePem holds no PEM certificate".into(),
        });
    }
    let parameters: BTreeMap<&str, &str> = fleet
        .template_parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let registered = ask(
        client,
        incoming,
        &register,
        serde_json::json!({ "certificateOwnershipToken": token, "parameters": parameters }),
        timeout,
    )
    .await?;
    let thing_name = field(&registered, &register, "thingName")?.to_string();
    store(dir, &thing_name, &cert_pem, &key.serialize_pem())
}

/// Writes key, certificate, then `identity.json` (the commit point), each crash-safely.
fn store(
    dir: &Path,
    thing_name: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Identity, ProvisioningError> {
    let err = |path: &Path, e: &dyn std::fmt::Display| ProvisioningError::Store {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, &e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(dir, &e))?;
    }
    let key_path = dir.join("thing.private.key");
    let cert_path = dir.join("thing.cert.pem");
    write_atomic(&key_path, key_pem.as_bytes(), PRIVATE).map_err(|e| err(&key_path, &e))?;
    write_atomic(&cert_path, cert_pem.as_bytes(), PUBLIC).map_err(|e| err(&cert_path, &e))?;
    let file = dir.join("identity.json");
    write_json_atomic(
        &file,
        &IdentityFile {
            thing_name: thing_name.to_string(),
        },
        PUBLIC,
    )
    .map_err(|e| err(&file, &e))?;
    Ok(Identity {
        thing_name: thing_name.to_string(),
        cert_path,
        key_path,
        provisioned: true,
    })
}

/// A client id for the claim connection, unique per attempt.
fn claim_client_id() -> String {
    format!("lichen-claim-{:016x}", rand::random::<u64>())
}
