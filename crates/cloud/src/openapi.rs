//! The OpenAPI 3.1 document, generated from the route table the router is built from
//! ([`crate::api::routes`]) plus the extensions' fragments, so a route cannot exist without
//! being documented, nor be documented without existing.

use serde_json::{Map, Value, json};

use crate::api::{ApiExtension, Route};

fn string() -> Value {
    json!({"type": "string"})
}

fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn list_of(field: &str, item: Value) -> Value {
    json!({
        "type": "object",
        "required": [field],
        "properties": {
            field: {"type": "array", "items": item},
            "next": {"type": ["string", "null"], "description": "Pass as `after` for the next page; null on the last page."}
        }
    })
}

/// The schemas the routes name.
pub fn schemas() -> Map<String, Value> {
    let attributes =
        json!({"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 50});
    let cert_summary = json!({
        "type": "object",
        "required": ["id", "serial", "kind", "status", "createdAt", "notAfter"],
        "properties": {
            "id": {"type": "string", "description": "sha256 of the DER, lowercase hex"},
            "serial": string(),
            "kind": {"enum": ["DEVICE", "CLAIM"]},
            "status": {"enum": ["ACTIVE", "REVOKED"]},
            "thing": string(),
            "createdAt": string(),
            "notAfter": string(),
            "revokedAt": string()
        }
    });
    let endpoint = json!({
        "type": "object",
        "required": ["hostAddress", "port"],
        "properties": {"hostAddress": string(), "port": {"type": "integer", "minimum": 1, "maximum": 65535}, "metadata": string()}
    });
    let token_info = json!({
        "type": "object",
        "required": ["id", "description", "createdAt"],
        "properties": {"id": string(), "description": string(), "createdAt": string()}
    });
    let template = json!({
        "type": "object",
        "required": ["name", "enabled", "body", "claimCertificates", "createdAt"],
        "properties": {
            "name": string(), "enabled": {"type": "boolean"},
            "body": {"type": "object", "description": "AWS provisioning template: Parameters and Resources"},
            "claimCertificates": {"type": "array", "items": string()},
            "createdAt": string()
        }
    });
    let group = json!({
        "type": "object",
        "required": ["name", "createdAt"],
        "properties": {"name": string(), "description": string(), "createdAt": string()}
    });
    let thing = json!({
        "type": "object",
        "required": ["name", "attributes", "version", "createdAt"],
        "properties": {"name": string(), "attributes": attributes, "version": {"type": "integer"}, "createdAt": string()}
    });
    let connectivity = json!({
        "type": "object",
        "required": ["thing", "endpoints", "reportedAt"],
        "properties": {"thing": string(), "endpoints": {"type": "array", "items": reference("ConnectivityEndpoint")}, "reportedAt": string()}
    });
    let mut s = Map::new();
    let mut put = |k: &str, v: Value| {
        s.insert(k.to_string(), v);
    };
    put(
        "Error",
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": string(), "message": string()}}}
        }),
    );
    put(
        "Health",
        json!({"type": "object", "properties": {"status": string()}}),
    );
    put(
        "Endpoints",
        json!({
            "type": "object",
            "required": ["iotDataEndpoint", "apiEndpoint", "deviceEndpointRunning", "rootCaPem"],
            "properties": {"iotDataEndpoint": string(), "apiEndpoint": string(), "deviceEndpointRunning": {"type": "boolean"}, "rootCaPem": string()}
        }),
    );
    put("Thing", thing);
    put("ThingList", list_of("things", reference("Thing")));
    put(
        "CreateThing",
        json!({
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9:_-]{1,128}$"},
                "attributes": reference("Attributes"),
                "groups": {"type": "array", "items": string(), "maxItems": 10}
            }
        }),
    );
    put("Attributes", attributes_schema());
    put(
        "ThingDescription",
        json!({
            "allOf": [reference("Thing"), {
                "type": "object",
                "required": ["groups", "online", "certificates"],
                "properties": {
                    "groups": {"type": "array", "items": string()},
                    "connectivity": {"oneOf": [reference("Connectivity"), {"type": "null"}]},
                    "presence": {"type": ["object", "null"]},
                    "online": {"type": "boolean"},
                    "certificates": {"type": "array", "items": reference("CertificateSummary")}
                }
            }]
        }),
    );
    put(
        "UpdateAttributes",
        json!({
            "type": "object",
            "required": ["attributes"],
            "additionalProperties": false,
            "properties": {
                "attributes": {"type": "object", "additionalProperties": nullable_string()},
                "expectedVersion": {"type": "integer"}
            }
        }),
    );
    put("ConnectivityEndpoint", endpoint);
    put("Connectivity", connectivity);
    put(
        "UpdateConnectivity",
        json!({
            "type": "object",
            "required": ["endpoints"],
            "additionalProperties": false,
            "properties": {"endpoints": {"type": "array", "items": reference("ConnectivityEndpoint"), "maxItems": 32}}
        }),
    );
    put("ThingGroup", group);
    put("ThingGroupList", list_of("groups", reference("ThingGroup")));
    put(
        "CreateThingGroup",
        json!({
            "type": "object", "required": ["name"], "additionalProperties": false,
            "properties": {"name": {"type": "string", "pattern": "^[a-zA-Z0-9:_-]{1,128}$"}, "description": string()}
        }),
    );
    put("MemberList", list_of("things", string()));
    put("CertificateSummary", cert_summary);
    put(
        "Certificate",
        json!({"allOf": [reference("CertificateSummary"), {"type": "object", "required": ["pem"], "properties": {"pem": string()}}]}),
    );
    put(
        "CertificateList",
        list_of("certificates", reference("CertificateSummary")),
    );
    put(
        "IssueCertificate",
        json!({
            "type": "object", "required": ["csr", "thing"], "additionalProperties": false,
            "properties": {"csr": {"type": "string", "description": "PEM certificate signing request"}, "thing": string()}
        }),
    );
    put("ProvisioningTemplate", template);
    put(
        "ProvisioningTemplateList",
        list_of("templates", reference("ProvisioningTemplate")),
    );
    put(
        "CreateProvisioningTemplate",
        json!({
            "type": "object", "required": ["name", "body"], "additionalProperties": false,
            "properties": {"name": {"type": "string", "pattern": "^[0-9A-Za-z_-]{1,36}$"}, "body": {"type": "object"}, "enabled": {"type": "boolean", "default": true}}
        }),
    );
    put(
        "CreateClaimCertificate",
        json!({
            "type": "object", "required": ["csr"], "additionalProperties": false,
            "properties": {"csr": string()}
        }),
    );
    put("AdminTokenInfo", token_info);
    put(
        "NewAdminToken",
        json!({"allOf": [reference("AdminTokenInfo"), {"type": "object", "required": ["token"], "properties": {"token": {"type": "string", "description": "the secret, shown once"}}}]}),
    );
    put(
        "AdminTokenList",
        json!({"type": "object", "required": ["tokens"], "properties": {"tokens": {"type": "array", "items": reference("AdminTokenInfo")}}}),
    );
    put(
        "CreateAdminToken",
        json!({"type": "object", "additionalProperties": false, "properties": {"description": string()}}),
    );
    for (name, schema) in crate::api::deployments::schemas() {
        put(name, schema);
    }
    for (name, schema) in crate::api::jobs::schemas() {
        put(name, schema);
    }
    for (name, schema) in crate::api::devices::schemas() {
        put(name, schema);
    }
    for (name, schema) in crate::api::streams::schemas() {
        put(name, schema);
    }
    for (name, schema) in crate::api::core_devices::schemas() {
        put(name, schema);
    }
    s
}

