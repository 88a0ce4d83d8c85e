//! The control plane's API through its HTTPS client on real sockets, against SQLite and
//! PostgreSQL: registry, groups, certificates, templates, tokens, authentication, bad input
//! (nothing reaches the store), and OpenAPI ↔ router consistency.

mod common;

use common::{Cloud, csr};
use lichen_cloud_store::{Backend, Page};
use serde_json::{Value, json};

async fn things_flow(c: &Cloud) {
    c.expect(
        "POST",
        "/v1/thing-groups",
        Some(json!({"name": "cameras"})),
        201,
    )
    .await;
    let t = c
        .expect(
            "POST",
            "/v1/things",
            Some(json!({"name": "camera-1", "attributes": {"site": "berlin"}, "groups": ["cameras"]})),
            201,
        )
        .await;
    assert_eq!(t["name"], "camera-1");
    assert_eq!(t["version"], 1);
    assert_eq!(t["attributes"]["site"], "berlin");
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": "camera-1"})),
        409,
        "AlreadyExists",
        "camera-1",
    )
    .await;
    for n in ["camera-2", "camera-3"] {
        c.expect("POST", "/v1/things", Some(json!({"name": n})), 201)
            .await;
    }

    // Paging: two per page, then the rest.
    let p1 = c.expect("GET", "/v1/things?limit=2", None, 200).await;
    let names: Vec<&str> = p1["things"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["camera-1", "camera-2"]);
    assert_eq!(p1["next"], "camera-2");
    let p2 = c
        .expect("GET", "/v1/things?limit=2&after=camera-2", None, 200)
        .await;
    assert_eq!(p2["things"].as_array().unwrap().len(), 1);
    assert_eq!(p2["next"], Value::Null);
    c.expect_error(
        "GET",
        "/v1/things?limit=0",
        None,
        422,
        "InvalidField",
        "limit",
    )
    .await;
    c.expect_error(
        "GET",
        "/v1/things?limit=x",
        None,
        400,
        "MalformedRequest",
        "limit",
    )
    .await;

    let d = c.expect("GET", "/v1/things/camera-1", None, 200).await;
    assert_eq!(d["groups"], json!(["cameras"]));
    assert_eq!(d["online"], false);
    assert_eq!(d["connectivity"], Value::Null);
    assert_eq!(d["certificates"], json!([]));

    // Attributes: merge, null removes, versions guard.
    let t = c
        .expect(
            "PATCH",
            "/v1/things/camera-1/attributes",
            Some(json!({"attributes": {"floor": "2", "site": null}})),
            200,
        )
        .await;
    assert_eq!(t["attributes"], json!({"floor": "2"}));
    assert_eq!(t["version"], 2);
    c.expect_error(
        "PATCH",
        "/v1/things/camera-1/attributes",
        Some(json!({"attributes": {"a": "b"}, "expectedVersion": 1})),
        409,
        "VersionConflict",
        "expectedVersion 1",
    )
    .await;
    let t = c
        .expect("DELETE", "/v1/things/camera-1/attributes/floor", None, 200)
        .await;
    assert_eq!(t["attributes"], json!({}));
    c.expect_error(
        "DELETE",
        "/v1/things/camera-1/attributes/floor",
        None,
        404,
        "NotFound",
        "floor",
    )
    .await;

    // Connectivity.
    c.expect_error(
        "GET",
        "/v1/things/camera-1/connectivity",
        None,
        404,
        "NotFound",
        "camera-1",
    )
    .await;
    let body =
        json!({"endpoints": [{"hostAddress": "192.168.1.10", "port": 8883, "metadata": "lan"}]});
    c.expect("PUT", "/v1/things/camera-1/connectivity", Some(body), 200)
        .await;
    let info = c
        .expect("GET", "/v1/things/camera-1/connectivity", None, 200)
        .await;
    assert_eq!(info["endpoints"][0]["port"], 8883);
    let d = c.expect("GET", "/v1/things/camera-1", None, 200).await;
    assert_eq!(
        d["connectivity"]["endpoints"][0]["hostAddress"],
        "192.168.1.10"
    );
    c.expect_error(
        "PUT",
        "/v1/things/camera-1/connectivity",
        Some(json!({"endpoints": [{"hostAddress": "a b", "port": 1}]})),
        422,
        "InvalidField",
        "endpoints[0].hostAddress",
    )
    .await;
    c.expect_error(
        "PUT",
        "/v1/things/camera-1/connectivity",
        Some(json!({"endpoints": [{"hostAddress": "h", "port": 0}]})),
        422,
        "InvalidField",
        "endpoints[0].port",
    )
    .await;
    c.expect_error(
        "PUT",
        "/v1/things/nobody/connectivity",
        Some(json!({"endpoints": []})),
        404,
        "NotFound",
        "nobody",
    )
    .await;

    // Delete.
    c.expect("DELETE", "/v1/things/camera-1", None, 204).await;
    c.expect_error(
        "GET",
        "/v1/things/camera-1",
        None,
        404,
        "NotFound",
        "camera-1",
    )
    .await;
    c.expect_error(
        "DELETE",
        "/v1/things/camera-1",
        None,
        404,
        "NotFound",
        "camera-1",
    )
    .await;
    let members = c
        .expect("GET", "/v1/thing-groups/cameras/members", None, 200)
        .await;
    assert_eq!(members["things"], json!([]));
}
on_both_backends!(things_flow);

