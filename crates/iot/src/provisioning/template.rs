//! Fleet provisioning template evaluation.
//!
//! Supported: `Parameters` (`Type` `String` or `Number`, `Default`), `Mappings`,
//! `Conditions` (`Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or`, `Condition`), `Resources` of
//! type `AWS::IoT::Thing` (`ThingName`, `AttributePayload`, `ThingGroups`, `ThingTypeName`,
//! `BillingGroup`, `OverrideSettings`), `AWS::IoT::Certificate` (`CertificateId` =
//! `{"Ref": "AWS::IoT::Certificate::Id"}`, `Status`) and `AWS::IoT::Policy` (`PolicyName` or
//! `PolicyDocument`), each with an optional `Condition`; `DeviceConfiguration`; the intrinsic
//! functions `Ref`, `Fn::Join`, `Fn::If`, `Fn::Sub`, `Fn::Select`, `Fn::Split` and
//! `Fn::FindInMap`. Anything else (e.g. `Fn::Base64`, `CertificatePem`) is refused as
//! "not supported" rather than ignored. The parameters `AWS::IoT::Certificate::*` come from the
//! certificate the device presented, never from the device's request.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::intrinsics::{Context, scalar_string};
use super::{MAX_TEMPLATE_BYTES, ProvisioningError};
use crate::topic::validate_thing_name;

/// The certificate-derived parameters: `AWS::IoT::Certificate::Id` and the subject fields
/// (`CommonName`, `Country`, `Organization`, `OrganizationalUnit`,
/// `DistinguishedNameQualifier`, `StateName`, `SerialNumber`), by their short name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateInputs {
    pub certificate_id: String,
    pub subject: BTreeMap<String, String>,
}

const CERT_PREFIX: &str = "AWS::IoT::Certificate::";

/// Whether the new certificate is activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateStatus {
    Active,
    Inactive,
}

/// What to do with an attribute of a thing that already exists (`OverrideSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverrideAction {
    Replace,
    Merge,
    Fail,
    #[default]
    DoNothing,
}

/// `OverrideSettings` of the thing resource (absent entries are `DO_NOTHING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThingOverrides {
    pub attribute_payload: OverrideAction,
    pub thing_groups: OverrideAction,
    pub thing_type_name: OverrideAction,
}

/// A policy to attach to the certificate.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyRef {
    /// An existing policy, by name.
    Named(String),
    /// An inline policy document.
    Document(Value),
}

/// What a template asks for, evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionPlan {
    pub thing_name: String,
    pub thing_type_name: Option<String>,
    pub billing_group: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub thing_groups: Vec<String>,
    pub overrides: ThingOverrides,
    pub certificate_status: CertificateStatus,
    pub policies: Vec<PolicyRef>,
    pub device_configuration: BTreeMap<String, String>,
}

pub(super) fn template_err(message: impl Into<String>) -> ProvisioningError {
    ProvisioningError::InvalidTemplate(message.into())
}

pub(super) fn param_err(name: &str, reason: impl Into<String>) -> ProvisioningError {
    ProvisioningError::InvalidParameters {
        name: name.chars().take(128).collect(),
        reason: reason.into(),
    }
}

fn parse_body(body: &str) -> Result<Map<String, Value>, ProvisioningError> {
    if body.len() > MAX_TEMPLATE_BYTES {
        return Err(template_err(format!(
            "template body is {} bytes; at most {MAX_TEMPLATE_BYTES} are allowed",
            body.len()
        )));
    }
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(template_err("template body is not a JSON object")),
        Err(e) => Err(template_err(format!(
            "template body is not valid JSON: {e}"
        ))),
    }
}

fn section<'a>(
    template: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, ProvisioningError> {
    match template.get(name) {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(template_err(format!("{name} must be an object"))),
    }
}

