//! Who a connection is ([`Principal`], attached by the gate) and what it may do.

use std::path::Path;
use std::sync::Arc;

use lichen_broker::{Action, Authorizer, ClientRef, PolicyAuthorizer};

use crate::EndpointError;
use crate::client_devices::ClientDevices;

/// The identity the gate gives a connection.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A device certificate attached to this thing, and the client devices associated with
    /// it (a core's), whose shadow topics it may use.
    Thing {
        name: String,
        client_devices: Arc<ClientDevices>,
    },
    /// A fleet-provisioning claim certificate and the templates that list it.
    Claim {
        fingerprint: String,
        templates: Vec<String>,
    },
}

/// The broker's thing name for a claim connection: `$` cannot occur in a thing name, so it
/// never matches a thing's topics or device-policy rules meant for things.
pub fn claim_thing_name(fingerprint: &str) -> String {
    format!("$claim:{}", &fingerprint[..fingerprint.len().min(16)])
}

/// The rule for a device's client id: the thing name, or the thing name, `#`, anything.
pub fn client_id_allowed(thing: &str, client_id: &str) -> bool {
    client_id == thing
        || client_id
            .strip_prefix(thing)
            .is_some_and(|rest| rest.starts_with('#'))
}

/// Reads the cloud's optional device policy (`DeviceGroups` JSON).
pub fn load_device_policy(path: &Path) -> Result<Option<PolicyAuthorizer>, EndpointError> {
    let err = |message: String| EndpointError::DevicePolicy {
        path: path.display().to_string(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    let groups: lichen_broker::DeviceGroups =
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    PolicyAuthorizer::new(&groups)
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

pub struct CloudAuthorizer {
    pub device_policy: Option<PolicyAuthorizer>,
}

const PROVISIONING_CREATE: [&str; 2] = [
    "$aws/certificates/create/json",
    "$aws/certificates/create-from-csr/json",
];

/// Whether `name` is one of a claim's request topics.
fn claim_request(name: &str, templates: &[String]) -> bool {
    PROVISIONING_CREATE.contains(&name)
        || name
            .strip_prefix("$aws/provisioning-templates/")
            .and_then(|rest| rest.strip_suffix("/provision/json"))
            .is_some_and(|t| templates.iter().any(|x| x == t))
}

/// Whether `filter` is a claim's request topic + `/accepted`, `/rejected` or `/+`.
fn claim_reply_filter(filter: &str, templates: &[String]) -> bool {
    ["/accepted", "/rejected", "/+"].iter().any(|suffix| {
        filter
            .strip_suffix(suffix)
            .is_some_and(|base| claim_request(base, templates))
    })
}

/// Whether a topic or filter is under `$aws/`, `$lichen/` (reserved for the services).
fn reserved(name: &str) -> bool {
    name.starts_with("$aws/") || name.starts_with("$lichen/")
}

/// A thing's own prefixes.
fn own(name: &str, thing: &str) -> bool {
    for base in ["$aws/things/", "$lichen/things/"] {
        if let Some(rest) = name.strip_prefix(base)
            && let Some(after) = rest.strip_prefix(thing)
            && after.starts_with('/')
        {
            return true;
        }
    }
    false
}

/// The thing whose shadow topic (or filter) this is, when it is one: `$aws/things/<t>/shadow/…`,
/// classic or named. `<t>` is literal in a filter that passes (a wildcard is no thing name).
pub fn shadow_topic_thing(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("$aws/things/")?;
    let (thing, after) = rest.split_once('/')?;
    after.starts_with("shadow/").then_some(thing)
}

impl Principal {
    /// Whether this principal may use `thing`'s shadow topics: its own, or those of a client
    /// device associated with it.
    pub fn may_use_shadows_of(&self, thing: &str) -> bool {
        match self {
            Principal::Thing {
                name,
                client_devices,
            } => name == thing || client_devices.contains(thing),
            Principal::Claim { .. } => false,
        }
    }
}

impl Authorizer for CloudAuthorizer {
    /// Deliveries are checked, for the one grant that can be withdrawn while subscribed.
    fn checks_receive(&self) -> bool {
        true
    }

    fn allows(&self, client: ClientRef<'_>, action: Action<'_>) -> bool {
        let Some(principal) = client.handle_as::<Principal>() else {
            return false;
        };
        match principal {
            Principal::Thing { name, .. } => {
                let topic = match action {
                    Action::Connect { client_id } => return client_id_allowed(name, client_id),
                    // Subscribing was the check, except for a client device's shadow
                    // topics: its association can be withdrawn while the core is subscribed.
                    Action::Receive { topic } => {
                        return match shadow_topic_thing(topic) {
                            Some(t) if t != name => principal.may_use_shadows_of(t),
                            _ => true,
                        };
                    }
                    Action::Publish { topic } => topic,
                    Action::Subscribe { filter } => filter,
                };
                // A filter passes only if its literal start is the thing's own prefix: the
                // wildcards after it cannot reach another thing.
                if own(topic, name) {
                    return true;
                }
                // A core's client devices: their shadow topics only, nothing else of theirs.
                if shadow_topic_thing(topic).is_some_and(|t| principal.may_use_shadows_of(t)) {
                    return true;
                }
                if reserved(topic) {
                    return false;
                }
                self.device_policy
                    .as_ref()
                    .is_some_and(|p| p.allows(client, action))
            }
            Principal::Claim { templates, .. } => match action {
                Action::Connect { .. } => true,
                Action::Publish { topic } => claim_request(topic, templates),
                Action::Subscribe { filter } => claim_reply_filter(filter, templates),
                Action::Receive { .. } => true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn check(p: Principal, client_id: &str, action: Action<'_>) -> bool {
        let handle: lichen_broker::AuthHandle = Arc::new(p);
        let a = CloudAuthorizer {
            device_policy: None,
        };
        a.allows(
            ClientRef {
                client_id,
                thing: "x",
                handle: Some(&handle),
            },
            action,
        )
    }

    fn thing(n: &str) -> Principal {
        Principal::Thing {
            name: n.into(),
            client_devices: Arc::new(ClientDevices::default()),
        }
    }

    fn core_with(n: &str, devices: &[&str]) -> Principal {
        Principal::Thing {
            name: n.into(),
            client_devices: Arc::new(ClientDevices::fixed(
                devices.iter().map(|d| (*d).to_owned()),
            )),
        }
    }

    #[test]
    fn a_core_uses_only_the_shadow_topics_of_its_client_devices() {
        let core = || core_with("gw", &["sensor-9"]);
        let publish = |t: &str| check(core(), "gw", Action::Publish { topic: t });
        let sub = |f: &str| check(core(), "gw", Action::Subscribe { filter: f });
        let receive = |t: &str| check(core(), "gw", Action::Receive { topic: t });
        assert!(publish("$aws/things/sensor-9/shadow/get"));
        assert!(publish("$aws/things/sensor-9/shadow/update"));
        assert!(publish("$aws/things/sensor-9/shadow/name/cfg/update"));
        assert!(sub("$aws/things/sensor-9/shadow/#"));
        assert!(sub("$aws/things/sensor-9/shadow/name/+/update/accepted"));
        assert!(receive("$aws/things/sensor-9/shadow/update/delta"));
        // Nothing else of the device's.
        assert!(!publish("$aws/things/sensor-9/jobs/start-next"));
        assert!(!sub("$aws/things/sensor-9/jobs/#"));
        assert!(!sub("$aws/things/sensor-9/#"));
        assert!(!sub("$aws/things/sensor-9/+/update"));
        assert!(!publish("$aws/things/sensor-9/shadow"));
        assert!(!publish("$aws/things/sensor-9/shadowx/get"));
        assert!(!publish("$lichen/things/sensor-9/connectivity/update"));
        // Not another device, a prefix of the name, or a wildcard in its place.
        assert!(!publish("$aws/things/sensor-10/shadow/get"));
        assert!(!publish("$aws/things/sensor-/shadow/get"));
        assert!(!publish("$aws/things/sensor-99/shadow/get"));
        assert!(!sub("$aws/things/+/shadow/#"));
        assert!(!sub("$aws/things/#"));
        // The device itself gains nothing from being associated.
        let device = |t: &str| check(thing("sensor-9"), "sensor-9", Action::Publish { topic: t });
        assert!(!device("$aws/things/gw/shadow/get"));
        // Disassociated while subscribed: deliveries stop; the rest is as subscribed.
        let bare = |t: &str| check(thing("gw"), "gw", Action::Receive { topic: t });
        assert!(!bare("$aws/things/sensor-9/shadow/update/accepted"));
        assert!(bare("$aws/things/gw/shadow/update/accepted"));
        assert!(bare("plain/topic"));
        // A core with no client devices: only its own.
        assert!(!check(
            thing("gw"),
            "gw",
            Action::Publish {
                topic: "$aws/things/sensor-9/shadow/get"
            }
        ));
    }

    #[test]
    fn shadow_topic_things() {
        assert_eq!(shadow_topic_thing("$aws/things/a/shadow/get"), Some("a"));
        assert_eq!(shadow_topic_thing("$aws/things/a/shadow/#"), Some("a"));
        assert_eq!(shadow_topic_thing("$aws/things/a/shadow"), None);
        assert_eq!(shadow_topic_thing("$aws/things/a/jobs/get"), None);
        assert_eq!(shadow_topic_thing("$aws/things/a"), None);
        assert_eq!(shadow_topic_thing("$lichen/things/a/shadow/get"), None);
    }

    #[test]
    fn a_thing_uses_only_its_own_reserved_topics() {
        let ok = |t: &str| check(thing("dev-a"), "dev-a", Action::Publish { topic: t });
        assert!(ok("$aws/things/dev-a/shadow/update"));
        assert!(ok("$lichen/things/dev-a/connectivity/update"));
        assert!(!ok("$aws/things/dev-b/shadow/update"));
        assert!(
            !ok("$aws/things/dev-a2/shadow/update"),
            "prefix of another name"
        );
        assert!(!ok("$aws/things/dev-a"), "no trailing slash");
        assert!(!ok("$aws/certificates/create/json"));
        assert!(!ok("plain/topic"), "no device policy: nothing more");
        let sub = |f: &str| check(thing("dev-a"), "dev-a", Action::Subscribe { filter: f });
        assert!(sub("$aws/things/dev-a/shadow/#"));
        assert!(!sub("$aws/things/+/shadow/#"));
        assert!(!sub("$aws/things/#"));
        assert!(!sub("$share/g/$aws/things/dev-a/shadow/#"));
    }

    #[test]
    fn client_ids_are_the_thing_name_or_thing_hash_suffix() {
        assert!(client_id_allowed("a", "a"));
        assert!(client_id_allowed("a", "a#2"));
        assert!(!client_id_allowed("a", "ab"));
        assert!(!client_id_allowed("a", "a-b"));
        assert!(!client_id_allowed("a", "b"));
        assert!(check(thing("a"), "a", Action::Connect { client_id: "a#x" }));
        assert!(!check(
            thing("a"),
            "ab",
            Action::Connect { client_id: "ab" }
        ));
    }

    #[test]
    fn a_claim_uses_only_the_provisioning_topics_of_its_templates() {
        let claim = || Principal::Claim {
            fingerprint: "ff".into(),
            templates: vec!["T1".into()],
        };
        let publish = |t: &str| check(claim(), "c", Action::Publish { topic: t });
        assert!(publish("$aws/certificates/create/json"));
        assert!(publish("$aws/certificates/create-from-csr/json"));
        assert!(publish("$aws/provisioning-templates/T1/provision/json"));
        assert!(!publish("$aws/provisioning-templates/T2/provision/json"));
        assert!(!publish("$aws/certificates/create/json/accepted"));
        assert!(!publish("$aws/things/c/shadow/update"));
        assert!(!publish("anything"));
        let sub = |f: &str| check(claim(), "c", Action::Subscribe { filter: f });
        assert!(sub("$aws/certificates/create/json/accepted"));
        assert!(sub("$aws/certificates/create/json/+"));
        assert!(sub(
            "$aws/provisioning-templates/T1/provision/json/rejected"
        ));
        assert!(!sub(
            "$aws/provisioning-templates/T2/provision/json/accepted"
        ));
        assert!(!sub("$aws/certificates/#"));
        assert!(!sub("#"));
    }
}