async fn groups_flow(c: &Cloud) {
    let g = c
        .expect(
            "POST",
            "/v1/thing-groups",
            Some(json!({"name": "floor-2", "description": "second floor"})),
            201,
        )
        .await;
    assert_eq!(g["description"], "second floor");
    c.expect_error(
        "POST",
        "/v1/thing-groups",
        Some(json!({"name": "floor-2"})),
        409,
        "AlreadyExists",
        "floor-2",
    )
    .await;
    c.expect("POST", "/v1/things", Some(json!({"name": "lamp"})), 201)
        .await;
    c.expect("PUT", "/v1/thing-groups/floor-2/members/lamp", None, 204)
        .await;
    c.expect("PUT", "/v1/thing-groups/floor-2/members/lamp", None, 204)
        .await; // idempotent
    let m = c
        .expect("GET", "/v1/thing-groups/floor-2/members", None, 200)
        .await;
    assert_eq!(m["things"], json!(["lamp"]));
    let d = c.expect("GET", "/v1/things/lamp", None, 200).await;
    assert_eq!(d["groups"], json!(["floor-2"]));
    c.expect_error(
        "PUT",
        "/v1/thing-groups/floor-2/members/ghost",
        None,
        404,
        "NotFound",
        "ghost",
    )
    .await;
    c.expect_error(
        "PUT",
        "/v1/thing-groups/nowhere/members/lamp",
        None,
        404,
        "NotFound",
        "nowhere",
    )
    .await;
    c.expect_error(
        "GET",
        "/v1/thing-groups/nowhere/members",
        None,
        404,
        "NotFound",
        "nowhere",
    )
    .await;
    c.expect("DELETE", "/v1/thing-groups/floor-2/members/lamp", None, 204)
        .await;
    let m = c
        .expect("GET", "/v1/thing-groups/floor-2/members", None, 200)
        .await;
    assert_eq!(m["things"], json!([]));
    let l = c.expect("GET", "/v1/thing-groups", None, 200).await;
    assert_eq!(l["groups"][0]["name"], "floor-2");
    c.expect("GET", "/v1/thing-groups/floor-2", None, 200).await;
    c.expect("DELETE", "/v1/thing-groups/floor-2", None, 204)
        .await;
    c.expect_error(
        "GET",
        "/v1/thing-groups/floor-2",
        None,
        404,
        "NotFound",
        "floor-2",
    )
    .await;

    // A thing naming a missing group is not created at all.
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": "orphan", "groups": ["missing"]})),
        404,
        "NotFound",
        "missing",
    )
    .await;
    c.expect_error("GET", "/v1/things/orphan", None, 404, "NotFound", "orphan")
        .await;
}
on_both_backends!(groups_flow);

