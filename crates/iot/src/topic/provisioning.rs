//! Fleet provisioning (MQTT API) topics, JSON payload format only:
//! `$aws/certificates/create/json`, `$aws/certificates/create-from-csr/json`,
//! `$aws/provisioning-templates/<name>/provision/json`, each with `/accepted` and `/rejected`.
//! (AWS also has `/cbor` forms; they are refused as malformed here.)

use std::fmt;

use super::{Outcome, TopicError, check_len, validate_template_name};

/// Which provisioning API a topic belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProvisioningRequest {
    /// CreateKeysAndCertificate.
    CreateKeysAndCertificate,
    /// CreateCertificateFromCsr.
    CreateCertificateFromCsr,
    /// RegisterThing with the named template.
    RegisterThing { template: String },
}

/// A provisioning topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProvisioningTopic {
    pub request: ProvisioningRequest,
    pub reply: Option<Outcome>,
}

impl ProvisioningTopic {
    /// Parses a provisioning topic; the template name is validated.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        check_len(topic)?;
        let malformed = || TopicError::Malformed {
            family: "provisioning",
            topic: topic.to_owned(),
        };
        let parts: Vec<&str> = topic.split('/').collect();
        let (request, rest) = match parts.as_slice() {
            ["$aws", "certificates", "create", "json", rest @ ..] => {
                (ProvisioningRequest::CreateKeysAndCertificate, rest)
            }
            ["$aws", "certificates", "create-from-csr", "json", rest @ ..] => {
                (ProvisioningRequest::CreateCertificateFromCsr, rest)
            }
            [
                "$aws",
                "provisioning-templates",
                name,
                "provision",
                "json",
                rest @ ..,
            ] => {
                validate_template_name(name)?;
                (
                    ProvisioningRequest::RegisterThing {
                        template: (*name).to_owned(),
                    },
                    rest,
                )
            }
            _ => return Err(malformed()),
        };
        let reply = match rest {
            [] => None,
            [reply] => Some(Outcome::parse(reply).ok_or_else(malformed)?),
            _ => return Err(malformed()),
        };
        Ok(Self { request, reply })
    }

    /// The same topic's `accepted`/`rejected` reply.
    pub fn with_reply(&self, reply: Outcome) -> Self {
        Self {
            reply: Some(reply),
            ..self.clone()
        }
    }
}

impl fmt::Display for ProvisioningTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.request {
            ProvisioningRequest::CreateKeysAndCertificate => {
                f.write_str("$aws/certificates/create/json")?
            }
            ProvisioningRequest::CreateCertificateFromCsr => {
                f.write_str("$aws/certificates/create-from-csr/json")?
            }
            ProvisioningRequest::RegisterThing { template } => {
                write!(f, "$aws/provisioning-templates/{template}/provision/json")?
            }
        }
        if let Some(reply) = self.reply {
            write!(f, "/{}", reply.as_str())?;
        }
        Ok(())
    }
}
