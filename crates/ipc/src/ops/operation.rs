//! One descriptor per IPC operation, and the table the server dispatches from.
//!
//! An [`Operation`] says everything the server needs about an operation in one place: its
//! name, its authorization (service id, operation name, and how the resource is taken from
//! the request), whether it is slow (run in its own task), the error shapes its model
//! declares, its stream event shape if it streams, and its handler. The core's operations
//! form [`Operations::builtin`]; a service adds its own with [`Operations::register`] before
//! the server starts ([`crate::serve_with`]).
//!
//! Dispatch looks an operation up once per request and checks its authorization once,
//! before the handler runs: a handler is only ever called for an allowed request.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use lichen_core::CoreHandle;
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::{BoxFuture, Caller, NAMESPACE, Reply, Shared};
use crate::error::{ErrorShape, OpError};

/// What a handler is called with: the caller, its request, and the core.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) caller: &'a Caller,
    pub(crate) payload: &'a [u8],
    pub(crate) operation: &'a Operation,
    pub(crate) resources: &'a [String],
}

impl<'a> Call<'a> {
    pub fn core(&self) -> &'a CoreHandle {
        &self.shared.core
    }

    /// The authenticated component making the call.
    pub fn component(&self) -> &'a str {
        &self.caller.component
    }

    /// The bus origin of the caller's messages (`component:<name>`).
    pub fn origin(&self) -> &'a Arc<str> {
        &self.caller.origin
    }

    /// The request body (JSON).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Parses the request body; an empty body is `{}`. Errors name the operation.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, OpError> {
        super::parse(&self.operation.name, self.payload)
    }

    /// The resources the caller was authorized for (empty for an operation without
    /// authorization or an exempt caller). A handler that computes a resource (e.g. a
    /// default taken from the core's state) acts on these rather than computing it again.
    pub fn authorized_resources(&self) -> &'a [String] {
        self.resources
    }
}

pub type CallFuture<'a> = BoxFuture<'a, Result<Reply, OpError>>;
type SyncFn = dyn for<'a> Fn(Call<'a>) -> Result<Reply, OpError> + Send + Sync;
type AsyncFn = dyn for<'a> Fn(Call<'a>) -> CallFuture<'a> + Send + Sync;

/// Runs an allowed request.
#[derive(Clone)]
pub enum Handler {
    /// Answers without waiting (most operations; no future is allocated per call).
    Sync(Arc<SyncFn>),
    /// Waits on the runtime (process control, deployments).
    Async(Arc<AsyncFn>),
}

impl Handler {
    pub fn sync(
        f: impl for<'a> Fn(Call<'a>) -> Result<Reply, OpError> + Send + Sync + 'static,
    ) -> Self {
        Handler::Sync(Arc::new(f))
    }

    pub fn asynchronous(
        f: impl for<'a> Fn(Call<'a>) -> CallFuture<'a> + Send + Sync + 'static,
    ) -> Self {
        Handler::Async(Arc::new(f))
    }
}

/// How the resource an `accessControl` policy must allow is taken from a request.
#[derive(Clone, Copy)]
pub enum Resource {
    /// Always the same, e.g. `*` for ListComponents.
    Fixed(&'static str),
    /// A required, non-empty string field of the request, e.g. `topic`. Missing or empty,
    /// the request gets InvalidArgumentsError "`<field>` is required".
    Field(&'static str),
    /// Computed from the call: several resources (all must be allowed), a default taken from
    /// the core's state, or none at all (an exempt caller: no check).
    Computed(for<'a> fn(&Call<'a>) -> Result<Vec<String>, OpError>),
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Fixed(r) => write!(f, "Fixed({r:?})"),
            Resource::Field(name) => write!(f, "Field({name:?})"),
            Resource::Computed(_) => f.write_str("Computed"),
        }
    }
}

/// Who may call an operation.
#[derive(Debug, Clone)]
pub enum Authorization {
    /// Any authenticated component.
    None,
    /// A policy of the caller under `service` must allow `operation` (the full name,
    /// `aws.greengrass#<Name>`) on every resource of the request.
    Policy {
        service: &'static str,
        operation: String,
        resource: Resource,
    },
}

