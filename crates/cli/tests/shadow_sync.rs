//! Shadow cloud sync (issue 13), both ends the real binary: `lichen cloud run` and a core
//! started from that cloud's bundle, its link to the cloud through a TCP relay the test can
//! cut (the outage). The cloud side of each shadow is driven the way another cloud client
//! would: an MQTT connection to the cloud's endpoint with the thing's certificate (client id
//! `<thing>#console`) on AWS IoT's shadow topics. The device side is `lichen shadow`.
//!
//! Checked: a reported change on the device reaches the cloud; a desired change in the cloud
//! reaches the device's delta; both sides change during an outage and the merge gives the
//! documented result (cloud wins `desired`, device wins `reported`, untouched fields from
//! either side kept); deletes propagate both ways; a local update made while the link is down
//! survives a kill -9 and is synced after the restart; `lichen shadow list --json` shows the
//! sync state; `deviceToCloud` + `periodic` sends local changes and ignores the cloud's.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cloud::RunningCloud;
use common::*;
use lichen_mqtt_client::{Client, ConnectOptions, Incoming, QoS, TlsFiles, Transport};
use serde_json::{Value, json};

/// A TCP relay to the cloud's MQTT port; `cut` closes every connection and refuses new ones
/// until `restore`.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                // As the endpoints' own sockets: no Nagle delay added by the relay.
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let mut list = c.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Another cloud client of the thing's shadows (the console, an application).
struct Console {
    rt: tokio::runtime::Runtime,
    client: Client,
    incoming: Incoming,
    thing: String,
}

static TOKEN: AtomicU64 = AtomicU64::new(1);

impl Console {
    fn connect(cloud_mqtt: &str, bundle: &Path, thing: &str) -> Console {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut o = ConnectOptions::new(cloud_mqtt.to_string(), format!("{thing}#console"));
        o.transport = Transport::Tls(TlsFiles {
            ca: bundle.join("ca.pem"),
            client_cert: Some(bundle.join("thing.cert.pem")),
            client_key: Some(bundle.join("thing.private.key")),
            server_name: Some("localhost".into()),
        });
        let (client, incoming) = rt.block_on(async {
            let (c, i) = Client::connect(o).await.expect("console connects");
            c.subscribe_one(&format!("$aws/things/{thing}/shadow/#"), QoS::AtLeastOnce)
                .await
                .unwrap();
            (c, i)
        });
        Console {
            rt,
            client,
            incoming,
            thing: thing.to_string(),
        }
    }

