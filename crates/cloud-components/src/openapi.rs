//! The OpenAPI 3.1 `paths` (and schemas) of the component store, generated from
//! [`crate::http::ROUTES`] so the document cannot name a route the router lacks.

use serde_json::{Map, Value, json};

use crate::http::{ARTIFACT_PATH, ROUTES};
use crate::upload::UPLOAD_CONTENT_TYPE;

fn path_parameters(path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for segment in path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let description = match name {
                "name" => "Component name",
                "version" => "Component version (semver)",
                "uri" => {
                    "The artifact URI as the recipe writes it, percent-encoded; or its file name when only one artifact of the version has it"
                }
                _ => "",
            };
            out.push(json!({
                "name": name, "in": "path", "required": true,
                "description": description, "schema": {"type": "string"}
            }));
        }
    }
    out
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn operation(method: &str, path: &str) -> Value {
    let mut responses = Map::new();
    let mut op = Map::new();
    match (method, path) {
        ("POST", _) => {
            op.insert("requestBody".into(), json!({
                "required": true,
                "description": "`application/vnd.lichen.component-upload`: \"LCU1\", a big-endian u32 header length, the UploadHeader JSON, then each declared artifact's content in order. `application/json`: the UploadHeader alone (artifacts by sha256 only).",
                "content": {
                    UPLOAD_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/UploadHeader"}}
                }
            }));
            responses.insert("201".into(), json!({"description": "Published", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ComponentVersion"}}}}));
            responses.insert(
                "400".into(),
                error_response("Malformed upload, or content not as declared"),
            );
            responses.insert(
                "422".into(),
                error_response("Invalid recipe, missing or unexpected artifact, unknown digest"),
            );
            responses.insert(
                "409".into(),
                error_response("The version exists (versions are immutable)"),
            );
            responses.insert(
                "413".into(),
                error_response("An artifact or the version is larger than allowed"),
            );
            responses.insert("415".into(), error_response("Unsupported content type"));
        }
        ("GET", "/components") => {
            op.insert("parameters".into(), json!([
                {"name": "name", "in": "query", "schema": {"type": "string"}, "description": "Only this component"},
                {"name": "after", "in": "query", "schema": {"type": "string"}, "description": "Continue after this `name@version`: the `next` of the previous page"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}
            ]));
            responses.insert("200".into(), json!({"description": "Versions", "content": {"application/json": {"schema": {
                "type": "object", "required": ["components"], "properties": {
                "components": {"type": "array", "items": {"$ref": "#/components/schemas/ComponentSummary"}},
                "next": {"type": ["string", "null"], "description": "Pass as `after` for the next page; null on the last page"}}}}}}));
        }
        ("GET", ARTIFACT_PATH) => {
            responses.insert("200".into(), json!({"description": "The artifact's content; `Repr-Digest` and `ETag` carry its sha256",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}));
            responses.insert("404".into(), error_response("No such version or artifact"));
        }
        ("GET", _) => {
            responses.insert("200".into(), json!({"description": "The version", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ComponentVersion"}}}}));
            responses.insert("404".into(), error_response("No such version"));
        }
        ("DELETE", _) => {
            responses.insert("204".into(), json!({"description": "Deleted"}));
            responses.insert("404".into(), error_response("No such version"));
            responses.insert("409".into(), error_response("A deployment uses it"));
        }
        _ => {}
    }
    let params = path_parameters(path);
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// The `paths` object, each path prefixed with `prefix` (the nest point, e.g. `/v1`).
pub fn openapi_paths(prefix: &str) -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(format!("{prefix}{}", route.path))
            .or_insert_with(|| Value::Object(Map::new()));
        let mut op = operation(route.method, route.path);
        if let Value::Object(m) = &mut op {
            m.insert("operationId".into(), route.operation_id.into());
            m.insert("summary".into(), route.summary.into());
            m.insert("tags".into(), json!(["components"]));
        }
        if let Value::Object(e) = entry {
            e.insert(route.method.to_ascii_lowercase(), op);
        }
    }
    Value::Object(paths)
}

/// The schemas the paths refer to (`#/components/schemas/…`), to merge into the document.
pub fn openapi_schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "StoredArtifact": {"type": "object", "required": ["uri", "sha256", "size"], "properties": {
            "uri": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": {"type": "integer"}}},
        "ComponentSummary": {"type": "object", "required": ["name", "version", "artifacts", "createdAt"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/StoredArtifact"}},
            "createdAt": {"type": "string", "format": "date-time"}}},
        "ComponentVersion": {"type": "object", "required": ["name", "version", "recipe", "artifacts", "createdAt"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "recipe": {"type": "object", "description": "The stored recipe (JSON); every artifact carries Digest (base64 SHA-256) and Algorithm SHA-256"},
            "artifacts": {"type": "array", "items": {"$ref": "#/components/schemas/StoredArtifact"}},
            "createdAt": {"type": "string", "format": "date-time"}}},
        "UploadHeader": {"type": "object", "required": ["recipe"], "additionalProperties": false, "properties": {
            "recipe": {"type": "string", "description": "Recipe text, YAML or JSON"},
            "artifacts": {"type": "array", "items": {"type": "object", "required": ["uri"], "additionalProperties": false, "properties": {
                "uri": {"type": "string"}, "size": {"type": "integer", "description": "Bytes of content that follow"},
                "sha256": {"type": "string", "description": "Checked against the content, or names stored content"}}}}}}
    })
}
