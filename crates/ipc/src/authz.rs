//! `accessControl` authorization, as Greengrass defines it (DG interprocess-communication.md).
//!
//! A component's configuration key `accessControl` maps IPC service ids to policies:
//! `{ "<service id>": { "<policy id>": { "operations": [..], "resources": [..] } } }`.
//! A call is allowed when some policy of the caller, under the operation's service id, lists
//! the operation (or `*`) and a resource matching the requested one. Default: deny.
//!
//! Resources: `*` matches any run of characters (a lone `*` matches everything); `${*}`,
//! `${?}` and `${$}` stand for a literal `*`, `?` and `$`. A bare `?` or any other `${...}`
//! makes the resource malformed: it never matches (as in Greengrass nucleus lite).
//! `{iot:thingName}` in a resource is replaced by the core's thing name. For the mqttproxy
//! service, a resource that is an MQTT filter also matches by MQTT rules (`+`, `#`).
//!
//! Policies are cached per component and dropped when that component's configuration
//! changes, so a deployment that changes policies applies on the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use lichen_core::CoreHandle;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

pub const SERVICE_PUBSUB: &str = "aws.greengrass.ipc.pubsub";
pub const SERVICE_MQTTPROXY: &str = "aws.greengrass.ipc.mqttproxy";
pub const SERVICE_CLI: &str = "aws.greengrass.Cli";
pub const SERVICE_LIFECYCLE: &str = "aws.greengrass.ipc.lifecycle";
pub const SERVICE_COMPONENT_METRIC: &str = "aws.greengrass.ipc.componentmetric";
/// lichen extension: who may call ValidateAuthorizationToken besides Stream Manager.
pub const SERVICE_AUTH: &str = "lichen.ipc.auth";

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Lit(char),
    Star,
}

/// A compiled resource pattern. `None` tokens: malformed, never matches.
#[derive(Debug, Clone, PartialEq)]
struct Resource {
    raw: String,
    tokens: Option<Vec<Token>>,
}

impl Resource {
    fn compile(raw: &str, thing_name: &str) -> Self {
        let text = raw.replace("{iot:thingName}", thing_name);
        Resource {
            raw: text.clone(),
            tokens: compile_pattern(&text),
        }
    }

    fn matches(&self, requested: &str, mqtt: bool) -> bool {
        let Some(tokens) = &self.tokens else {
            return false;
        };
        if glob_match(tokens, requested) {
            return true;
        }
        mqtt && self.raw.contains(['+', '#'])
            && lichen_bus::validate_topic_filter(&self.raw).is_ok()
            && lichen_bus::topic_matches(&self.raw, requested)
    }
}

fn compile_pattern(text: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '$' if chars.get(i + 1) == Some(&'{') => {
                match (chars.get(i + 2), chars.get(i + 3)) {
                    (Some(&c @ ('*' | '?' | '$')), Some('}')) => out.push(Token::Lit(c)),
                    _ => return None,
                }
                i += 4;
            }
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => return None,
            c => {
                out.push(Token::Lit(c));
                i += 1;
            }
        }
    }
    Some(out)
}

