//! The part of AWS fleet provisioning templates RegisterThing needs: `Parameters` (`Type`
//! `String`, `Default`), one `AWS::IoT::Thing` resource (`ThingName`, `AttributePayload`,
//! `ThingGroups`) with `Ref` and `Fn::Join` values, and `DeviceConfiguration`. Other resource
//! types (`AWS::IoT::Certificate`, `AWS::IoT::Policy`) are accepted and have no effect here:
//! the certificate is the one the request's token names, and authorization is the cloud's.
//! Anything else is an error naming the field.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Most parameters a request may pass.
pub const MAX_PARAMETERS: usize = 100;
/// Longest parameter value.
pub const MAX_PARAMETER_BYTES: usize = 1024;
/// Deepest `Fn::Join` nesting evaluated.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub thing_name: String,
    pub attributes: BTreeMap<String, String>,
    pub thing_groups: Vec<String>,
    pub device_configuration: Value,
}

fn resolve(
    v: &Value,
    params: &BTreeMap<String, String>,
    at: &str,
    depth: usize,
) -> Result<String, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{at}: nested too deeply"));
    }
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Object(o) if o.len() == 1 => {
            if let Some(Value::String(name)) = o.get("Ref") {
                return params
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("{at}: parameter {name} has no value"));
            }
            if let Some(Value::Array(args)) = o.get("Fn::Join")
                && let [Value::String(sep), Value::Array(parts)] = args.as_slice()
            {
                let mut out = Vec::with_capacity(parts.len());
                for (i, p) in parts.iter().enumerate() {
                    out.push(resolve(
                        p,
                        params,
                        &format!("{at}.Fn::Join[{i}]"),
                        depth + 1,
                    )?);
                }
                return Ok(out.join(sep));
            }
            Err(format!(
                "{at}: only Ref and Fn::Join [sep, [..]] are supported"
            ))
        }
        _ => Err(format!("{at}: expected a string, Ref or Fn::Join")),
    }
}

/// Evaluates `body` with the request's `parameters`.
pub fn evaluate(body: &Value, parameters: &Map<String, Value>) -> Result<Plan, String> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(format!("at most {MAX_PARAMETERS} parameters"));
    }
    let mut params = BTreeMap::new();
    let declared = body.get("Parameters").and_then(Value::as_object);
    for (name, v) in parameters {
        let Some(s) = v.as_str() else {
            return Err(format!("parameters.{name} must be a string"));
        };
        if s.len() > MAX_PARAMETER_BYTES {
            return Err(format!(
                "parameters.{name} is longer than {MAX_PARAMETER_BYTES} bytes"
            ));
        }
        if !declared.is_some_and(|d| d.contains_key(name)) {
            return Err(format!(
                "parameters.{name} is not a parameter of the template"
            ));
        }
        params.insert(name.clone(), s.to_string());
    }
    for (name, decl) in declared.into_iter().flatten() {
        if !params.contains_key(name)
            && let Some(default) = decl.get("Default")
        {
            let d = resolve(
                default,
                &BTreeMap::new(),
                &format!("Parameters.{name}.Default"),
                0,
            )?;
            params.insert(name.clone(), d);
        }
    }
    let resources = body
        .get("Resources")
        .and_then(Value::as_object)
        .ok_or("template has no Resources object")?;
    let mut thing = None;
    for (id, r) in resources {
        match r.get("Type").and_then(Value::as_str) {
            Some("AWS::IoT::Thing") => {
                if thing.is_some() {
                    return Err(format!(
                        "Resources.{id}: only one AWS::IoT::Thing is supported"
                    ));
                }
                thing = Some((id, r.get("Properties").cloned().unwrap_or(Value::Null)));
            }
            Some("AWS::IoT::Certificate" | "AWS::IoT::Policy") => {}
            other => return Err(format!("Resources.{id}.Type {other:?} is not supported")),
        }
    }
    let (id, props) = thing.ok_or("template has no AWS::IoT::Thing resource")?;
    let at = format!("Resources.{id}.Properties");
    let name_v = props
        .get("ThingName")
        .ok_or_else(|| format!("{at}.ThingName is missing"))?;
    let thing_name = resolve(name_v, &params, &format!("{at}.ThingName"), 0)?;
    lichen_iot::topic::validate_thing_name(&thing_name)
        .map_err(|e| format!("{at}.ThingName: {e}"))?;
    let mut attributes = BTreeMap::new();
    if let Some(a) = props.get("AttributePayload") {
        let a = a
            .as_object()
            .ok_or_else(|| format!("{at}.AttributePayload must be an object"))?;
        for (k, v) in a {
            attributes.insert(
                k.clone(),
                resolve(v, &params, &format!("{at}.AttributePayload.{k}"), 0)?,
            );
        }
    }
    let mut thing_groups = Vec::new();
    if let Some(g) = props.get("ThingGroups") {
        let g = g
            .as_array()
            .ok_or_else(|| format!("{at}.ThingGroups must be an array"))?;
        for (i, v) in g.iter().enumerate() {
            thing_groups.push(resolve(v, &params, &format!("{at}.ThingGroups[{i}]"), 0)?);
        }
    }
    Ok(Plan {
        thing_name,
        attributes,
        thing_groups,
        device_configuration: body
            .get("DeviceConfiguration")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Value {
        json!({
            "Parameters": {"ThingName": {"Type": "String"}, "Group": {"Type": "String", "Default": "fleet"}},
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                    "ThingName": {"Fn::Join": ["-", ["gg", {"Ref": "ThingName"}]]},
                    "AttributePayload": {"site": "north"},
                    "ThingGroups": [{"Ref": "Group"}]}},
                "cert": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}}
            },
            "DeviceConfiguration": {"a": 1}
        })
    }

    #[test]
    fn evaluates_refs_joins_defaults() {
        let p = evaluate(&template(), json!({"ThingName": "x1"}).as_object().unwrap()).unwrap();
        assert_eq!(p.thing_name, "gg-x1");
        assert_eq!(p.thing_groups, vec!["fleet"]);
        assert_eq!(p.attributes["site"], "north");
        assert_eq!(p.device_configuration, json!({"a": 1}));
    }

    #[test]
    fn errors_name_the_field() {
        let e = evaluate(&template(), &Map::new()).unwrap_err();
        assert!(e.contains("parameter ThingName has no value"), "{e}");
        let e = evaluate(&template(), json!({"Other": "1"}).as_object().unwrap()).unwrap_err();
        assert!(e.contains("parameters.Other"), "{e}");
        let e = evaluate(
            &template(),
            json!({"ThingName": "bad name"}).as_object().unwrap(),
        )
        .unwrap_err();
        assert!(e.contains("ThingName"), "{e}");
        let e = evaluate(&json!({"Resources": {}}), &Map::new()).unwrap_err();
        assert!(e.contains("AWS::IoT::Thing"), "{e}");
    }
}