async fn certificates_flow(c: &Cloud) {
    c.expect("POST", "/v1/things", Some(json!({"name": "gw-1"})), 201)
        .await;
    let cert = c
        .expect(
            "POST",
            "/v1/certificates",
            Some(json!({"csr": csr("gw-1"), "thing": "gw-1"})),
            201,
        )
        .await;
    let id = cert["id"].as_str().unwrap().to_string();
    assert_eq!(cert["kind"], "DEVICE");
    assert_eq!(cert["status"], "ACTIVE");
    assert_eq!(cert["thing"], "gw-1");
    let der = lichen_pki::cert_der_from_pem(cert["pem"].as_str().unwrap()).unwrap();
    assert_eq!(
        lichen_pki::fingerprint(&der),
        id,
        "the id is the sha256 of the DER"
    );
    assert!(lichen_pki::check_client_cert(&der).is_ok());

    let d = c
        .expect("GET", &format!("/v1/certificates/{id}"), None, 200)
        .await;
    assert_eq!(d["pem"], cert["pem"]);
    let l = c
        .expect("GET", "/v1/certificates?thing=gw-1", None, 200)
        .await;
    assert_eq!(l["certificates"][0]["id"], id.as_str());
    assert!(
        l["certificates"][0].get("pem").is_none(),
        "listings carry no PEM"
    );
    let thing = c.expect("GET", "/v1/things/gw-1", None, 200).await;
    assert_eq!(thing["certificates"][0]["id"], id.as_str());

    // Revoke: final, idempotent, the endpoint hears of it.
    let r = c
        .expect("POST", &format!("/v1/certificates/{id}/revoke"), None, 200)
        .await;
    assert_eq!(r["status"], "REVOKED");
    let at = r["revokedAt"].clone();
    assert!(at.is_string());
    let r2 = c
        .expect("POST", &format!("/v1/certificates/{id}/revoke"), None, 200)
        .await;
    assert_eq!(r2["status"], "REVOKED");
    assert_eq!(r2["revokedAt"], at, "revoking again changes nothing");
    assert_eq!(c.revoked.0.lock().unwrap().first(), Some(&id));
    let active = c
        .expect("GET", "/v1/certificates?status=ACTIVE", None, 200)
        .await;
    assert_eq!(active["certificates"], json!([]));
    let revoked = c
        .expect(
            "GET",
            "/v1/certificates?status=REVOKED&kind=DEVICE",
            None,
            200,
        )
        .await;
    assert_eq!(revoked["certificates"].as_array().unwrap().len(), 1);
    c.expect_error(
        "GET",
        "/v1/certificates?status=MAYBE",
        None,
        400,
        "MalformedRequest",
        "status",
    )
    .await;

    // Deleting a thing revokes its active certificates and tells the endpoint.
    let second = c
        .expect(
            "POST",
            "/v1/certificates",
            Some(json!({"csr": csr("gw-1"), "thing": "gw-1"})),
            201,
        )
        .await;
    let second_id = second["id"].as_str().unwrap().to_string();
    c.expect("DELETE", "/v1/things/gw-1", None, 204).await;
    assert!(c.revoked.0.lock().unwrap().contains(&second_id));
    let s = c
        .expect("GET", &format!("/v1/certificates/{second_id}"), None, 200)
        .await;
    assert_eq!(s["status"], "REVOKED");

    // Bad input reaches nothing.
    let before = c
        .store
        .list_certificates(&Default::default(), &Page::first(100))
        .await
        .unwrap()
        .len();
    c.expect_error(
        "POST",
        "/v1/certificates",
        Some(json!({"csr": csr("x"), "thing": "ghost"})),
        404,
        "NotFound",
        "ghost",
    )
    .await;
    c.expect("POST", "/v1/things", Some(json!({"name": "gw-2"})), 201)
        .await;
    c.expect_error(
        "POST",
        "/v1/certificates",
        Some(json!({"csr": "hello", "thing": "gw-2"})),
        422,
        "InvalidField",
        "csr",
    )
    .await;
    let tampered = tamper(&csr("gw-2"));
    c.expect_error(
        "POST",
        "/v1/certificates",
        Some(json!({"csr": tampered, "thing": "gw-2"})),
        422,
        "InvalidField",
        "csr",
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/certificates",
        Some(json!({"csr": csr("x")})),
        400,
        "MalformedRequest",
        "thing",
    )
    .await;
    let after = c
        .store
        .list_certificates(&Default::default(), &Page::first(100))
        .await
        .unwrap()
        .len();
    assert_eq!(before, after, "refused requests stored no certificate");
    c.expect_error(
        "GET",
        &format!("/v1/certificates/{}", "0".repeat(64)),
        None,
        404,
        "NotFound",
        "000",
    )
    .await;
    c.expect_error(
        "GET",
        "/v1/certificates/not-hex",
        None,
        422,
        "InvalidField",
        "not-hex",
    )
    .await;
    c.expect_error(
        "POST",
        &format!("/v1/certificates/{}/revoke", "0".repeat(64)),
        None,
        404,
        "NotFound",
        "000",
    )
    .await;
}
on_both_backends!(certificates_flow);