/// One IPC operation: see the module documentation.
pub struct Operation {
    name: String,
    response_type: String,
    authorization: Authorization,
    slow: bool,
    errors: &'static [ErrorShape],
    stream_event: Option<&'static str>,
    handler: Handler,
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("name", &self.name)
            .field("authorization", &self.authorization)
            .field("slow", &self.slow)
            .field("errors", &self.errors)
            .field("stream_event", &self.stream_event)
            .finish_non_exhaustive()
    }
}

impl Operation {
    /// An operation named `name` (short, e.g. `PublishToTopic`) that any authenticated
    /// component may call, unary, declaring only ServiceError.
    pub fn new(name: &str, handler: Handler) -> Self {
        Operation {
            name: name.to_string(),
            response_type: format!("{NAMESPACE}{name}Response"),
            authorization: Authorization::None,
            slow: false,
            errors: &[],
            stream_event: None,
            handler,
        }
    }

    /// Requires a policy under `service` allowing `aws.greengrass#<name>` on `resource`.
    pub fn authorize(self, service: &'static str, resource: Resource) -> Self {
        let operation = format!("{NAMESPACE}{}", self.name);
        self.authorize_as(service, operation, resource)
    }

    /// Like [`Operation::authorize`], with a policy operation name other than its own.
    pub fn authorize_as(
        mut self,
        service: &'static str,
        operation: String,
        resource: Resource,
    ) -> Self {
        self.authorization = Authorization::Policy {
            service,
            operation,
            resource,
        };
        self
    }

    /// The error shapes the model declares for it besides ServiceError. Strict SDKs
    /// (JavaScript) refuse any other shape, so others are sent as ServiceError.
    pub fn errors(mut self, errors: &'static [ErrorShape]) -> Self {
        self.errors = errors;
        self
    }

    /// A streaming operation whose events have this `service-model-type`.
    pub fn streaming(mut self, event_shape: &'static str) -> Self {
        self.stream_event = Some(event_shape);
        self
    }

    /// It may wait on the runtime: the connection runs it in its own task so that other
    /// streams go on meanwhile.
    pub fn slow(mut self) -> Self {
        self.slow = true;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn authorization(&self) -> &Authorization {
        &self.authorization
    }

    pub fn is_slow(&self) -> bool {
        self.slow
    }

    pub fn modeled_errors(&self) -> &'static [ErrorShape] {
        self.errors
    }

    pub fn stream_event_shape(&self) -> Option<&'static str> {
        self.stream_event
    }

    /// `aws.greengrass#<Name>Response`.
    pub(crate) fn response_type(&self) -> &str {
        &self.response_type
    }

    /// Keeps an error within the operation's modeled shapes: anything else becomes a
    /// ServiceError whose message names the intended shape. UnauthorizedError is the
    /// exception: a denied call always gets it (as in Greengrass, and what Python/Java/C++
    /// code catches), even from the CLI operations whose model omits it; the JavaScript SDK
    /// then reports an untyped error naming UnauthorizedError.
    pub fn conform(&self, e: OpError) -> OpError {
        if matches!(
            e.shape,
            ErrorShape::ServiceError | ErrorShape::UnauthorizedError
        ) || self.errors.contains(&e.shape)
        {
            e
        } else {
            OpError::service(format!("{}: {}", e.shape.name(), e.message))
        }
    }

    /// Checks the caller's authorization, then runs the handler. Errors are within the
    /// operation's modeled shapes.
    pub(crate) async fn dispatch(
        &self,
        shared: &Shared,
        caller: &Caller,
        payload: &[u8],
    ) -> Result<Reply, OpError> {
        let mut call = Call {
            shared,
            caller,
            payload,
            operation: self,
            resources: &[],
        };
        let resources = self.authorize_call(&call).map_err(|e| self.conform(e))?;
        call.resources = &resources;
        let result = match &self.handler {
            Handler::Sync(f) => f(call),
            Handler::Async(f) => f(call).await,
        };
        result.map_err(|e| self.conform(e))
    }

    /// The resources the caller is allowed, or why not.
    fn authorize_call(&self, call: &Call<'_>) -> Result<Vec<String>, OpError> {
        let Authorization::Policy {
            service,
            operation,
            resource,
        } = &self.authorization
        else {
            return Ok(Vec::new());
        };
        let resources = match resource {
            Resource::Fixed(r) => vec![(*r).to_string()],
            Resource::Field(field) => vec![string_field(&self.name, call.payload, field)?],
            Resource::Computed(f) => f(call)?,
        };
        let component = &call.caller.component;
        for r in &resources {
            if !call
                .shared
                .policies
                .allows(component, service, operation, r)
            {
                return Err(OpError::unauthorized(format!(
                    "Principal {component} is not authorized to perform {service}:{operation} on resource {r}"
                )));
            }
        }
        Ok(resources)
    }
}

