//! An artifact stored just before a crash, with no version saved, is swept when the cloud
//! starts again (`lichen cloud run`'s composition): content no version refers to, older than
//! the grace period. Referenced content and young content (a publish in flight on another
//! node) stay. Both backends.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::Backend;
use lichen_cloud_store::{
    ArtifactStore, Backend as _, ComponentVersion, FsArtifactStore, Store, StoredArtifact,
};

fn age(path: &Path, by: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

async fn swept_at_restart(backend: Backend) {
    let Ok(url) = common::database_url(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), url);
    config.mqtt_listen = "127.0.0.1:0".parse().unwrap();
    // The state a crash leaves: content stored, and only one of the two versions saved.
    let (referenced, orphan, young) = {
        std::fs::create_dir_all(dir.path()).unwrap();
        let store = Store::open(dir.path(), config.database_url.as_deref())
            .await
            .unwrap();
        let blobs = FsArtifactStore::new(dir.path()).unwrap();
        let put = |bytes: &'static [u8]| {
            let blobs = &blobs;
            async move { blobs.put(bytes, None, 1 << 20).await.unwrap().sha256 }
        };
        let referenced = put(b"kept: a version refers to it").await;
        let orphan = put(b"stored, then the process died").await;
        let young = put(b"a publish in flight elsewhere").await;
        store
            .create_component_version(&ComponentVersion {
                name: "com.example.Kept".into(),
                version: "1.0.0".into(),
                recipe: serde_json::json!({"ComponentName": "com.example.Kept"}),
                artifacts: vec![StoredArtifact {
                    uri: "s3://b/kept".into(),
                    sha256: referenced.clone(),
                    size: 28,
                }],
                created_at: "2026-12-01T00:00:00.000Z".into(),
            })
            .await
            .unwrap();
        for sha in [&referenced, &orphan] {
            age(&blobs.path_of(sha).unwrap(), Duration::from_secs(3 * 3600));
        }
        (referenced, orphan, young)
    };
    let path = |sha: &str| dir.path().join("artifacts").join(&sha[..2]).join(sha);
    assert!(path(&orphan).exists());

    let handle = lichen_cloud::compose::start_cloud(&config).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if !path(&orphan).exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the orphaned artifact is swept at start");
    assert!(path(&referenced).exists(), "referenced content stays");
    assert!(
        path(&young).exists(),
        "content younger than the grace period stays"
    );
    handle.shutdown().await;
}

mod swept {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::swept_at_restart(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::swept_at_restart(super::Backend::Postgres).await
    }
}
