//! The filesystem artifact store: content addressing, digest and size checks, crash-safe
//! placement, reads and removal.

use lichen_cloud_store::{ArtifactStore, FsArtifactStore, StoreError};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn temp_files(store: &FsArtifactStore) -> usize {
    std::fs::read_dir(store.root().join("tmp")).unwrap().count()
}

#[tokio::test]
async fn stores_by_digest_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsArtifactStore::new(dir.path()).unwrap();
    // Larger than one read chunk, so the digest is computed across chunks.
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let info = store.put(&content[..], None, 1 << 20).await.unwrap();
    assert_eq!(info.sha256, digest(&content));
    assert_eq!(info.size, content.len() as u64);
    let path = dir
        .path()
        .join("artifacts")
        .join(&info.sha256[..2])
        .join(&info.sha256);
    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(store.path_of(&info.sha256).unwrap(), path);

    let mut opened = store.open(&info.sha256).await.unwrap();
    assert_eq!(opened.size, content.len() as u64);
    let mut read = Vec::new();
    opened.reader.read_to_end(&mut read).await.unwrap();
    assert_eq!(read, content);
    assert_eq!(
        store.size(&info.sha256).await.unwrap(),
        Some(content.len() as u64)
    );

    // The same content again, with its expected digest: not an error, still one file.
    let again = store
        .put(&content[..], Some(&info.sha256), 1 << 20)
        .await
        .unwrap();
    assert_eq!(again, info);
    assert_eq!(temp_files(&store), 0);

    assert!(store.remove(&info.sha256).await.unwrap());
    assert!(!store.remove(&info.sha256).await.unwrap());
    assert!(!path.exists());
    match store.open(&info.sha256).await {
        Err(StoreError::NotFound {
            kind: "artifact", ..
        }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(store.size(&info.sha256).await.unwrap(), None);
}

#[tokio::test]
async fn refuses_a_wrong_digest_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsArtifactStore::new(dir.path()).unwrap();
    let wrong = digest(b"something else");
    match store.put(&b"the content"[..], Some(&wrong), 1024).await {
        Err(StoreError::Invalid {
            field: "sha256",
            message,
        }) => {
            assert!(message.contains(&digest(b"the content")), "{message}");
        }
        other => panic!("expected Invalid sha256, got {other:?}"),
    }
    assert_eq!(temp_files(&store), 0);
    assert_eq!(store.size(&digest(b"the content")).await.unwrap(), None);
}

#[tokio::test]
async fn refuses_more_than_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsArtifactStore::new(dir.path()).unwrap();
    let content = vec![7u8; 10_001];
    match store.put(&content[..], None, 10_000).await {
        Err(StoreError::Invalid {
            field: "artifact",
            message,
        }) => {
            assert!(message.contains("10000"), "{message}");
        }
        other => panic!("expected Invalid artifact, got {other:?}"),
    }
    assert_eq!(temp_files(&store), 0);
    assert_eq!(store.size(&digest(&content)).await.unwrap(), None);
    // Exactly at the limit is fine.
    store.put(&content[..10_000], None, 10_000).await.unwrap();
}

#[tokio::test]
async fn refuses_digests_that_are_not_lowercase_hex() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsArtifactStore::new(dir.path()).unwrap();
    for bad in [
        "../../etc/passwd",
        "ABCDEF",
        &"A".repeat(64),
        &"a".repeat(63),
    ] {
        match store.open(bad).await {
            Err(StoreError::Invalid {
                field: "sha256", ..
            }) => {}
            other => panic!("{bad:?}: expected Invalid, got {other:?}"),
        }
        assert!(store.remove(bad).await.is_err());
        assert!(store.put(&b"x"[..], Some(bad), 10).await.is_err());
    }
}

#[tokio::test]
async fn a_stale_upload_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsArtifactStore::new(dir.path()).unwrap();
    let stale = store.root().join("tmp").join("123-dead");
    let fresh = store.root().join("tmp").join("456-live");
    std::fs::write(&stale, b"partial").unwrap();
    std::fs::write(&fresh, b"in progress").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    drop(FsArtifactStore::new(dir.path()).unwrap());
    assert!(!stale.exists(), "a crashed writer's file is cleaned up");
    assert!(fresh.exists(), "a live writer's file is left alone");
}
