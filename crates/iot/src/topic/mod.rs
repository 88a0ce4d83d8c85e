//! The reserved AWS IoT topics lichen's device endpoint and local shadow service answer:
//! Device Shadow (`$aws/things/<thing>/shadow[/name/<shadow>]/…`), Jobs
//! (`$aws/things/<thing>/jobs/…`, with Greengrass's `namespace-<id>` forms) and fleet
//! provisioning (`$aws/certificates/…`, `$aws/provisioning-templates/<name>/provision/json`).
//!
//! Every type parses from a topic name and builds it back ([`std::fmt::Display`]); building
//! what was parsed gives the same string. Name rules (AWS's):
//! - thing: 1–[`MAX_THING_NAME_BYTES`] of `[a-zA-Z0-9:_-]`;
//! - shadow: 1–[`MAX_SHADOW_NAME_BYTES`] of `[a-zA-Z0-9:_-]`;
//! - job id and jobs namespace: 1–[`MAX_JOB_ID_BYTES`] of `[a-zA-Z0-9_-]`;
//! - provisioning template: 1–[`MAX_TEMPLATE_NAME_BYTES`] of `[a-zA-Z0-9_-]`.
//!
//! A topic is at most [`MAX_TOPIC_BYTES`] (AWS IoT's limit); longer ones are refused before
//! they are split.

use std::fmt;

use thiserror::Error;

/// AWS IoT's longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// The longest thing name.
pub const MAX_THING_NAME_BYTES: usize = 128;
/// The longest shadow name.
pub const MAX_SHADOW_NAME_BYTES: usize = 64;
/// The longest job id (and jobs namespace id).
pub const MAX_JOB_ID_BYTES: usize = 64;
/// The longest fleet provisioning template name.
pub const MAX_TEMPLATE_NAME_BYTES: usize = 36;

/// Why a topic is not one of the reserved topics handled here, or a name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicError {
    #[error("topic is {len} bytes; at most {MAX_TOPIC_BYTES} are allowed")]
    TooLong { len: usize },
    #[error("topic {topic:?} is not a reserved shadow, jobs or provisioning topic")]
    NotReserved { topic: String },
    #[error("topic {topic:?} is not a valid {family} topic")]
    Malformed { family: &'static str, topic: String },
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
}

fn check_name(kind: &'static str, name: &str, max: usize, extra: &[u8]) -> Result<(), TopicError> {
    let invalid = |reason| TopicError::InvalidName {
        kind,
        name: name.chars().take(max + 8).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.len() > max {
        return Err(invalid(match kind {
            "thing name" => "longer than 128 bytes",
            "shadow name" => "longer than 64 bytes",
            "template name" => "longer than 36 bytes",
            _ => "longer than 64 bytes",
        }));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
    {
        return Err(invalid(if extra.is_empty() {
            "only letters, digits, '_' and '-' are allowed"
        } else {
            "only letters, digits, ':', '_' and '-' are allowed"
        }));
    }
    Ok(())
}

/// Checks a thing name: 1–128 bytes of `[a-zA-Z0-9:_-]`.
pub fn validate_thing_name(name: &str) -> Result<(), TopicError> {
    check_name("thing name", name, MAX_THING_NAME_BYTES, b":")
}

/// Checks a shadow name: 1–64 bytes of `[a-zA-Z0-9:_-]`.
pub fn validate_shadow_name(name: &str) -> Result<(), TopicError> {
    check_name("shadow name", name, MAX_SHADOW_NAME_BYTES, b":")
}

/// Checks a job id: 1–64 bytes of `[a-zA-Z0-9_-]`.
pub fn validate_job_id(id: &str) -> Result<(), TopicError> {
    check_name("job id", id, MAX_JOB_ID_BYTES, b"")
}

/// Checks a jobs namespace id (the `<id>` of `namespace-<id>`): 1–64 of `[a-zA-Z0-9_-]`.
pub fn validate_namespace(id: &str) -> Result<(), TopicError> {
    check_name("jobs namespace", id, MAX_JOB_ID_BYTES, b"")
}

/// Checks a provisioning template name: 1–36 bytes of `[a-zA-Z0-9_-]`.
pub fn validate_template_name(name: &str) -> Result<(), TopicError> {
    check_name("template name", name, MAX_TEMPLATE_NAME_BYTES, b"")
}

/// Any reserved topic this crate handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservedTopic {
    Shadow(ShadowTopic),
    Jobs(JobsTopic),
    Provisioning(ProvisioningTopic),
}

impl ReservedTopic {
    /// Parses a topic name into whichever family it belongs to.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        check_len(topic)?;
        if let Some(rest) = topic.strip_prefix("$aws/things/") {
            let after_thing = rest.split_once('/').map(|(_, r)| r).unwrap_or("");
            if after_thing == "shadow" || after_thing.starts_with("shadow/") {
                return ShadowTopic::parse(topic).map(Self::Shadow);
            }
            if after_thing.starts_with("jobs/") {
                return JobsTopic::parse(topic).map(Self::Jobs);
            }
        } else if topic.starts_with("$aws/certificates/")
            || topic.starts_with("$aws/provisioning-templates/")
        {
            return ProvisioningTopic::parse(topic).map(Self::Provisioning);
        }
        Err(TopicError::NotReserved {
            topic: topic.to_owned(),
        })
    }
}