/// The CSR with one base64 character of its signature changed.
fn tamper(pem: &str) -> String {
    let mut lines: Vec<String> = pem.lines().map(str::to_string).collect();
    let last_body = lines.len() - 2;
    let line = &mut lines[last_body];
    let i = line.len() / 2;
    let c = line.as_bytes()[i];
    let replacement = if c == b'A' { "B" } else { "A" };
    line.replace_range(i..i + 1, replacement);
    lines.join("\n") + "\n"
}

fn template_body() -> Value {
    json!({
        "Parameters": {"SerialNumber": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "SerialNumber"}}},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}}
        }
    })
}

async fn templates_flow(c: &Cloud) {
    let t = c
        .expect(
            "POST",
            "/v1/provisioning-templates",
            Some(json!({"name": "Fleet", "body": template_body()})),
            201,
        )
        .await;
    assert_eq!(t["enabled"], true);
    assert_eq!(t["claimCertificates"], json!([]));
    c.expect_error(
        "POST",
        "/v1/provisioning-templates",
        Some(json!({"name": "Fleet", "body": template_body()})),
        409,
        "AlreadyExists",
        "Fleet",
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/provisioning-templates",
        Some(json!({"name": "Bad", "body": {"Resources": {"b": {"Type": "AWS::S3::Bucket"}}}})),
        422,
        "InvalidField",
        "body.Resources.b.Type",
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/provisioning-templates",
        Some(json!({"name": "Bad", "body": {}})),
        422,
        "InvalidField",
        "body.Resources",
    )
    .await;
    c.expect_error(
        "GET",
        "/v1/provisioning-templates/Bad",
        None,
        404,
        "NotFound",
        "Bad",
    )
    .await;

    let claim = c
        .expect(
            "POST",
            "/v1/provisioning-templates/Fleet/claim-certificates",
            Some(json!({"csr": csr("claim")})),
            201,
        )
        .await;
    assert_eq!(claim["kind"], "CLAIM");
    assert!(claim.get("thing").is_none());
    let d = c
        .expect("GET", "/v1/provisioning-templates/Fleet", None, 200)
        .await;
    assert_eq!(d["claimCertificates"], json!([claim["id"]]));
    assert_eq!(d["body"], template_body());
    let claims = c
        .expect("GET", "/v1/certificates?kind=CLAIM", None, 200)
        .await;
    assert_eq!(claims["certificates"][0]["id"], claim["id"]);
    c.expect_error(
        "POST",
        "/v1/provisioning-templates/Nope/claim-certificates",
        Some(json!({"csr": csr("c")})),
        404,
        "NotFound",
        "Nope",
    )
    .await;

    let l = c
        .expect("GET", "/v1/provisioning-templates", None, 200)
        .await;
    assert_eq!(l["templates"].as_array().unwrap().len(), 1);
    c.expect("DELETE", "/v1/provisioning-templates/Fleet", None, 204)
        .await;
    c.expect_error(
        "DELETE",
        "/v1/provisioning-templates/Fleet",
        None,
        404,
        "NotFound",
        "Fleet",
    )
    .await;
    c.expect_error(
        "GET",
        &format!("/v1/provisioning-templates/{}", "x".repeat(37)),
        None,
        422,
        "InvalidField",
        "templateName",
    )
    .await;
}
on_both_backends!(templates_flow);

