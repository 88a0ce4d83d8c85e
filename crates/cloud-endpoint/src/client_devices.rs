//! The client devices associated with each connected core (Greengrass
//! BatchAssociateClientDeviceWithCoreDevice), which the authorizer consults for other
//! things' shadow topics.
//!
//! A thing's list is read from the store when it connects, and read again when the API
//! changes its associations ([`crate::EndpointHandle::client_devices_changed`]): a
//! connection sees the change at its next action, on this endpoint node. Another node
//! (several nodes over one PostgreSQL) sees it at the thing's next connect. Every
//! connection of one thing shares one list; the registry holds it weakly, so it lives as
//! long as the thing's connections do.
//!
//! Reads race: a connect may read the store just before a change commits and finish after
//! the change's own re-read. Each read takes a ticket before it starts, and a list read
//! with an older ticket never replaces one read with a newer ticket, so the last committed
//! state wins.
//!
//! Bounds: a list holds at most [`lichen_cloud_store::MAX_CLIENT_DEVICES_PER_CORE`] names
//! (the store's bound); the registry holds one entry per connected thing, dead entries
//! pruned whenever it has doubled since the last pruning.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use lichen_cloud_store::{Backend, MAX_CLIENT_DEVICES_PER_CORE, Page, StoreError};

// One page holds a core's whole list.
const _: () = assert!(MAX_CLIENT_DEVICES_PER_CORE <= lichen_cloud_store::MAX_PAGE as usize);

/// One thing's client devices, as its connections see them.
#[derive(Debug, Default)]
pub struct ClientDevices {
    /// (ticket of the read that produced it, the names).
    current: RwLock<(u64, Arc<HashSet<String>>)>,
}

impl ClientDevices {
    /// A list that never changes (tests, and things with no registry).
    pub fn fixed(names: impl IntoIterator<Item = String>) -> ClientDevices {
        ClientDevices {
            current: RwLock::new((0, Arc::new(names.into_iter().collect()))),
        }
    }

    pub fn contains(&self, thing: &str) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .contains(thing)
    }

    fn replace(&self, ticket: u64, names: HashSet<String>) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if ticket >= current.0 {
            *current = (ticket, Arc::new(names));
        }
    }
}

#[derive(Default)]
pub struct Registry {
    tickets: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_thing: HashMap<String, Weak<ClientDevices>>,
    prune_at: usize,
}

impl Registry {
    /// The list a new connection of `thing` uses, read from the store now.
    pub async fn attach<B: Backend>(
        &self,
        store: &B,
        thing: &str,
    ) -> Result<Arc<ClientDevices>, StoreError> {
        let ticket = self.ticket();
        let names = read(store, thing).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let list = match entries.by_thing.get(thing).and_then(Weak::upgrade) {
            Some(list) => list,
            None => {
                let list = Arc::new(ClientDevices::default());
                entries
                    .by_thing
                    .insert(thing.to_string(), Arc::downgrade(&list));
                if entries.by_thing.len() > entries.prune_at {
                    entries.by_thing.retain(|_, w| w.strong_count() > 0);
                    entries.prune_at = (entries.by_thing.len() * 2).max(64);
                }
                list
            }
        };
        list.replace(ticket, names);
        Ok(list)
    }

    /// Reads `thing`'s list again for its live connections (none: nothing to do). When
    /// `thing` no longer exists, it is also taken out of every connected core's list (its
    /// associations were deleted with it).
    pub async fn refresh<B: Backend>(&self, store: &B, thing: &str) -> Result<(), StoreError> {
        let ticket = self.ticket();
        let names = match read(store, thing).await {
            Ok(names) => names,
            Err(StoreError::NotFound { .. }) => {
                self.forget(thing);
                HashSet::new()
            }
            Err(e) => return Err(e),
        };
        let live = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.by_thing.get(thing).and_then(Weak::upgrade)
        };
        if let Some(list) = live {
            list.replace(ticket, names);
        }
        Ok(())
    }

    /// Takes a deleted thing out of every live list (one pass over the connected things).
    fn forget(&self, thing: &str) {
        let lists: Vec<Arc<ClientDevices>> = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .by_thing
                .values()
                .filter_map(Weak::upgrade)
                .collect()
        };
        for list in lists {
            let mut current = list.current.write().unwrap_or_else(|p| p.into_inner());
            if current.1.contains(thing) {
                let mut names = (*current.1).clone();
                names.remove(thing);
                current.1 = Arc::new(names);
            }
        }
    }

    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The store's list (one page: the bound per core is one page).
async fn read<B: Backend>(store: &B, thing: &str) -> Result<HashSet<String>, StoreError> {
    let page = Page::first(MAX_CLIENT_DEVICES_PER_CORE as u32);
    Ok(store
        .list_client_devices(thing, &page)
        .await?
        .into_iter()
        .map(|a| a.thing_name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lichen_cloud_store::{NewThing, Store};

    fn thing(name: &str) -> NewThing {
        NewThing {
            name: name.into(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn an_older_read_never_replaces_a_newer_one() {
        let list = ClientDevices::default();
        list.replace(5, HashSet::from(["new".to_string()]));
        list.replace(4, HashSet::from(["stale".to_string()]));
        assert!(list.contains("new") && !list.contains("stale"));
    }

    #[tokio::test]
    async fn changes_and_deletes_reach_the_live_lists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        for n in ["gw", "gw2", "dev"] {
            store.create_thing(&thing(n)).await.unwrap();
        }
        let at = "2026-12-04T00:00:00.000Z";
        let dev = vec!["dev".to_string()];
        store
            .associate_client_devices("gw", &dev, at)
            .await
            .unwrap();
        store
            .associate_client_devices("gw2", &dev, at)
            .await
            .unwrap();
        let registry = Registry::default();
        let a = registry.attach(&store, "gw").await.unwrap();
        let b = registry.attach(&store, "gw").await.unwrap();
        let other = registry.attach(&store, "gw2").await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one list per thing");
        assert!(a.contains("dev"));
        store.disassociate_client_devices("gw", &dev).await.unwrap();
        registry.refresh(&store, "gw").await.unwrap();
        assert!(!b.contains("dev"), "withdrawn at once");
        assert!(other.contains("dev"), "another core's list is its own");
        store.delete_thing("dev").await.unwrap();
        registry.refresh(&store, "dev").await.unwrap();
        assert!(!other.contains("dev"), "a deleted device leaves every list");
        drop((a, b, other));
        registry.refresh(&store, "gw").await.unwrap(); // no live connection: nothing to do
    }
}