/// Wildcard match with backtracking to the last star: O(len(p) * len(s)) worst case.
fn glob_match(pattern: &[Token], s: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pattern.get(p) {
            Some(Token::Lit(c)) if *c == s[i] => {
                p += 1;
                i += 1;
            }
            Some(Token::Star) => {
                star = Some((p, i));
                p += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|t| *t == Token::Star)
}

#[derive(Debug, Clone, PartialEq)]
struct Policy {
    operations: Vec<String>,
    resources: Vec<Resource>,
}

/// One component's policies, by service id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Policies {
    by_service: HashMap<String, Vec<Policy>>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

impl Policies {
    /// Parses an `accessControl` value. Malformed entries are skipped (they grant nothing).
    pub fn parse(access_control: &Value, thing_name: &str) -> Self {
        let mut by_service: HashMap<String, Vec<Policy>> = HashMap::new();
        let Some(services) = access_control.as_object() else {
            return Policies::default();
        };
        for (service, policies) in services {
            let Some(policies) = policies.as_object() else {
                continue;
            };
            for policy in policies.values() {
                let Some(p) = policy.as_object() else {
                    continue;
                };
                let resources = strings(p.get("resources"))
                    .iter()
                    .map(|r| Resource::compile(r, thing_name))
                    .collect();
                by_service.entry(service.clone()).or_default().push(Policy {
                    operations: strings(p.get("operations")),
                    resources,
                });
            }
        }
        Policies { by_service }
    }

    /// Whether a policy under `service` allows `operation` (full name, e.g.
    /// `aws.greengrass#PublishToTopic`) on `resource`.
    pub fn allows(&self, service: &str, operation: &str, resource: &str) -> bool {
        let mqtt = service == SERVICE_MQTTPROXY;
        self.by_service.get(service).is_some_and(|policies| {
            policies.iter().any(|p| {
                p.operations.iter().any(|o| o == "*" || o == operation)
                    && p.resources.iter().any(|r| r.matches(resource, mqtt))
            })
        })
    }
}

/// Per-component policy cache, invalidated by configuration changes.
pub struct PolicyCache {
    core: CoreHandle,
    cache: RwLock<HashMap<String, Arc<Policies>>>,
    generation: AtomicU64,
}

impl PolicyCache {
    pub fn new(core: CoreHandle) -> Arc<Self> {
        Arc::new(PolicyCache {
            core,
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        })
    }

    /// Follows configuration changes until the core's change channel closes.
    pub fn spawn_invalidator(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut rx = self.core.subscribe_configuration();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = rx.recv().await;
                let Some(me) = me.upgrade() else { return };
                match event {
                    Ok(change) => {
                        if change.key_path.is_empty() || change.key_path[0] == "accessControl" {
                            me.invalidate(Some(&change.component));
                        }
                    }
                    Err(RecvError::Lagged(_)) => me.invalidate(None),
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    fn invalidate(&self, component: Option<&str>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        match component {
            Some(c) => {
                cache.remove(c);
            }
            None => cache.clear(),
        }
    }

    pub fn policies(&self, component: &str) -> Arc<Policies> {
        if let Some(p) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(component)
        {
            return p.clone();
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let value = self
            .core
            .get_configuration(component, &["accessControl".to_string()])
            .unwrap_or(Value::Null);
        let parsed = Arc::new(Policies::parse(&value, self.core.thing_name()));
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        // Do not cache what an invalidation raced with; the next call reads again.
        if self.generation.load(Ordering::SeqCst) == generation {
            cache.insert(component.to_string(), parsed.clone());
        }
        parsed
    }

    pub fn allows(&self, component: &str, service: &str, operation: &str, resource: &str) -> bool {
        self.policies(component)
            .allows(service, operation, resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pol(resources: &[&str]) -> Policies {
        Policies::parse(
            &json!({"aws.greengrass.ipc.pubsub": {"p1": {
                "operations": ["aws.greengrass#PublishToTopic"], "resources": resources}},
              "aws.greengrass.ipc.mqttproxy": {"p2": {"operations": ["*"], "resources": resources}}}),
            "gw-1",
        )
    }

    const PUB: &str = "aws.greengrass#PublishToTopic";

    #[test]
    fn exact_and_star_resources() {
        let p = pol(&["test/topic", "factory/1/devices/Thermostat*/status"]);
        assert!(p.allows(SERVICE_PUBSUB, PUB, "test/topic"));
        assert!(!p.allows(SERVICE_PUBSUB, PUB, "test/topic2"));
        assert!(p.allows(SERVICE_PUBSUB, PUB, "factory/1/devices/Thermostat42/status"));
        assert!(p.allows(SERVICE_PUBSUB, PUB, "factory/1/devices/Thermostat/status"));
        assert!(!p.allows(SERVICE_PUBSUB, PUB, "factory/1/devices/Fan/status"));
        assert!(!p.allows(
            SERVICE_PUBSUB,
            "aws.greengrass#SubscribeToTopic",
            "test/topic"
        ));
        assert!(!p.allows(SERVICE_CLI, PUB, "test/topic"));
        assert!(pol(&["*"]).allows(SERVICE_PUBSUB, PUB, "anything/at/all"));
        assert!(pol(&["a*b*c"]).allows(SERVICE_PUBSUB, PUB, "aXXbYbZc"));
        assert!(!pol(&["a*b*c"]).allows(SERVICE_PUBSUB, PUB, "aXXbYbZ"));
    }

    #[test]
    fn escapes() {
        let p = pol(&["lit/${*}/x", "q${?}", "${$}{name}", "$aws/things/x"]);
        assert!(p.allows(SERVICE_PUBSUB, PUB, "lit/*/x"));
        assert!(!p.allows(SERVICE_PUBSUB, PUB, "lit/abc/x"));
        assert!(p.allows(SERVICE_PUBSUB, PUB, "q?"));
        assert!(p.allows(SERVICE_PUBSUB, PUB, "${name}"));
        assert!(p.allows(SERVICE_PUBSUB, PUB, "$aws/things/x"));
    }

    #[test]
    fn malformed_resources_grant_nothing() {
        let p = pol(&["a?", "${foo}", "b${*"]);
        for r in ["a?", "ab", "${foo}", "b*", "b"] {
            assert!(!p.allows(SERVICE_PUBSUB, PUB, r), "{r}");
        }
    }

    #[test]
    fn pubsub_treats_mqtt_wildcards_literally_mqttproxy_does_not() {
        let p = pol(&["test/topic/#", "s/+/t"]);
        assert!(p.allows(SERVICE_PUBSUB, PUB, "test/topic/#"));
        assert!(!p.allows(SERVICE_PUBSUB, PUB, "test/topic/filter"));
        assert!(p.allows(
            SERVICE_MQTTPROXY,
            "aws.greengrass#PublishToIoTCore",
            "test/topic/filter"
        ));
        assert!(p.allows(SERVICE_MQTTPROXY, "x", "test/topic/#"));
        assert!(p.allows(SERVICE_MQTTPROXY, "x", "s/a/t"));
        assert!(!p.allows(SERVICE_MQTTPROXY, "x", "s/a/b/t"));
    }

    #[test]
    fn thing_name_variable() {
        let p = pol(&["devices/{iot:thingName}/messages"]);
        assert!(p.allows(SERVICE_PUBSUB, PUB, "devices/gw-1/messages"));
        assert!(!p.allows(SERVICE_PUBSUB, PUB, "devices/other/messages"));
    }

    #[test]
    fn garbage_policies_deny() {
        for v in [
            json!(null),
            json!([1, 2]),
            json!({"aws.greengrass.ipc.pubsub": 5}),
            json!({"aws.greengrass.ipc.pubsub": {"p": "x"}}),
        ] {
            assert!(!Policies::parse(&v, "t").allows(SERVICE_PUBSUB, PUB, "a"));
        }
    }

    proptest::proptest! {
        #[test]
        fn glob_never_panics(p in ".{0,20}", s in ".{0,40}") {
            let r = Resource::compile(&p, "t");
            let _ = r.matches(&s, true);
        }

        #[test]
        fn star_suffix_matches_prefixes(prefix in "[a-z/]{0,10}", rest in "[a-z/]{0,10}") {
            let r = Resource::compile(&format!("{prefix}*"), "t");
            let topic = format!("{prefix}{rest}");
            proptest::prop_assert!(r.matches(&topic, false));
        }
    }
}
