//! Client device authorization in the Greengrass `aws.greengrass.clientdevices.Auth` format:
//! device groups chosen by selection rules (`thingName: Name*` clauses joined by `OR`/`AND`),
//! each granting a named policy of statements (`operations` × `resources`).
//!
//! Deny by default: an action is allowed only if a statement of a policy of a group the device
//! belongs to lists the operation (or `*`) and the resource (or `*`). Resources may use
//! `${iot:Connection.Thing.ThingName}` and `${iot:ClientId}`.
//!
//! - `mqtt:connect` → `mqtt:clientId:<client id>`
//! - `mqtt:publish` → `mqtt:topic:<topic>` (exact topic)
//! - `mqtt:subscribe` → `mqtt:topicfilter:<filter>` (exact filter, as Greengrass documents)

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::BrokerError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceGroups {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_version: Option<String>,
    #[serde(default)]
    pub definitions: BTreeMap<String, GroupDefinition>,
    #[serde(default)]
    pub policies: BTreeMap<String, BTreeMap<String, Statement>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDefinition {
    pub selection_rule: String,
    pub policy_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_description: Option<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub operations: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    pub resources: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// An action a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Connect {
        client_id: &'a str,
    },
    Publish {
        topic: &'a str,
    },
    Subscribe {
        filter: &'a str,
    },
    /// A delivery to the client (asked only by an [`crate::hooks::Authorizer`] that checks
    /// receives; the device-group policies decide at subscribe time).
    Receive {
        topic: &'a str,
    },
}

impl Action<'_> {
    fn operation(&self) -> &'static str {
        match self {
            Action::Connect { .. } => "mqtt:connect",
            Action::Publish { .. } => "mqtt:publish",
            Action::Subscribe { .. } => "mqtt:subscribe",
            Action::Receive { .. } => "mqtt:receive",
        }
    }

    fn resource_matches(&self, pattern: &str, thing: &str, client_id: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        let (prefix, value) = match self {
            Action::Connect { client_id } => ("mqtt:clientId:", *client_id),
            Action::Publish { topic } => ("mqtt:topic:", *topic),
            Action::Subscribe { filter } => ("mqtt:topicfilter:", *filter),
            Action::Receive { topic } => ("mqtt:topic:", *topic),
        };
        let Some(rest) = pattern.strip_prefix(prefix) else {
            return false;
        };
        if !rest.contains("${") {
            return rest == value;
        }
        let expanded = rest
            .replace("${iot:Connection.Thing.ThingName}", thing)
            .replace("${iot:ClientId}", client_id);
        expanded == value
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Clause {
    Exact(String),
    Prefix(String),
}

/// A parsed selection rule: OR of AND-groups of `thingName:` clauses.
#[derive(Debug, Clone, PartialEq)]
struct SelectionRule {
    any_of: Vec<Vec<Clause>>,
}

impl SelectionRule {
    fn parse(rule: &str) -> Result<SelectionRule, String> {
        let mut any_of = Vec::new();
        for alt in split_keyword(rule, " OR ") {
            let mut all_of = Vec::new();
            for clause in split_keyword(&alt, " AND ") {
                let clause = clause.trim();
                let Some(value) = clause.strip_prefix("thingName:") else {
                    return Err(format!(
                        "clause {clause:?}: only the thingName selector is supported"
                    ));
                };
                let value = value.trim().replace("\\:", ":");
                if value.is_empty() {
                    return Err(format!("clause {clause:?} has no value"));
                }
                all_of.push(match value.strip_suffix('*') {
                    Some(p) => Clause::Prefix(p.to_string()),
                    None => Clause::Exact(value),
                });
            }
            any_of.push(all_of);
        }
        Ok(SelectionRule { any_of })
    }

    fn matches(&self, thing: &str) -> bool {
        self.any_of.iter().any(|all| {
            all.iter().all(|c| match c {
                Clause::Exact(v) => v == thing,
                Clause::Prefix(p) => thing.starts_with(p.as_str()),
            })
        })
    }
}

fn split_keyword(s: &str, kw: &str) -> Vec<String> {
    s.split(kw).map(str::to_string).collect()
}

/// Compiled device groups, swapped atomically when policies change.
#[derive(Debug, Default)]
pub struct PolicySet {
    groups: Vec<(SelectionRule, Arc<[Statement]>)>,
}

/// The statements that apply to one device, resolved once per policy generation.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    statements: Statements,
}

/// The statement lists of the groups a client is in. Most clients are in one group: that case
/// takes no allocation of its own (one per connection would cost every idle connection ~32 B).
#[derive(Debug, Clone)]
enum Statements {
    One(Arc<[Statement]>),
    Many(Box<[Arc<[Statement]>]>),
}

impl Default for Statements {
    fn default() -> Self {
        Statements::Many(Box::default())
    }
}

