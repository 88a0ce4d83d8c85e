//! The local publish/subscribe bus.
//!
//! Every local producer and consumer of messages attaches here: IPC components (PublishToTopic /
//! SubscribeToTopic), the MQTT broker's bridge and, later, the cloud link. Fan-out is in process.
//!
//! Bounds and overflow policy: each subscription owns a queue of at most `queue_capacity`
//! messages (default [`DEFAULT_QUEUE_CAPACITY`]). When a publisher finds the queue full, the
//! **oldest** queued message is dropped and the subscription's drop counter is incremented.
//! A publisher therefore never waits for a subscriber: a stuck subscriber loses its own
//! backlog and delays nobody else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::Notify;

// The topic rules are MQTT's (`lichen_mqtt::topic`); IPC topics on the bus follow them
// unchanged. Re-exported so attachments keep one import.
pub use lichen_mqtt::topic::{
    MAX_TOPIC_LEN, TopicError, topic_matches, validate_topic_filter, validate_topic_name,
};

/// Default per-subscription queue bound, in messages.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// What a message carries. JSON documents and raw bytes are kept apart so that an IPC
/// subscriber receives exactly the form the publisher sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(serde_json::Value),
    Binary(Bytes),
}

impl Payload {
    /// The payload as bytes, for consumers (MQTT) that only carry bytes.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Payload::Json(v) => Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            Payload::Binary(b) => b.clone(),
        }
    }
}

/// A message on the bus. Cloning is cheap for binary payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Payload,
    /// Who published it, e.g. `component:com.example.Foo`, `mqtt:sensor-1`, `bridge`.
    /// Subscribers use it to skip their own messages and the bridge uses it to avoid loops.
    pub origin: Arc<str>,
}

impl Message {
    pub fn new(topic: impl Into<Arc<str>>, payload: Payload, origin: impl Into<Arc<str>>) -> Self {
        Message {
            topic: topic.into(),
            payload,
            origin: origin.into(),
        }
    }
}

/// How a subscription is made.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// MQTT-style filter.
    pub filter: String,
    /// Identity of the subscriber, compared with [`Message::origin`] when `no_local` is set.
    pub subscriber: Arc<str>,
    /// Skip messages whose origin equals `subscriber` (IPC `RECEIVE_MESSAGES_FROM_OTHERS`).
    pub no_local: bool,
    /// Queue bound in messages; 0 means [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
}