    /// One request; `(accepted?, answer)`.
    fn request(&mut self, name: Option<&str>, op: &str, mut body: Value) -> (bool, Value) {
        let token = format!("console-{}", TOKEN.fetch_add(1, Ordering::Relaxed));
        body["clientToken"] = json!(token);
        let prefix = match name {
            Some(n) => format!("$aws/things/{}/shadow/name/{n}", self.thing),
            None => format!("$aws/things/{}/shadow", self.thing),
        };
        let topic = format!("{prefix}/{op}");
        let (client, incoming) = (&self.client, &mut self.incoming);
        self.rt.block_on(async {
            client
                .publish(&topic, serde_json::to_vec(&body).unwrap(), QoS::AtLeastOnce)
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let p = incoming
                    .recv_timeout(left)
                    .await
                    .unwrap_or_else(|| panic!("no answer to {topic}"));
                let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                if v["clientToken"] != token.as_str() {
                    continue;
                }
                if *p.topic == format!("{topic}/accepted") {
                    return (true, v);
                }
                if *p.topic == format!("{topic}/rejected") {
                    return (false, v);
                }
            }
        })
    }

    /// The cloud's document, `None` when it has none.
    fn get(&mut self, name: Option<&str>) -> Option<Value> {
        let (ok, v) = self.request(name, "get", json!({}));
        if ok {
            Some(v)
        } else {
            assert_eq!(v["code"], 404, "{v}");
            None
        }
    }

    fn update(&mut self, name: Option<&str>, state: Value) -> Value {
        let (ok, v) = self.request(name, "update", json!({ "state": state }));
        assert!(ok, "cloud update rejected: {v}");
        v
    }

    fn delete(&mut self, name: Option<&str>) {
        let (ok, v) = self.request(name, "delete", json!({}));
        assert!(ok, "cloud delete rejected: {v}");
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The local document (`lichen shadow get`), `None` when there is none.
fn local(core: &TestCore, thing: &str, name: Option<&str>) -> Option<Value> {
    let mut args = vec!["shadow", "get", thing, "--json"];
    if let Some(n) = name {
        args.extend(["--name", n]);
    }
    let out = core.cli(&args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn local_update(core: &TestCore, thing: &str, name: Option<&str>, state: Value) -> Value {
    let body = json!({ "state": state }).to_string();
    let mut args = vec!["shadow", "update", thing, body.as_str()];
    if let Some(n) = name {
        args.extend(["--name", n]);
    }
    core.json(&args)
}

struct Setup {
    cloud: RunningCloud,
    relay: Relay,
    core: TestCore,
    console: Console,
    thing: String,
}

fn cloud_connected(core: &TestCore) -> bool {
    core.json(&["core", "status"])["cloud"]["state"] == "connected"
}

/// A cloud, a core from its bundle reaching it through the relay, with `shadow_config` as the
/// ShadowManager configuration (YAML, indented under `configuration:`), and the console.
fn setup(thing: &str, shadow_config: &str) -> Setup {
    setup_with(thing, shadow_config, |_| {})
}

/// [`setup`], with `before_core` run on the cloud once the core's thing exists and before
/// the core starts.
fn setup_with(thing: &str, shadow_config: &str, before_core: impl FnOnce(&RunningCloud)) -> Setup {
    let cloud = RunningCloud::start();
    let core_dir = tempfile::tempdir().unwrap();
    cloud.json(&[
        "thing",
        "create",
        thing,
        "--out",
        core_dir.path().to_str().unwrap(),
    ]);
    let endpoint = cloud.ready["iotDataEndpoint"].as_str().unwrap().to_string();
    let port = endpoint.rsplit(':').next().unwrap();
    let relay = Relay::start(format!("127.0.0.1:{port}"));
    let bundle = read(&core_dir.path().join("config.yaml"));
    assert!(bundle.contains(&endpoint), "{bundle}");
    let config = format!(
        "{}services:\n  aws.greengrass.ShadowManager:\n    configuration:\n{shadow_config}",
        bundle.replace(&endpoint, &format!("localhost:{}", relay.port))
    );
    let console = Console::connect(&format!("127.0.0.1:{port}"), core_dir.path(), thing);
    before_core(&cloud);
    let core = TestCore::start_in(core_dir, "root", &config);
    wait_for("the core to connect", Duration::from_secs(60), || {
        cloud_connected(&core).then_some(())
    });
    Setup {
        cloud,
        relay,
        core,
        console,
        thing: thing.to_string(),
    }
}

#[test]
fn both_ways_through_an_outage_a_kill_9_and_deletes() {
    let mut s = setup(
        "gw-sync",
        "      synchronize:\n        coreThing: { classic: true, namedShadows: [cfg] }\n        direction: betweenDeviceAndCloud\n",
    );
    let thing = s.thing.clone();
    let t = thing.as_str();

    // Device → cloud: a reported change.
    local_update(
        &s.core,
        t,
        None,
        json!({"reported": {"temp": 20, "fw": "1.0"}}),
    );
    let doc = wait_for("reported in the cloud", Duration::from_secs(30), || {
        s.console
            .get(None)
            .filter(|d| d["state"]["reported"]["temp"] == 20)
    });
    assert_eq!(doc["state"]["reported"]["fw"], "1.0", "{doc}");

    // Cloud → device: a desired change shows as the local delta.
    s.console.update(None, json!({"desired": {"color": "red"}}));
    let got = wait_for("the delta on the device", Duration::from_secs(30), || {
        local(&s.core, t, None).filter(|d| d["state"]["delta"]["color"] == "red")
    });
    assert_eq!(got["state"]["reported"]["temp"], 20, "{got}");
    assert!(got["state"]["delta"].get("temp").is_none(), "{got}");

    // The sync state in the listing.
    let listed = wait_for("in sync", Duration::from_secs(30), || {
        let l = s.core.json(&["shadow", "list", t]);
        let classic = l["shadows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"].is_null())
            .cloned()
            .unwrap();
        // The cloud's change recorded too (version 2), not just the first sync.
        (classic["sync"]["pending"] == false
            && classic["sync"]["cloudVersion"].as_u64().unwrap_or(0) >= 2)
            .then_some(classic)
    });
    assert_eq!(
        listed["sync"]["direction"], "betweenDeviceAndCloud",
        "{listed}"
    );
    assert!(
        listed["sync"]["cloudVersion"].as_u64().unwrap() >= 2,
        "{listed}"
    );

    // Outage: both sides change the same fields and different ones.
    s.relay.cut();
    wait_for("the link down", Duration::from_secs(60), || {
        (!cloud_connected(&s.core)).then_some(())
    });
    s.console.update(
        None,
        json!({"desired": {"color": "blue", "fan": "on"}, "reported": {"temp": 99}}),
    );
    local_update(
        &s.core,
        t,
        None,
        json!({"desired": {"color": "green"}, "reported": {"temp": 25, "hum": 40}}),
    );
    // A named shadow made while apart, then kill -9 with its sync pending.
    local_update(
        &s.core,
        t,
        Some("cfg"),
        json!({"reported": {"mode": "eco"}}),
    );
    let pending = s.core.json(&["shadow", "list", t]);
    assert!(
        pending["shadows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "cfg" && e["sync"]["pending"] == true),
        "{pending}"
    );
    s.core.kill9();
    s.core.spawn();
    s.relay.restore();
    wait_for("reconnected", Duration::from_secs(90), || {
        cloud_connected(&s.core).then_some(())
    });

    // The documented merge: the cloud wins desired, the device wins reported.
    let expect_desired = json!({"color": "blue", "fan": "on"});
    let expect_reported = json!({"temp": 25, "hum": 40, "fw": "1.0"});
    let cloud_doc = wait_for("the merge in the cloud", Duration::from_secs(60), || {
        s.console
            .get(None)
            .filter(|d| d["state"]["reported"]["temp"] == 25)
    });
    assert_eq!(cloud_doc["state"]["desired"], expect_desired, "{cloud_doc}");
    assert_eq!(
        cloud_doc["state"]["reported"], expect_reported,
        "{cloud_doc}"
    );
    let local_doc = wait_for("the merge on the device", Duration::from_secs(30), || {
        local(&s.core, t, None).filter(|d| d["state"]["desired"]["color"] == "blue")
    });
    assert_eq!(local_doc["state"]["desired"], expect_desired, "{local_doc}");
    assert_eq!(
        local_doc["state"]["reported"], expect_reported,
        "{local_doc}"
    );
    assert_eq!(
        local_doc["state"]["delta"],
        json!({"color": "blue", "fan": "on"}),
        "{local_doc}"
    );
    // The named shadow pending at the kill -9 reached the cloud after the restart.
    let cfg = wait_for("the pending named shadow", Duration::from_secs(30), || {
        s.console.get(Some("cfg"))
    });
    assert_eq!(cfg["state"]["reported"], json!({"mode": "eco"}), "{cfg}");

    // Deletes: in the cloud → gone locally; locally → gone in the cloud.
    s.console.delete(Some("cfg"));
    wait_for(
        "the cloud's delete on the device",
        Duration::from_secs(30),
        || local(&s.core, t, Some("cfg")).is_none().then_some(()),
    );
    let deleted = s.core.json(&["shadow", "delete", t]);
    assert!(deleted["version"].as_u64().is_some(), "{deleted}");
    wait_for(
        "the device's delete in the cloud",
        Duration::from_secs(30),
        || s.console.get(None).is_none().then_some(()),
    );
    // And nothing comes back: the cloud stays without a classic shadow.
    std::thread::sleep(Duration::from_secs(2));
    assert!(s.console.get(None).is_none());
    assert!(local(&s.core, t, None).is_none());
    drop(s.core);
    s.cloud.stop();
}

#[test]
fn device_to_cloud_periodic_sends_local_changes_and_keeps_the_clouds_out() {
    let mut s = setup(
        "gw-d2c",
        "      strategy: { type: periodic, delay: 2 }\n      synchronize:\n        coreThing: { classic: true }\n        direction: deviceToCloud\n",
    );
    let t = s.thing.clone();
    let t = t.as_str();
    let started = Instant::now();
    local_update(&s.core, t, None, json!({"reported": {"v": 1}}));
    wait_for("the periodic sync", Duration::from_secs(30), || {
        s.console
            .get(None)
            .filter(|d| d["state"]["reported"]["v"] == 1)
    });
    // Periodic: nothing sooner than the next tick is promised, so only an upper bound.
    assert!(started.elapsed() < Duration::from_secs(30));
    // The cloud's change is not copied down; the next local change overwrites it there.
    s.console.update(None, json!({"desired": {"x": "cloud"}}));
    std::thread::sleep(Duration::from_secs(5));
    let l = local(&s.core, t, None).unwrap();
    assert!(l["state"].get("desired").is_none(), "{l}");
    local_update(&s.core, t, None, json!({"reported": {"v": 2}}));
    let doc = wait_for("the second sync", Duration::from_secs(30), || {
        s.console
            .get(None)
            .filter(|d| d["state"]["reported"]["v"] == 2)
    });
    assert!(
        doc["state"].get("desired").is_none(),
        "deviceToCloud: the device's document wins everything: {doc}"
    );
    drop(s.core);
    s.cloud.stop();
}

#[test]
fn cloud_to_device_copies_the_clouds_document_under_the_outbound_rate_limit() {
    let mut s = setup(
        "gw-c2d",
        "      rateLimits: { maxOutboundSyncUpdatesPerSecond: 2 }\n      synchronize:\n        coreThing: { classic: true, namedShadows: [a, b, c, d] }\n        direction: cloudToDevice\n",
    );
    let t = s.thing.clone();
    let t = t.as_str();
    s.console
        .update(None, json!({"desired": {"mode": "cloud"}}));
    wait_for(
        "the cloud's desired on the device",
        Duration::from_secs(30),
        || local(&s.core, t, None).filter(|d| d["state"]["desired"]["mode"] == "cloud"),
    );
    // Local changes stay local.
    local_update(&s.core, t, None, json!({"reported": {"local": true}}));
    std::thread::sleep(Duration::from_secs(3));
    let cloud = s.console.get(None).unwrap();
    assert!(
        cloud["state"].get("reported").is_none(),
        "cloudToDevice sent a local change up: {cloud}"
    );

    // While apart, the cloud changes five shadows; after the reconnect the full round's five
    // cloud reads go out at 2/s (a one-second burst of 2, then one every 0.5 s).
    s.relay.cut();
    wait_for("the link down", Duration::from_secs(60), || {
        (!cloud_connected(&s.core)).then_some(())
    });
    s.console
        .update(None, json!({"desired": {"mode": "later"}}));
    for n in ["a", "b", "c", "d"] {
        s.console.update(Some(n), json!({"desired": {"n": n}}));
    }
    s.relay.restore();
    wait_for("reconnected", Duration::from_secs(90), || {
        cloud_connected(&s.core).then_some(())
    });
    let reconnected = Instant::now();
    for n in ["a", "b", "c", "d"] {
        wait_for(
            "the named shadows on the device",
            Duration::from_secs(60),
            || local(&s.core, t, Some(n)).filter(|d| d["state"]["desired"]["n"] == n),
        );
    }
    wait_for(
        "the classic shadow on the device",
        Duration::from_secs(30),
        || local(&s.core, t, None).filter(|d| d["state"]["desired"]["mode"] == "later"),
    );
    let took = reconnected.elapsed();
    assert!(
        took >= Duration::from_millis(1200),
        "five cloud reads at 2/s took only {took:?}"
    );
    drop(s.core);
    s.cloud.stop();
}

#[test]
fn a_sync_the_cloud_refuses_is_kept_pending_with_its_error_until_it_can_be_synced() {
    // Locally up to 30 KiB; the cloud's shadow service keeps AWS IoT's 8 KiB.
    let mut s = setup(
        "gw-err",
        "      shadowDocumentSizeLimitBytes: 30720\n      synchronize:\n        coreThing: { classic: true }\n",
    );
    let t = s.thing.clone();
    let t = t.as_str();
    local_update(
        &s.core,
        t,
        None,
        json!({"reported": {"blob": "x".repeat(10_000)}}),
    );
    let entry = wait_for(
        "the sync error in the listing",
        Duration::from_secs(30),
        || {
            let l = s.core.json(&["shadow", "list", t]);
            l["shadows"][0]["sync"]["lastError"]
                .is_string()
                .then(|| l["shadows"][0].clone())
        },
    );
    assert_eq!(entry["sync"]["pending"], true, "{entry}");
    assert!(
        entry["sync"]["lastError"].as_str().unwrap().contains("413"),
        "{entry}"
    );
    let text = s.core.cli(&["shadow", "list", t]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("last error"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    assert!(s.console.get(None).is_none());
    // Made small again, it syncs, and the error is gone.
    local_update(&s.core, t, None, json!({"reported": {"blob": "small"}}));
    let doc = wait_for(
        "the small document in the cloud",
        Duration::from_secs(30),
        || s.console.get(None),
    );
    assert_eq!(doc["state"]["reported"], json!({"blob": "small"}), "{doc}");
    wait_for("in sync, no error", Duration::from_secs(30), || {
        let l = s.core.json(&["shadow", "list", t]);
        let sync = &l["shadows"][0]["sync"];
        (sync["pending"] == false && sync.get("lastError").is_none()).then_some(())
    });
    drop(s.core);
    s.cloud.stop();
}

/// A client device's shadow listed in `shadowDocuments` syncs through the core once the
/// device is associated with the core in the cloud (`lichen cloud core associate`, Greengrass
/// BatchAssociateClientDeviceWithCoreDevice): the cloud endpoint then lets the core use that
/// device's shadow topics, classic and named.
#[test]
fn a_client_devices_shadow_listed_in_shadow_documents_syncs_through_the_core() {
    let device_dir = tempfile::tempdir().unwrap();
    let mut s = setup_with(
        "gw-docs",
        "      synchronize:\n        coreThing: { classic: false }\n        shadowDocuments:\n          - { thingName: sensor-9, classic: true, namedShadows: [cfg] }\n",
        |cloud| {
            // The client device's own identity in the cloud, for its cloud-side view.
            cloud.json(&[
                "thing",
                "create",
                "sensor-9",
                "--out",
                device_dir.path().to_str().unwrap(),
            ]);
            let r = cloud.json(&["core", "associate", "gw-docs", "sensor-9"]);
            assert_eq!(r["errorEntries"], json!([]), "{r}");
            let l = cloud.json(&["core", "associated", "gw-docs"]);
            assert_eq!(
                l["associatedClientDevices"][0]["thingName"], "sensor-9",
                "{l}"
            );
        },
    );
    let endpoint = s.cloud.ready["iotDataEndpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let port = endpoint.rsplit(':').next().unwrap();
    let mut device_cloud =
        Console::connect(&format!("127.0.0.1:{port}"), device_dir.path(), "sensor-9");

    local_update(&s.core, "sensor-9", None, json!({"reported": {"lux": 300}}));
    let deadline = Instant::now() + Duration::from_secs(30);
    let doc = loop {
        if let Some(d) = device_cloud
            .get(None)
            .filter(|d| d["state"]["reported"]["lux"] == 300)
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the device's shadow never reached the cloud: {}",
            s.core.json(&["shadow", "list", "sensor-9"])
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(doc["version"].as_u64().is_some(), "{doc}");
    device_cloud.update(Some("cfg"), json!({"desired": {"rate": 5}}));
    wait_for(
        "the cloud's desired on the core",
        Duration::from_secs(30),
        || local(&s.core, "sensor-9", Some("cfg")).filter(|d| d["state"]["delta"]["rate"] == 5),
    );
    // The core's own classic shadow is not synced (classic: false).
    local_update(
        &s.core,
        &s.thing.clone(),
        None,
        json!({"reported": {"x": 1}}),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        s.console.get(None).is_none(),
        "the core's classic shadow was synced"
    );
    drop(s.core);
    s.cloud.stop();
}

/// Not associated, the client device's shadow is refused by the cloud endpoint: the core
/// keeps it pending with NotAuthorized as its last error, and the cloud has no document.
/// Associated while the core is connected, it syncs; disassociated, it is refused again.
#[test]
fn a_client_device_not_associated_with_the_core_stays_pending_not_authorized() {
    let device_dir = tempfile::tempdir().unwrap();
    let s = setup_with(
        "gw-noassoc",
        "      synchronize:\n        coreThing: { classic: false }\n        shadowDocuments:\n          - { thingName: sensor-7, classic: true }\n",
        |cloud| {
            cloud.json(&[
                "thing",
                "create",
                "sensor-7",
                "--out",
                device_dir.path().to_str().unwrap(),
            ]);
            let l = cloud.json(&["core", "associated", "gw-noassoc"]);
            assert_eq!(l["associatedClientDevices"], json!([]), "{l}");
            let out = cloud.cli(&["core", "associated", "gw-noassoc"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("No client devices"), "{text}");
            // An unknown thing is named with its error, and the command fails.
            let out = cloud.cli(&["core", "associate", "gw-noassoc", "ghost"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "{text}");
            assert!(
                text.contains("ghost") && text.contains("ResourceNotFoundException"),
                "{text}"
            );
        },
    );
    local_update(&s.core, "sensor-7", None, json!({"reported": {"lux": 1}}));
    let entry = wait_for(
        "the NotAuthorized sync error in the listing",
        Duration::from_secs(60),
        || {
            let l = s.core.json(&["shadow", "list", "sensor-7"]);
            l["shadows"][0]["sync"]["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("NotAuthorized"))
                .then(|| l["shadows"][0].clone())
        },
    );
    assert_eq!(entry["sync"]["pending"], true, "{entry}");
    let endpoint = s.cloud.ready["iotDataEndpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let port = endpoint.rsplit(':').next().unwrap();
    let mut device_cloud =
        Console::connect(&format!("127.0.0.1:{port}"), device_dir.path(), "sensor-7");
    assert!(
        device_cloud.get(None).is_none(),
        "the refused shadow reached the cloud"
    );
    // Associated while the core stays connected: the endpoint re-reads the core's client
    // devices, the core's next try subscribes and syncs (a local change wakes it at once).
    let r = s
        .cloud
        .json(&["core", "associate", "gw-noassoc", "sensor-7"]);
    assert_eq!(r["errorEntries"], json!([]), "{r}");
    local_update(&s.core, "sensor-7", None, json!({"reported": {"lux": 2}}));
    wait_for(
        "the shadow in the cloud after the association",
        Duration::from_secs(60),
        || {
            device_cloud
                .get(None)
                .filter(|d| d["state"]["reported"]["lux"] == 2)
        },
    );
    wait_for("in sync, no error", Duration::from_secs(30), || {
        let l = s.core.json(&["shadow", "list", "sensor-7"]);
        let sync = &l["shadows"][0]["sync"];
        (sync["pending"] == false && sync.get("lastError").is_none()).then_some(())
    });
    // Disassociated: the core's next change is refused again.
    s.cloud
        .json(&["core", "disassociate", "gw-noassoc", "sensor-7"]);
    local_update(&s.core, "sensor-7", None, json!({"reported": {"lux": 3}}));
    wait_for("NotAuthorized again", Duration::from_secs(60), || {
        let l = s.core.json(&["shadow", "list", "sensor-7"]);
        l["shadows"][0]["sync"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("NotAuthorized"))
            .then_some(())
    });
    assert_eq!(
        device_cloud.get(None).unwrap()["state"]["reported"]["lux"],
        2,
        "the change after the disassociation reached the cloud"
    );
    drop(s.core);
    s.cloud.stop();
}

impl Console {
    /// Waits for the cloud's `update/accepted` carrying `reported.seq == seq` (whoever sent it).
    fn wait_reported_seq(&mut self, seq: u64) -> Option<Instant> {
        let topic = format!("$aws/things/{}/shadow/update/accepted", self.thing);
        let incoming = &mut self.incoming;
        self.rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let p = incoming.recv_timeout(left).await?;
                if *p.topic != topic {
                    continue;
                }
                let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                if v["state"]["reported"]["seq"] == seq {
                    return Some(Instant::now());
                }
            }
        })
    }
}

/// The sync latency benchmark (issue 13): from a local update's commit (`lichen shadow
/// update` returned) to the cloud's `update/accepted` of the synced document, one update at
/// a time. `cargo test -p lichen --test shadow_sync -- --ignored --nocapture`.
#[test]
#[ignore]
fn sync_latency_from_a_local_update_to_the_clouds_accepted_document() {
    let n: u64 = std::env::var("SYNC_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut s = setup(
        "gw-bench",
        "      rateLimits: { maxLocalRequestsPerSecondPerThing: 1000, maxTotalLocalRequestsRate: 1000 }\n      synchronize:\n        coreThing: { classic: true }\n",
    );
    let t = s.thing.clone();
    let mut lat = Vec::new();
    for seq in 0..n {
        local_update(&s.core, &t, None, json!({"reported": {"seq": seq}}));
        let committed = Instant::now();
        let seen = s
            .console
            .wait_reported_seq(seq)
            .unwrap_or_else(|| panic!("seq {seq} never reached the cloud: {}", s.core.stderr()));
        lat.push(seen.duration_since(committed));
    }
    lat.sort();
    let ms = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "sync latency over {n} updates: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    drop(s.core);
    s.cloud.stop();
}