/// Checks a template body when it is stored: the same evaluation, with each parameter at its
/// default or a placeholder, so structural and function errors surface before any device
/// provisions. Parameter-value problems (which depend on the device) are not reported.
pub fn validate_template(body: &str) -> Result<(), ProvisioningError> {
    let template = parse_body(body)?;
    let mut placeholders = BTreeMap::new();
    if let Some(params) = section(&template, "Parameters")? {
        for name in params.keys() {
            placeholders.insert(name.clone(), "0".to_owned());
        }
    }
    let cert = CertificateInputs {
        certificate_id: "0".repeat(64),
        subject: [
            "CommonName",
            "Country",
            "Organization",
            "OrganizationalUnit",
            "DistinguishedNameQualifier",
            "StateName",
            "SerialNumber",
        ]
        .iter()
        .map(|k| ((*k).to_owned(), "0".to_owned()))
        .collect(),
    };
    match evaluate_parsed(&template, &BTreeMap::new(), &cert, true, &placeholders) {
        Err(e @ ProvisioningError::InvalidTemplate(_)) => Err(e),
        _ => Ok(()),
    }
}

/// Evaluates a template body with the device's `parameters` and the presented certificate.
pub fn evaluate_template(
    body: &str,
    parameters: &BTreeMap<String, String>,
    certificate: &CertificateInputs,
) -> Result<ProvisionPlan, ProvisioningError> {
    let template = parse_body(body)?;
    evaluate_parsed(&template, parameters, certificate, false, &BTreeMap::new())
}

fn evaluate_parsed(
    template: &Map<String, Value>,
    device: &BTreeMap<String, String>,
    certificate: &CertificateInputs,
    use_placeholders: bool,
    placeholders: &BTreeMap<String, String>,
) -> Result<ProvisionPlan, ProvisioningError> {
    for key in template.keys() {
        if !matches!(
            key.as_str(),
            "Parameters"
                | "Mappings"
                | "Conditions"
                | "Resources"
                | "DeviceConfiguration"
                | "AWSTemplateFormatVersion"
                | "Description"
        ) {
            return Err(template_err(format!(
                "template section {key} is not supported"
            )));
        }
    }
    if let Some(name) = device.keys().find(|k| k.starts_with("AWS::")) {
        return Err(param_err(
            name,
            "parameters named AWS::… come from the certificate, not the request",
        ));
    }
    let mut params = BTreeMap::new();
    params.insert(
        format!("{CERT_PREFIX}Id"),
        Value::String(certificate.certificate_id.clone()),
    );
    for (k, v) in &certificate.subject {
        params.insert(format!("{CERT_PREFIX}{k}"), Value::String(v.clone()));
    }
    if let Some(specs) = section(template, "Parameters")? {
        for (name, spec) in specs {
            let Value::Object(spec) = spec else {
                return Err(template_err(format!("Parameters.{name} must be an object")));
            };
            let kind = match spec.get("Type") {
                Some(Value::String(t)) if t == "String" || t == "Number" => t.as_str(),
                Some(other) => {
                    return Err(template_err(format!(
                        "Parameters.{name}.Type {other} is not supported (String or Number)"
                    )));
                }
                None => return Err(template_err(format!("Parameters.{name}.Type is required"))),
            };
            let default = match spec.get("Default") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => {
                    return Err(template_err(format!(
                        "Parameters.{name}.Default must be a string or number"
                    )));
                }
            };
            if name.starts_with(CERT_PREFIX) {
                if !params.contains_key(name) {
                    match default {
                        Some(d) => {
                            params.insert(name.clone(), Value::String(d));
                        }
                        None => return Err(param_err(name, "the certificate does not provide it")),
                    }
                }
                continue;
            }
            let supplied = device.get(name).cloned();
            let value = match (supplied, default, use_placeholders) {
                (Some(v), _, _) => v,
                (None, Some(d), _) => d,
                (None, None, true) => placeholders.get(name).cloned().unwrap_or_default(),
                (None, None, false) => {
                    return Err(param_err(name, "is required but was not provided"));
                }
            };
            if kind == "Number" && value.trim().parse::<f64>().map_or(true, |f| !f.is_finite()) {
                return Err(param_err(
                    name,
                    format!(
                        "must be a number, got {:?}",
                        value.chars().take(32).collect::<String>()
                    ),
                ));
            }
            params.insert(name.clone(), Value::String(value));
        }
    }
    let ctx = Context {
        params,
        mappings: section(template, "Mappings")?,
        conditions: section(template, "Conditions")?,
    };
    let resources =
        section(template, "Resources")?.ok_or_else(|| template_err("Resources is required"))?;
    let mut thing: Option<ProvisionPlan> = None;
    let mut certificate_status: Option<CertificateStatus> = None;
    let mut policies = Vec::new();
    for (logical_id, resource) in resources {
        let Value::Object(resource) = resource else {
            return Err(template_err(format!(
                "Resources.{logical_id} must be an object"
            )));
        };
        if let Some(cond) = resource.get("Condition") {
            let Value::String(cond) = cond else {
                return Err(template_err(format!(
                    "Resources.{logical_id}.Condition must be a condition name"
                )));
            };
            if !ctx.named_condition(cond, 0)? {
                continue;
            }
        }
        let empty = Map::new();
        let props = match resource.get("Properties") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(template_err(format!(
                    "Resources.{logical_id}.Properties must be an object"
                )));
            }
        };
        let at = |p: &str| format!("Resources.{logical_id}.Properties.{p}");
        match resource.get("Type").and_then(Value::as_str) {
            Some("AWS::IoT::Thing") => {
                if thing.is_some() {
                    return Err(template_err("a template may have only one AWS::IoT::Thing"));
                }
                thing = Some(ctx.thing(props, resource.get("OverrideSettings"), &at)?);
            }
            Some("AWS::IoT::Certificate") => {
                if certificate_status.is_some() {
                    return Err(template_err(
                        "a template may have only one AWS::IoT::Certificate",
                    ));
                }
                certificate_status = Some(ctx.certificate(props, certificate, &at)?);
            }
            Some("AWS::IoT::Policy") => policies.push(ctx.policy(props, &at)?),
            Some(other) => {
                return Err(template_err(format!(
                    "Resources.{logical_id}.Type {other} is not supported"
                )));
            }
            None => {
                return Err(template_err(format!(
                    "Resources.{logical_id}.Type is required"
                )));
            }
        }
    }
    let mut plan =
        thing.ok_or_else(|| template_err("the template has no AWS::IoT::Thing resource"))?;
    plan.certificate_status = certificate_status
        .ok_or_else(|| template_err("the template has no AWS::IoT::Certificate resource"))?;
    plan.policies = policies;
    if let Some(config) = section(template, "DeviceConfiguration")? {
        for (key, expr) in config {
            let value = ctx.string(expr, &format!("DeviceConfiguration.{key}"))?;
            plan.device_configuration.insert(key.clone(), value);
        }
    }
    Ok(plan)
}

