//! AWS IoT fleet provisioning (MQTT API): the payloads of the three provisioning topics and
//! the evaluation of a provisioning template into a [`ProvisionPlan`].
//!
//! - [`CreateKeysAndCertificateResponse`], [`CreateCertificateFromCsrRequest`] /
//!   [`CreateCertificateFromCsrResponse`], [`RegisterThingRequest`] /
//!   [`RegisterThingResponse`] carry AWS's field names (`certificateId`, `certificatePem`,
//!   `privateKey`, `certificateOwnershipToken`, `parameters`, `deviceConfiguration`,
//!   `thingName`); [`ProvisioningError::payload`] is the `…/rejected` body
//!   `{statusCode, errorCode, errorMessage}`.
//! - [`evaluate_template`] runs a template body (`Parameters`, `Mappings`, `Conditions`,
//!   `Resources`, `DeviceConfiguration`) against the device's parameters and the certificate
//!   the device presented; [`validate_template`] checks a body when it is stored. Parameter
//!   problems are the device's (400 `InvalidParameters`, naming the parameter); template
//!   problems are the operator's (500 `InternalFailure` when met at provisioning time).
//!
//! Bounds: request ≤ [`MAX_REQUEST_BYTES`]; template body ≤ [`MAX_TEMPLATE_BYTES`] (AWS's
//! 10,240); ≤ [`MAX_PARAMETERS`] device parameters, each value ≤ [`MAX_PARAMETER_VALUE_BYTES`];
//! CSR ≤ [`MAX_CSR_BYTES`]; intrinsic functions nest ≤ [`MAX_EXPRESSION_DEPTH`].

mod intrinsics;
mod template;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

pub use template::{
    CertificateInputs, CertificateStatus, OverrideAction, PolicyRef, ProvisionPlan, ThingOverrides,
    evaluate_template, validate_template,
};

/// Largest provisioning request payload parsed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest template body (AWS).
pub const MAX_TEMPLATE_BYTES: usize = 10_240;
/// Most parameters a RegisterThing request may carry.
pub const MAX_PARAMETERS: usize = 100;
/// Longest parameter value.
pub const MAX_PARAMETER_VALUE_BYTES: usize = 4096;
/// Longest CSR (PEM).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Deepest nesting of intrinsic functions in a template.
pub const MAX_EXPRESSION_DEPTH: usize = 16;
/// Longest certificate ownership token.
pub const MAX_OWNERSHIP_TOKEN_BYTES: usize = 4096;

/// A rejected provisioning request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProvisioningError {
    /// The request payload is not what the API takes.
    #[error("invalid provisioning request: {0}")]
    InvalidRequest(String),
    /// A template parameter is missing or has the wrong type; names the parameter.
    #[error("invalid template parameter {name}: {reason}")]
    InvalidParameters { name: String, reason: String },
    /// The template cannot be evaluated (an operator error).
    #[error("invalid provisioning template: {0}")]
    InvalidTemplate(String),
}

impl ProvisioningError {
    pub fn status_code(&self) -> u16 {
        match self {
            Self::InvalidRequest(_) | Self::InvalidParameters { .. } => 400,
            Self::InvalidTemplate(_) => 500,
        }
    }

    pub fn error_code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "InvalidPayload",
            Self::InvalidParameters { .. } => "InvalidParameters",
            Self::InvalidTemplate(_) => "InternalFailure",
        }
    }

    /// The `…/rejected` payload `{statusCode, errorCode, errorMessage}`. A template error is
    /// not described to the device (it is the operator's to see in the service log).
    pub fn payload(&self) -> Value {
        let message = match self {
            Self::InvalidTemplate(_) => {
                "Internal failure while evaluating the provisioning template".to_owned()
            }
            other => other.to_string(),
        };
        json!({
            "statusCode": self.status_code(),
            "errorCode": self.error_code(),
            "errorMessage": message,
        })
    }
}

/// `$aws/certificates/create/json/accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeysAndCertificateResponse {
    pub certificate_id: String,
    pub certificate_pem: String,
    pub private_key: String,
    pub certificate_ownership_token: String,
}

/// `$aws/certificates/create-from-csr/json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCertificateFromCsrRequest {
    pub certificate_signing_request: String,
}

/// `$aws/certificates/create-from-csr/json/accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCertificateFromCsrResponse {
    pub certificate_id: String,
    pub certificate_pem: String,
    pub certificate_ownership_token: String,
}