async fn tokens_and_authentication(c: &Cloud) {
    // No token, a wrong one, another scheme: 401 everywhere but health and the document.
    let anonymous = c.client.with_token(None);
    for (method, path) in [
        ("GET", "/v1/things"),
        ("POST", "/v1/things"),
        ("GET", "/v1/admin-tokens"),
        ("GET", "/v1/nothing-here"),
    ] {
        let a = anonymous
            .request(method, path, Some(&json!({"name": "sneaky"})))
            .await
            .unwrap();
        if path == "/v1/nothing-here" {
            assert_eq!(a.status, 404);
            continue;
        }
        assert_eq!(a.status, 401, "{method} {path}");
        assert_eq!(a.json()["error"]["code"], "Unauthorized");
        assert!(
            a.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("admin token")
        );
    }
    let wrong = c
        .client
        .with_token(Some(lichen_cloud::tokens::new_secret()));
    let a = wrong
        .request("POST", "/v1/things", Some(&json!({"name": "sneaky"})))
        .await
        .unwrap();
    assert_eq!(a.status, 401);
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid")
    );
    let basic = c
        .client
        .send(
            "GET",
            "/v1/things",
            &[("authorization", "Basic YTpi")],
            vec![],
        )
        .await;
    // `send` adds the client's own bearer header too; use an anonymous client for this one.
    drop(basic);
    let a = anonymous
        .send(
            "GET",
            "/v1/things",
            &[("authorization", "Basic YTpi")],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(a.status, 401);
    assert!(
        c.store.get_thing("sneaky").await.is_err(),
        "nothing unauthenticated was stored"
    );
    assert_eq!(
        anonymous
            .request("GET", "/healthz", None)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        anonymous
            .request("GET", "/openapi.json", None)
            .await
            .unwrap()
            .status,
        200
    );

    // Tokens: the secret is shown once, works, and stops working when deleted.
    let t = c
        .expect(
            "POST",
            "/v1/admin-tokens",
            Some(json!({"description": "ci"})),
            201,
        )
        .await;
    let secret = t["token"].as_str().unwrap().to_string();
    let id = t["id"].as_str().unwrap().to_string();
    let ci = c.client.with_token(Some(secret.clone()));
    assert_eq!(
        ci.request("GET", "/v1/things", None).await.unwrap().status,
        200
    );
    let l = c.expect("GET", "/v1/admin-tokens", None, 200).await;
    let text = l.to_string();
    assert!(!text.contains(&secret), "listings never show secrets");
    assert!(
        !text.contains(&lichen_cloud::tokens::hash(&secret)),
        "nor hashes"
    );
    assert_eq!(l["tokens"].as_array().unwrap().len(), 2);
    c.expect("DELETE", &format!("/v1/admin-tokens/{id}"), None, 204)
        .await;
    assert_eq!(
        ci.request("GET", "/v1/things", None).await.unwrap().status,
        401
    );
    c.expect_error(
        "DELETE",
        &format!("/v1/admin-tokens/{id}"),
        None,
        404,
        "NotFound",
        &id,
    )
    .await;
    let l = c.expect("GET", "/v1/admin-tokens", None, 200).await;
    let last = l["tokens"][0]["id"].as_str().unwrap().to_string();
    c.expect_error(
        "DELETE",
        &format!("/v1/admin-tokens/{last}"),
        None,
        409,
        "Conflict",
        "last",
    )
    .await;
    let stored = c.store.list_admin_tokens().await.unwrap();
    assert!(
        stored.iter().all(|t| t.token_hash.len() == 64),
        "only hashes are stored"
    );
}
on_both_backends!(tokens_and_authentication);