fn attributes_schema() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 50})
}

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": reference("Error")}}})
}

fn operation<S>(r: &Route<S>) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(r.operation_id));
    op.insert("summary".into(), json!(r.summary));
    let mut params: Vec<Value> = path_params(r.path)
        .into_iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(r.query.iter().map(|q| {
        json!({"name": q.name, "in": "query", "required": false, "description": q.description, "schema": {"type": q.kind}})
    }));
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(req) = r.request {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": reference(req)}}}),
        );
    }
    if r.public {
        op.insert("security".into(), json!([]));
    }
    let mut responses = Map::new();
    let (status, schema) = r.response;
    let ok = match schema {
        Some(s) => {
            json!({"description": "success", "content": {"application/json": {"schema": reference(s)}}})
        }
        None if status == 204 => json!({"description": "success, no body"}),
        None => json!({"description": "success", "content": {"application/json": {}}}),
    };
    responses.insert(status.to_string(), ok);
    if !r.public {
        responses.insert("401".into(), error_response("missing or wrong admin token"));
        responses.insert(
            "404".into(),
            error_response("no such resource (the message names it)"),
        );
        responses.insert(
            "409".into(),
            error_response("conflicts with what is stored"),
        );
    }
    if r.request.is_some() {
        responses.insert(
            "400".into(),
            error_response("malformed body (the message names the field)"),
        );
        responses.insert("413".into(), error_response("body larger than 1 MiB"));
        responses.insert(
            "422".into(),
            error_response("a field's value is not acceptable (named)"),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

/// `{name}` segments of a path.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The whole document.
pub fn document<S>(routes: &[Route<S>], extensions: &[ApiExtension]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(r.method.as_str().to_string(), operation(r));
        }
    }
    let mut schemas = schemas();
    for ext in extensions {
        if let Value::Object(p) = &ext.openapi_paths {
            for (k, v) in p {
                paths.insert(k.clone(), v.clone());
            }
        }
        if let Value::Object(s) = &ext.openapi_schemas {
            for (k, v) in s {
                schemas.insert(k.clone(), v.clone());
            }
        }
        if ext.device_router.is_some() {
            device_paths(&mut paths);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "lichen cloud control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Registry, certificates, provisioning templates and admin tokens of a self-hosted lichen cloud. Every operation but /healthz and /openapi.json needs `Authorization: Bearer <admin token>`. JSON bodies are at most 1 MiB."
        },
        "security": [{"adminToken": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "deviceCertificate": {"type": "mutualTLS", "description": "The thing's certificate from the cloud CA, ACTIVE and attached to the thing (crate::device_api)."}
            }
        }
    })
}

