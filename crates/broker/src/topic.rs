//! Subscription tree: topic filters stored level by level, so a PUBLISH is matched in time
//! proportional to its depth rather than to the number of subscriptions. The rules
//! themselves are `lichen_mqtt::topic`; this tree follows them (MQTT §4.7):
//! `+` one level, `#` the rest including the parent, and topics starting with `$` are not
//! matched by a wildcard in the first level.

use std::collections::HashMap;
use std::sync::Arc;

use lichen_mqtt::SubscriptionOptions;

use crate::session::Session;

/// A subscription as the router sees it.
#[derive(Clone)]
pub struct SubEntry {
    pub session: Arc<Session>,
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
    /// Share name of a `$share/{name}/{filter}` subscription.
    pub share: Option<Arc<str>>,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    hash: Vec<SubEntry>,
    here: Vec<SubEntry>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
    }
}

fn same(a: &SubEntry, session: &Arc<Session>, share: Option<&str>) -> bool {
    Arc::ptr_eq(&a.session, session) && a.share.as_deref() == share
}

/// Splits `$share/{name}/{filter}` into `(Some(name), filter)`; other filters into `(None, f)`.
/// `Err` for a malformed shared subscription. The rule is `lichen_mqtt::topic::split_shared`.
pub fn split_shared(filter: &str) -> Result<(Option<&str>, &str), ()> {
    lichen_mqtt::topic::split_shared(filter).map_err(|_| ())
}

#[derive(Default)]
pub struct SubTree {
    root: Node,
    len: usize,
}

impl SubTree {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces the subscription of `entry.session` (and share group) to `filter`
    /// (without any `$share/` prefix). Returns true if it replaced one.
    pub fn insert(&mut self, filter: &str, entry: SubEntry) -> bool {
        let mut node = &mut self.root;
        let levels: Vec<&str> = filter.split('/').collect();
        let last = levels.len() - 1;
        for (i, level) in levels.iter().enumerate() {
            if *level == "#" && i == last {
                return Self::put(&mut node.hash, entry, &mut self.len);
            }
            node = if *level == "+" {
                node.plus.get_or_insert_with(Default::default)
            } else {
                node.children.entry(Box::from(*level)).or_default()
            };
        }
        Self::put(&mut node.here, entry, &mut self.len)
    }

    fn put(list: &mut Vec<SubEntry>, entry: SubEntry, len: &mut usize) -> bool {
        if let Some(e) = list
            .iter_mut()
            .find(|e| same(e, &entry.session, entry.share.as_deref()))
        {
            *e = entry;
            true
        } else {
            list.push(entry);
            *len += 1;
            false
        }
    }

    /// Removes a subscription; true if it existed.
    pub fn remove(&mut self, filter: &str, session: &Arc<Session>, share: Option<&str>) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = Self::remove_in(&mut self.root, &levels, session, share);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_in(
        node: &mut Node,
        levels: &[&str],
        session: &Arc<Session>,
        share: Option<&str>,
    ) -> bool {
        let take = |list: &mut Vec<SubEntry>| {
            let before = list.len();
            list.retain(|e| !same(e, session, share));
            before != list.len()
        };
        match levels {
            [] => take(&mut node.here),
            ["#"] => take(&mut node.hash),
            [first, rest @ ..] => {
                if *first == "+" {
                    let Some(child) = node.plus.as_mut() else {
                        return false;
                    };
                    let r = Self::remove_in(child, rest, session, share);
                    if child.is_empty() {
                        node.plus = None;
                    }
                    r
                } else {
                    let Some(child) = node.children.get_mut(*first) else {
                        return false;
                    };
                    let r = Self::remove_in(child, rest, session, share);
                    if child.is_empty() {
                        node.children.remove(*first);
                    }
                    r
                }
            }
        }
    }

    /// Appends every subscription matching `topic` to `out`.
    pub fn matches<'a>(&'a self, topic: &str, out: &mut Vec<&'a SubEntry>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, &levels, 0, dollar, out);
    }

    fn walk<'a>(
        node: &'a Node,
        levels: &[&str],
        i: usize,
        dollar: bool,
        out: &mut Vec<&'a SubEntry>,
    ) {
        let wildcard_ok = !(i == 0 && dollar);
        if wildcard_ok {
            out.extend(node.hash.iter());
        }
        let Some(level) = levels.get(i) else {
            out.extend(node.here.iter());
            return;
        };
        if wildcard_ok && let Some(p) = &node.plus {
            Self::walk(p, levels, i + 1, dollar, out);
        }
        if let Some(c) = node.children.get(*level) {
            Self::walk(c, levels, i + 1, dollar, out);
        }
    }

    /// Drops every subscription of `session`.
    pub fn remove_session(&mut self, session: &Arc<Session>) {
        fn sweep(node: &mut Node, session: &Arc<Session>, len: &mut usize) {
            for list in [&mut node.here, &mut node.hash] {
                let before = list.len();
                list.retain(|e| !Arc::ptr_eq(&e.session, session));
                *len -= before - list.len();
            }
            if let Some(p) = node.plus.as_mut() {
                sweep(p, session, len);
                if p.is_empty() {
                    node.plus = None;
                }
            }
            node.children.retain(|_, c| {
                sweep(c, session, len);
                !c.is_empty()
            });
        }
        sweep(&mut self.root, session, &mut self.len);
    }
}
