//! The intrinsic functions and conditions of provisioning templates: `Ref`, `Fn::Join`,
//! `Fn::If`, `Fn::Sub`, `Fn::Select`, `Fn::Split`, `Fn::FindInMap`; `Fn::Equals`, `Fn::Not`,
//! `Fn::And`, `Fn::Or`, `Condition`. Every call nests at most [`MAX_EXPRESSION_DEPTH`] deep,
//! which also ends conditions that refer to each other in a loop.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::template::{param_err, template_err};
use super::{MAX_EXPRESSION_DEPTH, ProvisioningError};

/// What expressions are evaluated against.
pub(super) struct Context<'a> {
    pub params: BTreeMap<String, Value>,
    pub mappings: Option<&'a Map<String, Value>>,
    pub conditions: Option<&'a Map<String, Value>>,
}

impl Context<'_> {
    pub(super) fn eval(&self, expr: &Value, depth: usize) -> Result<Value, ProvisioningError> {
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(template_err(format!(
                "expressions nest deeper than {MAX_EXPRESSION_DEPTH}"
            )));
        }
        let next = depth + 1;
        match expr {
            Value::Array(items) => items
                .iter()
                .map(|i| self.eval(i, next))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) if map.len() == 1 => {
                let Some((key, arg)) = map.iter().next() else {
                    return Ok(Value::Object(Map::new()));
                };
                match key.as_str() {
                    "Ref" => {
                        let name = arg
                            .as_str()
                            .ok_or_else(|| template_err("Ref takes a parameter name"))?;
                        self.params.get(name).cloned().ok_or_else(|| {
                            template_err(format!("Ref to {name}, which is not a parameter"))
                        })
                    }
                    "Fn::Join" => {
                        let [delim, list] = two(arg, "Fn::Join")?;
                        let delim = delim
                            .as_str()
                            .ok_or_else(|| template_err("Fn::Join delimiter must be a string"))?;
                        let Value::Array(items) = self.eval(list, next)? else {
                            return Err(template_err("Fn::Join takes a list"));
                        };
                        let parts: Option<Vec<String>> = items.iter().map(scalar_string).collect();
                        let parts = parts
                            .ok_or_else(|| template_err("Fn::Join takes a list of strings"))?;
                        Ok(Value::String(parts.join(delim)))
                    }
                    "Fn::If" => {
                        let Value::Array(args) = arg else {
                            return Err(template_err("Fn::If takes [condition, then, else]"));
                        };
                        let [cond, then, otherwise] = args.as_slice() else {
                            return Err(template_err("Fn::If takes [condition, then, else]"));
                        };
                        let cond = cond.as_str().ok_or_else(|| {
                            template_err("Fn::If's condition must be a condition name")
                        })?;
                        if self.named_condition(cond, next)? {
                            self.eval(then, next)
                        } else {
                            self.eval(otherwise, next)
                        }
                    }
                    "Fn::Sub" => self.substitute(arg, next),
                    "Fn::Select" => {
                        let [index, list] = two(arg, "Fn::Select")?;
                        let index = scalar_string(&self.eval(index, next)?)
                            .and_then(|s| s.trim().parse::<usize>().ok())
                            .ok_or_else(|| {
                                template_err("Fn::Select index must be a non-negative integer")
                            })?;
                        let Value::Array(items) = self.eval(list, next)? else {
                            return Err(template_err("Fn::Select takes a list"));
                        };
                        items.get(index).cloned().ok_or_else(|| {
                            template_err(format!("Fn::Select index {index} is out of range"))
                        })
                    }
                    "Fn::Split" => {
                        let [delim, text] = two(arg, "Fn::Split")?;
                        let delim = delim.as_str().filter(|d| !d.is_empty()).ok_or_else(|| {
                            template_err("Fn::Split delimiter must be a non-empty string")
                        })?;
                        let text = scalar_string(&self.eval(text, next)?)
                            .ok_or_else(|| template_err("Fn::Split takes a string"))?;
                        Ok(Value::Array(
                            text.split(delim)
                                .map(|s| Value::String(s.to_owned()))
                                .collect(),
                        ))
                    }
                    "Fn::FindInMap" => {
                        let Value::Array(args) = arg else {
                            return Err(template_err("Fn::FindInMap takes [map, key, key]"));
                        };
                        let [map_name, top, second] = args.as_slice() else {
                            return Err(template_err("Fn::FindInMap takes [map, key, key]"));
                        };
                        let keys: Vec<String> = [map_name, top, second]
                            .iter()
                            .map(|k| self.eval(k, next).ok().and_then(|v| scalar_string(&v)))
                            .collect::<Option<_>>()
                            .ok_or_else(|| template_err("Fn::FindInMap keys must be strings"))?;
                        self.mappings
                            .and_then(|m| m.get(&keys[0]))
                            .and_then(|m| m.get(&keys[1]))
                            .and_then(|m| m.get(&keys[2]))
                            .cloned()
                            .ok_or_else(|| {
                                param_err(
                                    &keys[1],
                                    format!(
                                        "no entry {}.{}.{} in Mappings",
                                        keys[0], keys[1], keys[2]
                                    ),
                                )
                            })
                    }
                    other if other.starts_with("Fn::") => {
                        Err(template_err(format!("{other} is not supported")))
                    }
                    _ => self.eval_object(map, next),
                }
            }
            Value::Object(map) => self.eval_object(map, next),
            other => Ok(other.clone()),
        }
    }

    fn eval_object(
        &self,
        map: &Map<String, Value>,
        depth: usize,
    ) -> Result<Value, ProvisioningError> {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.eval(v, depth)?)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object)
    }

    /// `Fn::Sub`: `"text ${Name}"` or `["text ${Name}", {"Name": expr}]`.
    fn substitute(&self, arg: &Value, depth: usize) -> Result<Value, ProvisioningError> {
        let (text, vars) = match arg {
            Value::String(text) => (text.as_str(), None),
            Value::Array(items) => match items.as_slice() {
                [Value::String(text), Value::Object(vars)] => (text.as_str(), Some(vars)),
                _ => {
                    return Err(template_err(
                        "Fn::Sub takes a string or [string, {variables}]",
                    ));
                }
            },
            _ => {
                return Err(template_err(
                    "Fn::Sub takes a string or [string, {variables}]",
                ));
            }
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| template_err("Fn::Sub has an unclosed ${"))?;
            let name = &after[..end];
            let value = match vars.and_then(|v| v.get(name)) {
                Some(expr) => self.eval(expr, depth)?,
                None => self.params.get(name).cloned().ok_or_else(|| {
                    template_err(format!("Fn::Sub names {name}, which is not a parameter"))
                })?,
            };
            out.push_str(
                &scalar_string(&value).ok_or_else(|| {
                    template_err(format!("Fn::Sub variable {name} is not a string"))
                })?,
            );
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }

    pub(super) fn named_condition(
        &self,
        name: &str,
        depth: usize,
    ) -> Result<bool, ProvisioningError> {
        let expr = self.conditions.and_then(|c| c.get(name)).ok_or_else(|| {
            template_err(format!("condition {name} is not defined in Conditions"))
        })?;
        self.condition(expr, depth + 1)
    }

    fn condition(&self, expr: &Value, depth: usize) -> Result<bool, ProvisioningError> {
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(template_err(format!(
                "conditions nest deeper than {MAX_EXPRESSION_DEPTH} (or refer to each other in a loop)"
            )));
        }
        let next = depth + 1;
        let Value::Object(map) = expr else {
            return match expr {
                Value::Bool(b) => Ok(*b),
                _ => Err(template_err(
                    "a condition must be Fn::Equals, Fn::Not, Fn::And, Fn::Or or Condition",
                )),
            };
        };
        let Some((key, arg)) = map.iter().next().filter(|_| map.len() == 1) else {
            return Err(template_err("a condition must be a single function"));
        };
        let list = |arg: &Value| -> Result<Vec<Value>, ProvisioningError> {
            match arg {
                Value::Array(items) if !items.is_empty() => Ok(items.clone()),
                _ => Err(template_err(format!("{key} takes a list of conditions"))),
            }
        };
        match key.as_str() {
            "Fn::Equals" => {
                let [a, b] = two(arg, "Fn::Equals")?;
                let (a, b) = (self.eval(a, next)?, self.eval(b, next)?);
                Ok(match (scalar_string(&a), scalar_string(&b)) {
                    (Some(a), Some(b)) => a == b,
                    _ => a == b,
                })
            }
            "Fn::Not" => {
                let items = list(arg)?;
                let [only] = items.as_slice() else {
                    return Err(template_err("Fn::Not takes one condition"));
                };
                Ok(!self.condition(only, next)?)
            }
            "Fn::And" => {
                for c in list(arg)? {
                    if !self.condition(&c, next)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            "Fn::Or" => {
                for c in list(arg)? {
                    if self.condition(&c, next)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            "Condition" => {
                let name = arg
                    .as_str()
                    .ok_or_else(|| template_err("Condition takes a condition name"))?;
                self.named_condition(name, next)
            }
            other => Err(template_err(format!(
                "condition function {other} is not supported"
            ))),
        }
    }
}

fn two<'a>(arg: &'a Value, function: &str) -> Result<[&'a Value; 2], ProvisioningError> {
    match arg {
        Value::Array(items) => match items.as_slice() {
            [a, b] => Ok([a, b]),
            _ => Err(template_err(format!("{function} takes two arguments"))),
        },
        _ => Err(template_err(format!(
            "{function} takes a list of two arguments"
        ))),
    }
}

/// Strings as they are; numbers and booleans as text; anything else is not a scalar.
pub(super) fn scalar_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