impl Statements {
    fn iter(&self) -> impl Iterator<Item = &Statement> {
        let lists: &[Arc<[Statement]>] = match self {
            Statements::One(list) => std::slice::from_ref(list),
            Statements::Many(lists) => lists,
        };
        lists.iter().flat_map(|list| list.iter())
    }
}

impl PolicySet {
    pub fn compile(groups: &DeviceGroups) -> Result<PolicySet, BrokerError> {
        let mut out = Vec::new();
        for (name, def) in &groups.definitions {
            let rule = SelectionRule::parse(&def.selection_rule)
                .map_err(|e| BrokerError::Config(format!("deviceGroups.{name}: {e}")))?;
            let policy = groups.policies.get(&def.policy_name).ok_or_else(|| {
                BrokerError::Config(format!(
                    "deviceGroups.{name}: policy {:?} is not defined",
                    def.policy_name
                ))
            })?;
            let statements: Arc<[Statement]> = policy.values().cloned().collect();
            out.push((rule, statements));
        }
        Ok(PolicySet { groups: out })
    }

    pub fn grants_for(&self, thing: &str) -> Grants {
        let mut matching: Vec<Arc<[Statement]>> = self
            .groups
            .iter()
            .filter(|(rule, _)| rule.matches(thing))
            .map(|(_, s)| s.clone())
            .collect();
        let statements = match matching.pop() {
            Some(only) if matching.is_empty() => Statements::One(only),
            Some(last) => {
                matching.push(last);
                Statements::Many(matching.into_boxed_slice())
            }
            None => Statements::default(),
        };
        Grants { statements }
    }
}

impl Grants {
    pub fn allows(&self, action: Action<'_>, thing: &str, client_id: &str) -> bool {
        let op = action.operation();
        self.statements.iter().any(|st| {
            st.operations.iter().any(|o| o == "*" || o == op)
                && st
                    .resources
                    .iter()
                    .any(|r| action.resource_matches(r, thing, client_id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> DeviceGroups {
        serde_json::from_value(serde_json::json!({
            "formatVersion": "2021-03-05",
            "definitions": {
                "Sensors": {"selectionRule": "thingName: sensor-* OR thingName: MyTeam\\:dev", "policyName": "P"},
                "Admin": {"selectionRule": "thingName: admin", "policyName": "All"}
            },
            "policies": {
                "P": {
                    "c": {"operations": ["mqtt:connect"], "resources": ["mqtt:clientId:${iot:Connection.Thing.ThingName}"]},
                    "p": {"operations": ["mqtt:publish"], "resources": ["mqtt:topic:sensors/${iot:Connection.Thing.ThingName}/data"]},
                    "s": {"operations": "mqtt:subscribe", "resources": "mqtt:topicfilter:cmd/+"}
                },
                "All": {"a": {"operations": ["*"], "resources": ["*"]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn greengrass_policies() {
        let set = PolicySet::compile(&groups()).unwrap();
        let g = set.grants_for("sensor-1");
        assert!(g.allows(
            Action::Connect {
                client_id: "sensor-1"
            },
            "sensor-1",
            "sensor-1"
        ));
        assert!(!g.allows(Action::Connect { client_id: "other" }, "sensor-1", "other"));
        assert!(g.allows(
            Action::Publish {
                topic: "sensors/sensor-1/data"
            },
            "sensor-1",
            "x"
        ));
        assert!(!g.allows(
            Action::Publish {
                topic: "sensors/sensor-2/data"
            },
            "sensor-1",
            "x"
        ));
        assert!(g.allows(Action::Subscribe { filter: "cmd/+" }, "sensor-1", "x"));
        assert!(!g.allows(Action::Subscribe { filter: "cmd/a" }, "sensor-1", "x"));
        let escaped = set.grants_for("MyTeam:dev");
        assert!(escaped.allows(Action::Subscribe { filter: "cmd/+" }, "MyTeam:dev", "x"));
        let nobody = set.grants_for("camera");
        assert!(!nobody.allows(
            Action::Connect {
                client_id: "camera"
            },
            "camera",
            "camera"
        ));
        let admin = set.grants_for("admin");
        assert!(admin.allows(Action::Publish { topic: "any/thing" }, "admin", "c"));
    }

    #[test]
    fn a_device_in_two_groups_gets_both_policies() {
        let mut g = groups();
        g.definitions.get_mut("Admin").unwrap().selection_rule =
            "thingName: admin OR thingName: sensor-7".into();
        let set = PolicySet::compile(&g).unwrap();
        let both = set.grants_for("sensor-7");
        assert!(both.allows(Action::Subscribe { filter: "cmd/+" }, "sensor-7", "x"));
        assert!(both.allows(Action::Publish { topic: "any/thing" }, "sensor-7", "x"));
        let one = set.grants_for("sensor-1");
        assert!(!one.allows(Action::Publish { topic: "any/thing" }, "sensor-1", "x"));
    }

    #[test]
    fn undefined_policy_is_an_error() {
        let mut g = groups();
        g.policies.remove("All");
        assert!(PolicySet::compile(&g).is_err());
    }
}