async fn bad_input_reaches_nothing(c: &Cloud) {
    c.expect_error("POST", "/v1/things", None, 400, "MalformedRequest", "empty")
        .await;
    let a = c
        .client
        .send(
            "POST",
            "/v1/things",
            &[("content-type", "application/json")],
            b"{\"name\": ".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 400);
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("EOF"),
        "{}",
        a.json()
    );
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": "x", "colour": "red"})),
        400,
        "MalformedRequest",
        "colour",
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"attributes": {}})),
        400,
        "MalformedRequest",
        "name",
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": 7})),
        400,
        "MalformedRequest",
        "invalid type",
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": "a/b"})),
        422,
        "InvalidField",
        "thingName",
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": "ok", "attributes": {"k": "a b"}})),
        422,
        "InvalidField",
        "\"k\"",
    )
    .await;
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": "ok", "attributes": many})),
        422,
        "InvalidField",
        "at most 50",
    )
    .await;
    let a = c
        .client
        .send(
            "POST",
            "/v1/things",
            &[("content-type", "text/plain")],
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 415);
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text/plain")
    );

    // Over 1 MiB: 413 naming the limit, declared or not.
    let huge = format!(
        "{{\"name\":\"big\",\"attributes\":{{\"k\":\"{}\"}}}}",
        "v".repeat(2 * 1024 * 1024)
    );
    let a = c
        .client
        .send(
            "POST",
            "/v1/things",
            &[("content-type", "application/json")],
            huge.into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 413, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["error"]["code"], "PayloadTooLarge");
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1048576")
    );

    c.expect_error("GET", "/v1/things/ghost", None, 404, "NotFound", "ghost")
        .await;
    c.expect_error(
        "GET",
        "/v1/no-such-route",
        None,
        404,
        "NotFound",
        "/v1/no-such-route",
    )
    .await;
    c.expect_error("PUT", "/v1/things", None, 405, "MethodNotAllowed", "PUT")
        .await;

    let things = c.store.list_things(&Page::first(100)).await.unwrap();
    assert!(
        things.is_empty(),
        "no refused request stored a thing: {things:?}"
    );
}
on_both_backends!(bad_input_reaches_nothing);