/// `$aws/provisioning-templates/<name>/provision/json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterThingRequest {
    pub certificate_ownership_token: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// `$aws/provisioning-templates/<name>/provision/json/accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterThingResponse {
    pub device_configuration: BTreeMap<String, String>,
    pub thing_name: String,
}

fn parse_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ProvisioningError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(ProvisioningError::InvalidRequest(format!(
            "request is {} bytes; at most {MAX_REQUEST_BYTES} are allowed",
            bytes.len()
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ProvisioningError::InvalidRequest(
            "request is not a JSON object".into(),
        )),
        Err(e) => Err(ProvisioningError::InvalidRequest(format!(
            "invalid JSON: {e}"
        ))),
    }
}

/// Checks a CreateKeysAndCertificate request (`{}` or empty).
pub fn parse_create_keys_request(bytes: &[u8]) -> Result<(), ProvisioningError> {
    parse_object(bytes).map(|_| ())
}

/// Parses a CreateCertificateFromCsr request; the CSR must look like a PEM CSR (the caller's
/// CA verifies it properly).
pub fn parse_create_from_csr_request(
    bytes: &[u8],
) -> Result<CreateCertificateFromCsrRequest, ProvisioningError> {
    let map = parse_object(bytes)?;
    let csr = match map.get("certificateSigningRequest") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ProvisioningError::InvalidRequest(
                "certificateSigningRequest must be a string".into(),
            ));
        }
        None => {
            return Err(ProvisioningError::InvalidRequest(
                "certificateSigningRequest is required".into(),
            ));
        }
    };
    if csr.len() > MAX_CSR_BYTES {
        return Err(ProvisioningError::InvalidRequest(format!(
            "certificateSigningRequest is {} bytes; at most {MAX_CSR_BYTES} are allowed",
            csr.len()
        )));
    }
    if !csr.contains("-----BEGIN CERTIFICATE REQUEST-----")
        && !csr.contains("-----BEGIN NEW CERTIFICATE REQUEST-----")
    {
        return Err(ProvisioningError::InvalidRequest(
            "certificateSigningRequest is not a PEM certificate request".into(),
        ));
    }
    Ok(CreateCertificateFromCsrRequest {
        certificate_signing_request: csr.clone(),
    })
}

/// Parses a RegisterThing request: a non-empty `certificateOwnershipToken` and optional
/// string `parameters` (each named in errors).
pub fn parse_register_thing_request(
    bytes: &[u8],
) -> Result<RegisterThingRequest, ProvisioningError> {
    let map = parse_object(bytes)?;
    let token = match map.get("certificateOwnershipToken") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_OWNERSHIP_TOKEN_BYTES => {
            s.clone()
        }
        Some(_) => {
            return Err(ProvisioningError::InvalidRequest(format!(
                "certificateOwnershipToken must be a string of 1 to {MAX_OWNERSHIP_TOKEN_BYTES} bytes"
            )));
        }
        None => {
            return Err(ProvisioningError::InvalidRequest(
                "certificateOwnershipToken is required".into(),
            ));
        }
    };
    let mut parameters = BTreeMap::new();
    match map.get("parameters") {
        None | Some(Value::Null) => {}
        Some(Value::Object(params)) => {
            if params.len() > MAX_PARAMETERS {
                return Err(ProvisioningError::InvalidRequest(format!(
                    "{} parameters; at most {MAX_PARAMETERS} are allowed",
                    params.len()
                )));
            }
            for (name, value) in params {
                let shown: String = name.chars().take(64).collect();
                let Value::String(text) = value else {
                    return Err(ProvisioningError::InvalidParameters {
                        name: shown,
                        reason: "parameter values must be strings".into(),
                    });
                };
                if text.len() > MAX_PARAMETER_VALUE_BYTES {
                    return Err(ProvisioningError::InvalidParameters {
                        name: shown,
                        reason: format!("value longer than {MAX_PARAMETER_VALUE_BYTES} bytes"),
                    });
                }
                parameters.insert(name.clone(), text.clone());
            }
        }
        Some(_) => {
            return Err(ProvisioningError::InvalidRequest(
                "parameters must be an object of strings".into(),
            ));
        }
    }
    Ok(RegisterThingRequest {
        certificate_ownership_token: token,
        parameters,
    })
}

#[cfg(test)]
mod tests;