impl fmt::Display for ReservedTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shadow(t) => t.fmt(f),
            Self::Jobs(t) => t.fmt(f),
            Self::Provisioning(t) => t.fmt(f),
        }
    }
}

fn check_len(topic: &str) -> Result<(), TopicError> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong { len: topic.len() });
    }
    Ok(())
}

/// `accepted` / `rejected`, the two answers every request topic has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Accepted,
    Rejected,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Self::Accepted),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shadows

/// Which shadow of which thing: the classic (unnamed) one when `shadow` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShadowAddress {
    pub thing: String,
    pub shadow: Option<String>,
}

impl ShadowAddress {
    /// A checked address.
    pub fn new(thing: &str, shadow: Option<&str>) -> Result<Self, TopicError> {
        validate_thing_name(thing)?;
        if let Some(name) = shadow {
            validate_shadow_name(name)?;
        }
        Ok(Self {
            thing: thing.to_owned(),
            shadow: shadow.map(str::to_owned),
        })
    }

    /// `$aws/things/<thing>/shadow` or `$aws/things/<thing>/shadow/name/<shadow>`.
    pub fn prefix(&self) -> String {
        match &self.shadow {
            Some(name) => format!("$aws/things/{}/shadow/name/{name}", self.thing),
            None => format!("$aws/things/{}/shadow", self.thing),
        }
    }

    /// The name AWS puts in "No shadow exists with name: '…'": the shadow's for a named
    /// shadow, the thing's for the classic one.
    pub fn display_name(&self) -> &str {
        self.shadow.as_deref().unwrap_or(&self.thing)
    }
}

/// A shadow operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowOp {
    Get,
    Update,
    Delete,
}

impl ShadowOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "get" => Some(Self::Get),
            "update" => Some(Self::Update),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// A reply topic of a shadow operation. `Delta` and `Documents` exist for `update` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowReply {
    Accepted,
    Rejected,
    Delta,
    Documents,
}

impl ShadowReply {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Delta => "delta",
            Self::Documents => "documents",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Self::Accepted),
            "rejected" => Some(Self::Rejected),
            "delta" => Some(Self::Delta),
            "documents" => Some(Self::Documents),
            _ => None,
        }
    }
}

/// `$aws/things/<thing>/shadow[/name/<shadow>]/<op>[/<reply>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShadowTopic {
    pub thing: String,
    pub shadow: Option<String>,
    pub op: ShadowOp,
    /// `None` for the request topic a client publishes to.
    pub reply: Option<ShadowReply>,
}

impl ShadowTopic {
    /// Parses a shadow topic; names are validated.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        check_len(topic)?;
        let malformed = || TopicError::Malformed {
            family: "shadow",
            topic: topic.to_owned(),
        };
        let rest = topic.strip_prefix("$aws/things/").ok_or_else(malformed)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (thing, shadow, tail) = match parts.as_slice() {
            [thing, "shadow", "name", shadow, tail @ ..] if !tail.is_empty() => {
                (*thing, Some(*shadow), tail)
            }
            [thing, "shadow", tail @ ..] => (*thing, None, tail),
            _ => return Err(malformed()),
        };
        let (op, reply) = match tail {
            [op] => (ShadowOp::parse(op).ok_or_else(malformed)?, None),
            [op, reply] => (
                ShadowOp::parse(op).ok_or_else(malformed)?,
                Some(ShadowReply::parse(reply).ok_or_else(malformed)?),
            ),
            _ => return Err(malformed()),
        };
        if matches!(reply, Some(ShadowReply::Delta | ShadowReply::Documents))
            && op != ShadowOp::Update
        {
            return Err(malformed());
        }
        let address = ShadowAddress::new(thing, shadow)?;
        Ok(Self {
            thing: address.thing,
            shadow: address.shadow,
            op,
            reply,
        })
    }

    /// The request topic of `op` on `address`.
    pub fn request(address: &ShadowAddress, op: ShadowOp) -> Self {
        Self {
            thing: address.thing.clone(),
            shadow: address.shadow.clone(),
            op,
            reply: None,
        }
    }

    /// Which shadow this topic is about.
    pub fn address(&self) -> ShadowAddress {
        ShadowAddress {
            thing: self.thing.clone(),
            shadow: self.shadow.clone(),
        }
    }

    /// The same operation's `reply` topic (`delta`/`documents` only make sense for update).
    pub fn with_reply(&self, reply: ShadowReply) -> Self {
        Self {
            reply: Some(reply),
            ..self.clone()
        }
    }
}

impl fmt::Display for ShadowTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "$aws/things/{}/shadow", self.thing)?;
        if let Some(name) = &self.shadow {
            write!(f, "/name/{name}")?;
        }
        write!(f, "/{}", self.op.as_str())?;
        if let Some(reply) = self.reply {
            write!(f, "/{}", reply.as_str())?;
        }
        Ok(())
    }
}

mod jobs;
mod provisioning;

pub use jobs::{JobsRequest, JobsTopic};
pub use provisioning::{ProvisioningRequest, ProvisioningTopic};