impl SubscribeOptions {
    pub fn new(filter: impl Into<String>, subscriber: impl Into<Arc<str>>) -> Self {
        SubscribeOptions {
            filter: filter.into(),
            subscriber: subscriber.into(),
            no_local: false,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

struct Queue {
    items: Mutex<VecDeque<Message>>,
    capacity: usize,
    notify: Notify,
    dropped: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

struct Entry {
    id: u64,
    options: SubscribeOptions,
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Inner {
    subscribers: RwLock<Vec<Arc<Entry>>>,
    next_id: AtomicU64,
    published: AtomicU64,
}

/// Cheap to clone handle to the bus.
#[derive(Clone, Default)]
pub struct Bus {
    inner: Arc<Inner>,
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub subscriptions: usize,
    pub published: u64,
}

impl Bus {
    pub fn new() -> Self {
        Bus::default()
    }

    /// Registers a subscription. The filter must be valid.
    pub fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, TopicError> {
        validate_topic_filter(&options.filter)?;
        let capacity = if options.queue_capacity == 0 {
            DEFAULT_QUEUE_CAPACITY
        } else {
            options.queue_capacity
        };
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity,
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            closed: Default::default(),
        });
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            options,
            queue: queue.clone(),
        });
        self.write_subscribers().push(entry);
        Ok(Subscription {
            id,
            queue,
            bus: Arc::downgrade(&self.inner),
        })
    }

    /// Publishes to every matching subscription and returns how many queued it.
    /// Never waits on a subscriber.
    pub fn publish(&self, message: Message) -> Result<usize, TopicError> {
        validate_topic_name(&message.topic)?;
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        let subscribers = self
            .inner
            .subscribers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut delivered = 0;
        for entry in subscribers.iter() {
            if entry.options.no_local && entry.options.subscriber == message.origin {
                continue;
            }
            if !topic_matches(&entry.options.filter, &message.topic) {
                continue;
            }
            entry.queue.push(message.clone());
            delivered += 1;
        }
        Ok(delivered)
    }

    pub fn stats(&self) -> BusStats {
        BusStats {
            subscriptions: self
                .inner
                .subscribers
                .read()
                .map(|s| s.len())
                .unwrap_or_default(),
            published: self.inner.published.load(Ordering::Relaxed),
        }
    }

    fn write_subscribers(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Entry>>> {
        self.inner
            .subscribers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Queue {
    fn push(&self, message: Message) {
        {
            let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
            if items.len() >= self.capacity {
                items.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            items.push_back(message);
        }
        self.notify.notify_one();
    }
}

/// A live subscription. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    queue: Arc<Queue>,
    bus: std::sync::Weak<Inner>,
}

impl Subscription {
    /// Waits for the next message. Returns `None` once the subscription is closed.
    pub async fn recv(&self) -> Option<Message> {
        loop {
            if let Some(m) = self.try_recv() {
                return Some(m);
            }
            if self.queue.closed.load(Ordering::Acquire) {
                return None;
            }
            self.queue.notify.notified().await;
        }
    }

    /// Takes the next queued message without waiting.
    pub fn try_recv(&self) -> Option<Message> {
        self.queue
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Drains up to `max` queued messages into `out` without waiting; returns how many.
    pub fn drain_into(&self, out: &mut Vec<Message>, max: usize) -> usize {
        let mut items = self.queue.items.lock().unwrap_or_else(|p| p.into_inner());
        let n = items.len().min(max);
        out.extend(items.drain(..n));
        n
    }

    /// Messages dropped because the queue was full (oldest first).
    pub fn dropped(&self) -> u64 {
        self.queue.dropped.load(Ordering::Relaxed)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Wakes a pending `recv` and makes it return `None`.
    pub fn close(&self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.notify.notify_one();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.bus.upgrade() {
            let mut subs = inner
                .subscribers
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            subs.retain(|e| e.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, n: u8, origin: &str) -> Message {
        Message::new(topic, Payload::Binary(Bytes::from(vec![n])), origin)
    }

    #[tokio::test]
    async fn fan_out_to_matching_subscribers_only() {
        let bus = Bus::new();
        let a = bus.subscribe(SubscribeOptions::new("a/+", "s1")).unwrap();
        let b = bus.subscribe(SubscribeOptions::new("#", "s2")).unwrap();
        let c = bus.subscribe(SubscribeOptions::new("b/#", "s3")).unwrap();
        assert_eq!(bus.publish(msg("a/x", 1, "p")).unwrap(), 2);
        assert_eq!(a.recv().await.unwrap().topic.as_ref(), "a/x");
        assert_eq!(b.recv().await.unwrap().topic.as_ref(), "a/x");
        assert!(c.try_recv().is_none());
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let bus = Bus::new();
        let mut opts = SubscribeOptions::new("t", "s");
        opts.queue_capacity = 2;
        let s = bus.subscribe(opts).unwrap();
        for n in 0..5 {
            bus.publish(msg("t", n, "p")).unwrap();
        }
        assert_eq!(s.dropped(), 3);
        let got: Vec<_> = std::iter::from_fn(|| s.try_recv()).collect();
        assert_eq!(got, vec![msg("t", 3, "p"), msg("t", 4, "p")]);
    }

    #[test]
    fn no_local_skips_own_messages() {
        let bus = Bus::new();
        let mut opts = SubscribeOptions::new("t", "me");
        opts.no_local = true;
        let s = bus.subscribe(opts).unwrap();
        bus.publish(msg("t", 1, "me")).unwrap();
        bus.publish(msg("t", 2, "other")).unwrap();
        assert_eq!(s.try_recv(), Some(msg("t", 2, "other")));
        assert_eq!(s.try_recv(), None);
    }

    #[test]
    fn dropping_subscription_unsubscribes() {
        let bus = Bus::new();
        let s = bus.subscribe(SubscribeOptions::new("t", "me")).unwrap();
        assert_eq!(bus.stats().subscriptions, 1);
        drop(s);
        assert_eq!(bus.stats().subscriptions, 0);
        assert_eq!(bus.publish(msg("t", 1, "p")).unwrap(), 0);
    }

    #[test]
    fn invalid_topics_are_refused() {
        let bus = Bus::new();
        assert!(bus.subscribe(SubscribeOptions::new("a/#/b", "s")).is_err());
        assert!(bus.publish(msg("a/+", 1, "p")).is_err());
    }

    #[tokio::test]
    async fn close_wakes_receiver() {
        let bus = Bus::new();
        let s = Arc::new(bus.subscribe(SubscribeOptions::new("t", "me")).unwrap());
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.recv().await });
        tokio::task::yield_now().await;
        s.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
