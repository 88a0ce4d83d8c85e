//! Client devices of core devices: idempotent association, error entries, paging, the bound
//! per core, disassociation, and the cascade with either thing.

use lichen_cloud_store::*;

use crate::assert_err;
use crate::fixtures::thing;

fn names(list: &[ClientDeviceAssociation]) -> Vec<&str> {
    list.iter().map(|a| a.thing_name.as_str()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

pub(crate) async fn client_device_associations<B: Backend + Clone + 'static>(store: &B) {
    let t1 = "2026-12-04T00:00:00.000Z";
    let t2 = "2026-12-04T01:00:00.000Z";
    for n in ["core-a", "core-b", "dev-1", "dev-2", "dev-3"] {
        store.create_thing(&thing(n)).await.unwrap();
    }
    let errors = store
        .associate_client_devices(
            "core-a",
            &strings(&["dev-2", "dev-1", "ghost", "core-a"]),
            t1,
        )
        .await
        .unwrap();
    let codes: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.thing_name.as_str(), e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            ("ghost", "ResourceNotFoundException"),
            ("core-a", "ValidationException")
        ]
    );
    // Again, later: no error, the first time is kept.
    assert!(
        store
            .associate_client_devices("core-a", &strings(&["dev-1"]), t2)
            .await
            .unwrap()
            .is_empty()
    );
    let list = store
        .list_client_devices("core-a", &Page::first(0))
        .await
        .unwrap();
    assert_eq!(names(&list), ["dev-1", "dev-2"]);
    assert!(
        list.iter().all(|a| a.association_timestamp == t1),
        "{list:?}"
    );
    // Another core's list is its own.
    assert!(
        store
            .list_client_devices("core-b", &Page::first(0))
            .await
            .unwrap()
            .is_empty()
    );
    // Paging by name.
    let first = store
        .list_client_devices("core-a", &Page::first(1))
        .await
        .unwrap();
    assert_eq!(names(&first), ["dev-1"]);
    let rest = store
        .list_client_devices(
            "core-a",
            &Page {
                after: Some("dev-1".into()),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(names(&rest), ["dev-2"]);
    // Unknown core; a batch over the bound.
    assert_err!(
        store
            .associate_client_devices("nope", &strings(&["dev-1"]), t1)
            .await,
        StoreError::NotFound { kind: "thing", .. }
    );
    assert_err!(
        store.list_client_devices("nope", &Page::first(0)).await,
        StoreError::NotFound { kind: "thing", .. }
    );
    let too_many: Vec<String> = (0..=MAX_ASSOCIATION_BATCH)
        .map(|i| format!("d{i}"))
        .collect();
    assert_err!(
        store
            .associate_client_devices("core-a", &too_many, t1)
            .await,
        StoreError::Invalid {
            field: "entries",
            ..
        }
    );
    // Disassociate: one associated, one not (no error).
    assert!(
        store
            .disassociate_client_devices("core-a", &strings(&["dev-2", "dev-3"]))
            .await
            .unwrap()
            .is_empty()
    );
    let list = store
        .list_client_devices("core-a", &Page::first(0))
        .await
        .unwrap();
    assert_eq!(names(&list), ["dev-1"]);
    // Deleting the device or the core removes the association.
    store
        .associate_client_devices("core-b", &strings(&["dev-1", "dev-3"]), t1)
        .await
        .unwrap();
    store.delete_thing("dev-1").await.unwrap();
    assert!(
        store
            .list_client_devices("core-a", &Page::first(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        names(
            &store
                .list_client_devices("core-b", &Page::first(0))
                .await
                .unwrap()
        ),
        ["dev-3"]
    );
    store.delete_thing("core-b").await.unwrap();
    store.create_thing(&thing("core-b")).await.unwrap();
    assert!(
        store
            .list_client_devices("core-b", &Page::first(0))
            .await
            .unwrap()
            .is_empty(),
        "a re-created core starts with no client devices"
    );
}

/// The per-core bound: the device past it comes back as an error entry.
pub(crate) async fn client_devices_per_core_are_bounded<B: Backend + Clone + 'static>(store: &B) {
    let at = "2026-12-04T00:00:00.000Z";
    store.create_thing(&thing("core")).await.unwrap();
    let devices: Vec<String> = (0..=MAX_CLIENT_DEVICES_PER_CORE)
        .map(|i| format!("d{i:04}"))
        .collect();
    for d in &devices {
        store.create_thing(&thing(d)).await.unwrap();
    }
    let mut errors = Vec::new();
    for chunk in devices.chunks(MAX_ASSOCIATION_BATCH) {
        errors.extend(
            store
                .associate_client_devices("core", chunk, at)
                .await
                .unwrap(),
        );
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].thing_name, devices[MAX_CLIENT_DEVICES_PER_CORE]);
    assert_eq!(errors[0].code, "ServiceQuotaExceededException");
    // One already associated is no error at the bound.
    assert!(
        store
            .associate_client_devices("core", &devices[..1], at)
            .await
            .unwrap()
            .is_empty()
    );
}