impl Context<'_> {
    fn thing(
        &self,
        props: &Map<String, Value>,
        overrides: Option<&Value>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<ProvisionPlan, ProvisioningError> {
        let name_expr = props
            .get("ThingName")
            .ok_or_else(|| template_err(format!("{} is required", at("ThingName"))))?;
        let thing_name = self.string(name_expr, &at("ThingName"))?;
        if let Err(e) = validate_thing_name(&thing_name) {
            // Name the parameter the value came from when it is a plain Ref.
            let source = match name_expr.get("Ref").and_then(Value::as_str) {
                Some(param) => param.to_owned(),
                None => "ThingName".to_owned(),
            };
            return Err(param_err(&source, e.to_string()));
        }
        let optional = |key: &str| -> Result<Option<String>, ProvisioningError> {
            props.get(key).map(|e| self.string(e, &at(key))).transpose()
        };
        let mut attributes = BTreeMap::new();
        match props
            .get("AttributePayload")
            .map(|e| self.eval(e, 0))
            .transpose()?
        {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    attributes.insert(
                        k.clone(),
                        scalar_string(&v).ok_or_else(|| {
                            template_err(format!("{}.{k} must be a string", at("AttributePayload")))
                        })?,
                    );
                }
            }
            Some(_) => {
                return Err(template_err(format!(
                    "{} must be an object",
                    at("AttributePayload")
                )));
            }
        }
        let thing_groups = match props
            .get("ThingGroups")
            .map(|e| self.eval(e, 0))
            .transpose()?
        {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    scalar_string(v).ok_or_else(|| {
                        template_err(format!("{} must be a list of strings", at("ThingGroups")))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(template_err(format!(
                    "{} must be a list",
                    at("ThingGroups")
                )));
            }
        };
        Ok(ProvisionPlan {
            thing_name,
            thing_type_name: optional("ThingTypeName")?,
            billing_group: optional("BillingGroup")?,
            attributes,
            thing_groups,
            overrides: parse_overrides(overrides)?,
            certificate_status: CertificateStatus::Active,
            policies: Vec::new(),
            device_configuration: BTreeMap::new(),
        })
    }

    fn certificate(
        &self,
        props: &Map<String, Value>,
        certificate: &CertificateInputs,
        at: &dyn Fn(&str) -> String,
    ) -> Result<CertificateStatus, ProvisioningError> {
        if props.contains_key("CertificatePem") || props.contains_key("CACertificatePem") {
            return Err(template_err(format!(
                "{} is not supported (fleet provisioning uses CertificateId)",
                at("CertificatePem")
            )));
        }
        let id_expr = props
            .get("CertificateId")
            .ok_or_else(|| template_err(format!("{} is required", at("CertificateId"))))?;
        if self.string(id_expr, &at("CertificateId"))? != certificate.certificate_id {
            return Err(template_err(format!(
                "{} must be {{\"Ref\": \"AWS::IoT::Certificate::Id\"}}",
                at("CertificateId")
            )));
        }
        match props
            .get("Status")
            .map(|e| self.string(e, &at("Status")))
            .transpose()?
        {
            None => Ok(CertificateStatus::Active),
            Some(s) if s.eq_ignore_ascii_case("active") => Ok(CertificateStatus::Active),
            Some(s) if s.eq_ignore_ascii_case("inactive") => Ok(CertificateStatus::Inactive),
            Some(s) => Err(template_err(format!(
                "{} {s:?} is not Active or Inactive",
                at("Status")
            ))),
        }
    }

    fn policy(
        &self,
        props: &Map<String, Value>,
        at: &dyn Fn(&str) -> String,
    ) -> Result<PolicyRef, ProvisioningError> {
        if let Some(name) = props.get("PolicyName") {
            return Ok(PolicyRef::Named(self.string(name, &at("PolicyName"))?));
        }
        match props
            .get("PolicyDocument")
            .map(|e| self.eval(e, 0))
            .transpose()?
        {
            Some(Value::String(text)) => serde_json::from_str(&text)
                .map(PolicyRef::Document)
                .map_err(|e| {
                    template_err(format!(
                        "{} is not a JSON policy: {e}",
                        at("PolicyDocument")
                    ))
                }),
            Some(doc @ Value::Object(_)) => Ok(PolicyRef::Document(doc)),
            Some(_) => Err(template_err(format!(
                "{} must be a JSON document",
                at("PolicyDocument")
            ))),
            None => Err(template_err(format!(
                "{} or PolicyDocument is required",
                at("PolicyName")
            ))),
        }
    }

    fn string(&self, expr: &Value, at: &str) -> Result<String, ProvisioningError> {
        let value = self.eval(expr, 0)?;
        scalar_string(&value).ok_or_else(|| template_err(format!("{at} must evaluate to a string")))
    }
}

fn parse_overrides(value: Option<&Value>) -> Result<ThingOverrides, ProvisioningError> {
    let mut out = ThingOverrides::default();
    let Some(value) = value else { return Ok(out) };
    let Value::Object(map) = value else {
        return Err(template_err("OverrideSettings must be an object"));
    };
    for (key, action) in map {
        let action = match action.as_str() {
            Some("REPLACE") => OverrideAction::Replace,
            Some("MERGE") => OverrideAction::Merge,
            Some("FAIL") => OverrideAction::Fail,
            Some("DO_NOTHING") => OverrideAction::DoNothing,
            _ => {
                return Err(template_err(format!(
                    "OverrideSettings.{key} must be REPLACE, MERGE, FAIL or DO_NOTHING"
                )));
            }
        };
        match key.as_str() {
            "AttributePayload" => out.attribute_payload = action,
            "ThingGroups" => out.thing_groups = action,
            "ThingTypeName" => out.thing_type_name = action,
            other => {
                return Err(template_err(format!(
                    "OverrideSettings.{other} is not supported"
                )));
            }
        }
    }
    Ok(out)
}