/// A duplicate operation name in a table.
#[derive(Debug, thiserror::Error)]
#[error("IPC operation {0} is registered twice")]
pub struct DuplicateOperation(pub String);

/// The operations a server dispatches, by short name.
#[derive(Clone, Default)]
pub struct Operations {
    by_name: HashMap<String, Arc<Operation>>,
}

impl Operations {
    /// No operations: every request answers "not supported".
    pub fn empty() -> Self {
        Operations::default()
    }

    /// The operations the core itself serves (pub/sub, configuration, lifecycle, CLI,
    /// metrics, token validation).
    pub fn builtin() -> Self {
        let mut table = Operations::empty();
        for op in super::builtin::operations() {
            // The built-in names are distinct (a unit test checks it).
            let _ = table.register(op);
        }
        table
    }

    /// Adds an operation; a name already present is refused.
    pub fn register(&mut self, operation: Operation) -> Result<(), DuplicateOperation> {
        if self.by_name.contains_key(&operation.name) {
            return Err(DuplicateOperation(operation.name));
        }
        self.by_name
            .insert(operation.name.clone(), Arc::new(operation));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Operation>> {
        self.by_name.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// The answer to an operation nobody registered.
pub(crate) fn unsupported(op: &str) -> OpError {
    if super::MODEL_OPERATIONS.contains(&op) {
        OpError::service(format!("{NAMESPACE}{op} is not supported yet"))
    } else {
        OpError::service(format!("{op} is an unsupported operation"))
    }
}

/// Takes the string `field` out of a JSON object without building the whole document: the
/// other members are skipped, not allocated (the request is parsed again by its handler).
fn string_field(op: &str, payload: &[u8], field: &str) -> Result<String, OpError> {
    let body: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        payload
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let found = FieldOf(field)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| OpError::invalid(format!("invalid {op} request: {e}")))?;
    found
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OpError::invalid(format!("{field} is required")))
}

struct FieldOf<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut seen = false;
        while let Some(is_field) = map.next_key_seed(KeyIs(self.0))? {
            if is_field {
                if seen {
                    return Err(serde::de::Error::custom(format_args!(
                        "duplicate field `{}`",
                        self.0
                    )));
                }
                seen = true;
                found = map.next_value::<Option<String>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a key with the wanted name without allocating it.
struct KeyIs<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_is_taken_without_the_rest() {
        let p =
            br#"{"publishMessage":{"jsonMessage":{"message":{"topic":"inner"}}},"topic":"a\/b"}"#;
        assert_eq!(string_field("Op", p, "topic").unwrap(), "a/b");
        let e = string_field("Op", br#"{"other":1}"#, "topic").unwrap_err();
        assert_eq!(e.message, "topic is required");
        let e = string_field("Op", br#"{"topic":""}"#, "topic").unwrap_err();
        assert_eq!(e.message, "topic is required");
        let e = string_field("Op", b"  ", "topic").unwrap_err();
        assert_eq!(e.message, "topic is required");
        let e = string_field("Op", br#"{"topic":5}"#, "topic").unwrap_err();
        assert!(
            e.message.starts_with("invalid Op request:"),
            "{}",
            e.message
        );
        let e = string_field("Op", br#"{"topic":"a","topic":"b"}"#, "topic").unwrap_err();
        assert!(e.message.contains("duplicate field"), "{}", e.message);
        let e = string_field("Op", br#"{"topic":"a"} x"#, "topic").unwrap_err();
        assert_eq!(e.shape, ErrorShape::InvalidArgumentsError);
        assert_eq!(
            string_field("Op", br#"{"topic":null,"x":[1,{"y":2}]}"#, "topic")
                .unwrap_err()
                .message,
            "topic is required"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let mut table = Operations::builtin();
        let again = Operation::new("PublishToTopic", Handler::sync(|_| Ok(Reply::empty())));
        assert!(table.register(again).is_err());
        let new = Operation::new("GetSecretValue", Handler::sync(|_| Ok(Reply::empty())));
        table.register(new).unwrap();
        assert!(table.get("GetSecretValue").is_some());
    }
}