/// Fills `{param}` segments with values the handlers accept.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{id}" => "0".repeat(64),
            "{name}" | "{thing}" | "{key}" => "probe".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn client_device_associations(c: &Cloud) {
    for n in ["gw", "sensor-1", "sensor-2"] {
        c.expect("POST", "/v1/things", Some(json!({"name": n})), 201)
            .await;
    }
    let base = "/greengrass/v2/coreDevices/gw";
    let r = c
        .expect(
            "POST",
            &format!("{base}/associateClientDevices"),
            Some(
                json!({"entries": [{"thingName": "sensor-2"}, {"thingName": "sensor-1"},
                {"thingName": "ghost"}, {"thingName": "gw"}]}),
            ),
            200,
        )
        .await;
    let codes: Vec<(String, String)> = r["errorEntries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["thingName"].as_str().unwrap().to_string(),
                e["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("ghost".to_string(), "ResourceNotFoundException".to_string()),
            ("gw".to_string(), "ValidationException".to_string())
        ],
        "{r}"
    );
    assert!(
        c.revoked
            .0
            .lock()
            .unwrap()
            .contains(&"clientDevices:gw".to_string()),
        "the endpoint is told"
    );
    let l = c
        .expect("GET", &format!("{base}/associatedClientDevices"), None, 200)
        .await;
    let names: Vec<&str> = l["associatedClientDevices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["thingName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sensor-1", "sensor-2"], "{l}");
    assert!(l["associatedClientDevices"][0]["associationTimestamp"].is_string());
    assert_eq!(l["nextToken"], Value::Null);
    let p = c
        .expect(
            "GET",
            &format!("{base}/associatedClientDevices?maxResults=1"),
            None,
            200,
        )
        .await;
    assert_eq!(p["nextToken"], "sensor-1", "{p}");
    let p2 = c
        .expect(
            "GET",
            &format!("{base}/associatedClientDevices?maxResults=1&nextToken=sensor-1"),
            None,
            200,
        )
        .await;
    assert_eq!(p2["associatedClientDevices"][0]["thingName"], "sensor-2");
    let r = c
        .expect(
            "POST",
            &format!("{base}/disassociateClientDevices"),
            Some(json!({"entries": [{"thingName": "sensor-1"}, {"thingName": "never"}]})),
            200,
        )
        .await;
    assert_eq!(r["errorEntries"], json!([]));
    let l = c
        .expect("GET", &format!("{base}/associatedClientDevices"), None, 200)
        .await;
    assert_eq!(l["associatedClientDevices"].as_array().unwrap().len(), 1);
    // Deleting a device tells the endpoint too (cores drop it from their lists).
    c.expect("DELETE", "/v1/things/sensor-2", None, 204).await;
    assert!(
        c.revoked
            .0
            .lock()
            .unwrap()
            .contains(&"clientDevices:sensor-2".to_string())
    );
    let l = c
        .expect("GET", &format!("{base}/associatedClientDevices"), None, 200)
        .await;
    assert_eq!(l["associatedClientDevices"], json!([]), "{l}");
    // An unknown core, a bad name, too many entries, an unknown field; and no token.
    c.expect_error(
        "GET",
        "/greengrass/v2/coreDevices/nope/associatedClientDevices",
        None,
        404,
        "NotFound",
        "nope",
    )
    .await;
    c.expect_error(
        "POST",
        &format!("{base}/associateClientDevices"),
        Some(json!({"entries": [{"thingName": "bad name"}]})),
        422,
        "InvalidField",
        "thingName",
    )
    .await;
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"thingName": format!("d{i}")}))
        .collect();
    let a = c
        .client
        .request(
            "POST",
            &format!("{base}/associateClientDevices"),
            Some(&json!({ "entries": many })),
        )
        .await
        .unwrap();
    assert!(a.status == 400 || a.status == 422, "{}", a.status);
    let a = c
        .client
        .request(
            "POST",
            &format!("{base}/associateClientDevices"),
            Some(&json!({"things": []})),
        )
        .await
        .unwrap();
    assert!(a.status == 400 || a.status == 422, "{}", a.status);
    let anonymous = c.client.with_token(None);
    let a = anonymous
        .request("GET", &format!("{base}/associatedClientDevices"), None)
        .await
        .unwrap();
    assert_eq!(a.status, 401);
}
on_both_backends!(client_device_associations);