/// `/device/v1` (crate::device_api): the thing's certificate, never the admin token.
fn device_paths(paths: &mut Map<String, Value>) {
    let params = |extra: Option<&str>| {
        let mut p = vec![
            json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
            json!({"name": "version", "in": "path", "required": true, "schema": {"type": "string"}}),
        ];
        if let Some(e) = extra {
            p.push(
                json!({"name": e, "in": "path", "required": true, "schema": {"type": "string"},
                "description": "The artifact's file name (or its URI, percent-encoded)."}),
            );
        }
        p
    };
    let refusals = json!({
        "401": {"description": "No client certificate, or one the store does not know or has revoked."},
        "403": {"description": "Not a device certificate, or the component version is not deployed to the thing."},
        "404": {"description": "No such component version or artifact."}
    });
    let mut recipe_responses = refusals.clone();
    recipe_responses["200"] = json!({"description": "The stored recipe (JSON, digests injected).",
        "content": {"application/json": {"schema": {"type": "object"}}}});
    let mut artifact_responses = refusals;
    artifact_responses["200"] = json!({"description": "The artifact's bytes.",
        "content": {"application/octet-stream": {}}});
    artifact_responses["206"] =
        json!({"description": "From the `Range: bytes=N-` offset, with Content-Range."});
    artifact_responses["416"] = json!({"description": "The range starts at or past the end."});
    paths.insert(
        format!(
            "{}{}",
            crate::device_api::PREFIX,
            lichen_cloud_components::RECIPE_PATH
        ),
        json!({"get": {"operationId": "deviceGetRecipe", "tags": ["device"],
            "summary": "A deployed component version's recipe, for the thing's fleet agent",
            "security": [{"deviceCertificate": []}], "parameters": params(None),
            "responses": recipe_responses}}),
    );
    paths.insert(
        format!(
            "{}{}",
            crate::device_api::PREFIX,
            lichen_cloud_components::ARTIFACT_PATH
        ),
        json!({"get": {"operationId": "deviceGetArtifact", "tags": ["device"],
            "summary": "An artifact of a deployed component version (resumable with Range)",
            "security": [{"deviceCertificate": []}], "parameters": params(Some("uri")),
            "responses": artifact_responses}}),
    );
    paths.insert(
        format!("{}{}", crate::device_api::PREFIX, crate::device_streams::RECORDS_PATH),
        json!({"post": {"operationId": "deviceAppendStreamRecords", "tags": ["device"],
            "summary": "A batch of the thing's stream, exported by its stream manager; stored once per sequence number, answered after the commit",
            "security": [{"deviceCertificate": []}],
            "parameters": [{"name": "stream", "in": "path", "required": true, "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["records"], "additionalProperties": false,
                "properties": {"records": {"type": "array", "maxItems": lichen_cloud_store::MAX_STREAM_BATCH, "items": {
                    "type": "object", "additionalProperties": false,
                    "required": ["sequenceNumber", "ingestTime", "payload"],
                    "properties": {"sequenceNumber": {"type": "integer", "minimum": 0},
                        "ingestTime": {"type": "integer"},
                        "payload": {"type": "string", "contentEncoding": "base64"}}}}}}}}},
            "responses": {
                "200": {"description": "Stored (duplicates of stored records are kept as they were).",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "stored": {"type": "integer"}, "duplicates": {"type": "integer"},
                        "lastSequenceNumber": {"type": ["integer", "null"]}}}}}},
                "401": {"description": "No client certificate, or one the store does not know or has revoked."},
                "403": {"description": "Not a device certificate."},
                "413": {"description": "A body over 8 MiB."},
                "422": {"description": "A bad field (the message names it), over the bounds."}
            }}}),
    );
    paths.insert(
        format!("{}{}", crate::device_api::PREFIX, crate::device_resolve::RESOLVE_PATH),
        json!({"post": {"operationId": "deviceResolveComponents", "tags": ["device"],
            "summary": "The versions of a deployment's dependency closure, chosen from the stored recipes (Greengrass ResolveComponentCandidates)",
            "security": [{"deviceCertificate": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["components"], "additionalProperties": false,
                "properties": {"components": {"type": "object", "description": "Root components: name -> exact version",
                    "additionalProperties": {"type": "string"}}}}}}},
            "responses": {
                "200": {"description": "Every component version the closure needs, and the dependencies the cloud holds no version of (left to the device).",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "resolvedComponentVersions": {"type": "array", "items": {"type": "object", "properties": {
                            "componentName": {"type": "string"}, "componentVersion": {"type": "string"}}}},
                        "external": {"type": "array", "items": {"type": "object", "properties": {
                            "componentName": {"type": "string"}, "versionRequirement": {"type": "string"},
                            "requiredBy": {"type": "string"}}}}}}}}},
                "401": {"description": "No client certificate, or one the store does not know or has revoked."},
                "403": {"description": "A root the thing may not fetch."},
                "409": {"description": "No versions satisfy every requirement (the message names them)."},
                "422": {"description": "A bad field, or a closure over the bounds."}
            }}}),
    );
}