async fn openapi_matches_the_router(c: &Cloud) {
    let doc = c.expect("GET", "/openapi.json", None, 200).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let table = lichen_cloud::api::routes::<lichen_cloud_store::Store>();
    let mut routed = std::collections::BTreeSet::new();
    for r in &table {
        routed.insert((r.path.to_string(), r.method.as_str().to_string()));
    }
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            documented.insert((path.clone(), method.clone()));
            assert!(op["operationId"].is_string(), "{method} {path}");
        }
    }
    assert_eq!(
        routed, documented,
        "every routed path+method is documented and no other"
    );

    // Every referenced schema exists.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for part in text.split("#/components/schemas/").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(
            schemas.contains_key(&name),
            "schema {name} is referenced but not defined"
        );
    }

    // Every documented operation answers (not with the router's 404/405).
    for (path, method) in &documented {
        let body = doc["paths"][path][method]
            .get("requestBody")
            .map(|_| json!({}));
        let a = c
            .client
            .request(&method.to_uppercase(), &concrete(path), body.as_ref())
            .await
            .unwrap();
        let v = a.json();
        let code = v["error"]["code"].as_str().unwrap_or("");
        assert_ne!(
            a.status, 405,
            "{method} {path} is documented but not routed"
        );
        assert!(
            !(a.status == 404
                && v["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no route")),
            "{method} {path} is documented but not routed: {v}"
        );
        assert!(a.status < 500, "{method} {path}: {code} {v}");
    }
}
on_both_backends!(openapi_matches_the_router);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_admin_token_and_the_data() {
    let cloud = common::start(common::Backend::Sqlite).await.unwrap();
    assert!(cloud.handle.as_ref().unwrap().admin_token_created.is_some());
    cloud
        .expect("POST", "/v1/things", Some(json!({"name": "kept"})), 201)
        .await;
    let token = std::fs::read_to_string(cloud.dir.path().join("admin.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cloud.dir.path().join("admin.token")), 0o600);
    assert_eq!(mode(cloud.dir.path()), 0o700);
    assert_eq!(mode(&cloud.dir.path().join("ca/ca.key")), 0o600);
    let api: Value =
        serde_json::from_str(&std::fs::read_to_string(cloud.dir.path().join("api.json")).unwrap())
            .unwrap();
    assert_eq!(api["url"], cloud.client.url());
    let (dir, config) = cloud.stop().await;

    let again = common::start_on(dir, config).await;
    assert!(
        again.handle.as_ref().unwrap().admin_token_created.is_none(),
        "no second token"
    );
    assert_eq!(
        std::fs::read_to_string(again.dir.path().join("admin.token")).unwrap(),
        token
    );
    again.expect("GET", "/v1/things/kept", None, 200).await;
    again.stop().await;
}

/// Figures, not a check: `cargo test -p lichen-cloud --test api measure -- --ignored --nocapture`.
/// Each request is a new TLS connection, as the CLI makes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_request_rates() {
    for backend in [common::Backend::Sqlite, common::Backend::Postgres] {
        let Some(c) = common::start(backend).await else {
            continue;
        };
        let n = 300;
        let start = std::time::Instant::now();
        for i in 0..n {
            c.expect(
                "POST",
                "/v1/things",
                Some(json!({"name": format!("t-{i:05}")})),
                201,
            )
            .await;
        }
        let create = start.elapsed();
        let start = std::time::Instant::now();
        for i in 0..n {
            c.expect("GET", &format!("/v1/things/t-{i:05}"), None, 200)
                .await;
        }
        let describe = start.elapsed();
        let start = std::time::Instant::now();
        let parallel = 8;
        let mut tasks = Vec::new();
        for w in 0..parallel {
            let client = c.client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..n / parallel {
                    let a = client
                        .request(
                            "GET",
                            &format!("/v1/things/t-{:05}", w * (n / parallel) + i),
                            None,
                        )
                        .await
                        .unwrap();
                    assert_eq!(a.status, 200);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let concurrent = start.elapsed();
        eprintln!(
            "{backend:?}: {n} creates {:.0}/s ({:.1} ms each), {n} describes {:.0}/s, {parallel} clients describing {:.0}/s",
            n as f64 / create.as_secs_f64(),
            create.as_secs_f64() * 1000.0 / n as f64,
            n as f64 / describe.as_secs_f64(),
            (n / parallel * parallel) as f64 / concurrent.as_secs_f64(),
        );
        c.stop().await;
    }
}
