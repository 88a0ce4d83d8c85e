//! The local publish/subscribe bus.
//!
//! Every local producer and consumer of messages attaches here: IPC components (PublishToTopic /
//! SubscribeToTopic), the MQTT broker's bridge and, later, the cloud link. Fan-out is in process.
//!
//! Bounds and overflow policy: each subscription owns a queue of at most `queue_capacity`
//! messages (default [`DEFAULT_QUEUE_CAPACITY`]) and `queue_bytes` bytes (default
//! [`DEFAULT_QUEUE_BYTES`]; a single larger message is still queued, alone). Everything
//! queued on the bus together is bounded by [`Bus::with_total_bytes`] (default
//! [`DEFAULT_TOTAL_BYTES`]). When a publisher finds a bound reached, the **oldest** queued
//! messages of the receiving subscription are dropped, and its drop counter incremented,
//! until the new one fits (if the total is held by other subscriptions, the new message is
//! dropped for this one and counted the same way). A publisher therefore never waits for a
//! subscriber: a stuck subscriber loses its own backlog and delays nobody else. Message size
//! is the topic plus the payload bytes (a JSON payload counts its serialized length).

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
/// Default per-subscription queue bound, in bytes.
pub const DEFAULT_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Default bound on the bytes queued on the whole bus.
pub const DEFAULT_TOTAL_BYTES: usize = 256 * 1024 * 1024;

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

    /// What the message counts against byte bounds: topic plus payload bytes.
    pub fn size(&self) -> usize {
        let payload = match &self.payload {
            Payload::Binary(b) => b.len(),
            Payload::Json(v) => {
                let mut counter = ByteCounter(0);
                let _ = serde_json::to_writer(&mut counter, v);
                counter.0
            }
        };
        self.topic.len() + payload
    }
}

/// Counts bytes written, to size a JSON payload without keeping its text.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    /// Queue bound in bytes; 0 means [`DEFAULT_QUEUE_BYTES`].
    pub queue_bytes: usize,
}

impl SubscribeOptions {
    pub fn new(filter: impl Into<String>, subscriber: impl Into<Arc<str>>) -> Self {
        SubscribeOptions {
            filter: filter.into(),
            subscriber: subscriber.into(),
            no_local: false,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            queue_bytes: DEFAULT_QUEUE_BYTES,
        }
    }
}

struct Queue {
    /// Messages with their sizes, and the sum of the sizes.
    items: Mutex<(VecDeque<(Message, usize)>, usize)>,
    capacity: usize,
    max_bytes: usize,
    /// The bus-wide count of queued bytes, shared by every queue.
    total: Arc<Total>,
    notify: Notify,
    dropped: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

struct Entry {
    id: u64,
    options: SubscribeOptions,
    queue: Arc<Queue>,
}

struct Total {
    bytes: std::sync::atomic::AtomicUsize,
    max: usize,
}

struct Inner {
    subscribers: RwLock<Vec<Arc<Entry>>>,
    next_id: AtomicU64,
    published: AtomicU64,
    total: Arc<Total>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            subscribers: Default::default(),
            next_id: Default::default(),
            published: Default::default(),
            total: Arc::new(Total {
                bytes: Default::default(),
                max: DEFAULT_TOTAL_BYTES,
            }),
        }
    }
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
    /// Bytes queued for subscribers now.
    pub queued_bytes: usize,
}

impl Bus {
    pub fn new() -> Self {
        Bus::default()
    }

    /// A bus whose subscription queues together hold at most `max_bytes` (0 means
    /// [`DEFAULT_TOTAL_BYTES`]).
    pub fn with_total_bytes(max_bytes: usize) -> Self {
        let max = if max_bytes == 0 {
            DEFAULT_TOTAL_BYTES
        } else {
            max_bytes
        };
        Bus {
            inner: Arc::new(Inner {
                total: Arc::new(Total {
                    bytes: Default::default(),
                    max,
                }),
                ..Default::default()
            }),
        }
    }

    /// Registers a subscription. The filter must be valid.
    pub fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, TopicError> {
        validate_topic_filter(&options.filter)?;
        let capacity = if options.queue_capacity == 0 {
            DEFAULT_QUEUE_CAPACITY
        } else {
            options.queue_capacity
        };
        let max_bytes = if options.queue_bytes == 0 {
            DEFAULT_QUEUE_BYTES
        } else {
            options.queue_bytes
        };
        let queue = Arc::new(Queue {
            items: Mutex::new((VecDeque::with_capacity(capacity.min(64)), 0)),
            capacity,
            max_bytes,
            total: self.inner.total.clone(),
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
        let size = message.size();
        let mut delivered = 0;
        for entry in subscribers.iter() {
            if entry.options.no_local && entry.options.subscriber == message.origin {
                continue;
            }
            if !topic_matches(&entry.options.filter, &message.topic) {
                continue;
            }
            if entry.queue.push(message.clone(), size) {
                delivered += 1;
            }
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
            queued_bytes: self.inner.total.bytes.load(Ordering::Relaxed),
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
    /// Queues `message` (of `size` bytes), dropping this queue's oldest messages until the
    /// count, byte and bus-wide bounds allow it. Returns false (counted as a drop) when the
    /// bus-wide bound is held by other queues.
    fn push(&self, message: Message, size: usize) -> bool {
        {
            let mut guard = self.items.lock().unwrap_or_else(|p| p.into_inner());
            let (items, bytes) = &mut *guard;
            loop {
                let over_count = items.len() >= self.capacity;
                let over_bytes = *bytes + size > self.max_bytes;
                let over_total = self.total.bytes.load(Ordering::Relaxed) + size > self.total.max;
                if !(over_count || over_bytes || over_total) {
                    break;
                }
                let Some((_, old)) = items.pop_front() else {
                    if over_total {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    // A message larger than the queue's byte bound is queued alone.
                    break;
                };
                *bytes -= old;
                self.total.bytes.fetch_sub(old, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            items.push_back((message, size));
            *bytes += size;
            self.total.bytes.fetch_add(size, Ordering::Relaxed);
        }
        self.notify.notify_one();
        true
    }

    fn pop(&self, out: &mut Vec<Message>, max: usize, max_bytes: usize) -> usize {
        let mut guard = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let (items, bytes) = &mut *guard;
        let mut taken = 0;
        let mut taken_bytes = 0;
        while taken < max {
            let Some((_, size)) = items.front() else {
                break;
            };
            if taken > 0 && taken_bytes + size > max_bytes {
                break;
            }
            let Some((m, size)) = items.pop_front() else {
                break;
            };
            *bytes -= size;
            self.total.bytes.fetch_sub(size, Ordering::Relaxed);
            taken += 1;
            taken_bytes += size;
            out.push(m);
        }
        taken
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let guard = self.items.get_mut().unwrap_or_else(|p| p.into_inner());
        self.total.bytes.fetch_sub(guard.1, Ordering::Relaxed);
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
        let mut one = Vec::with_capacity(1);
        self.queue.pop(&mut one, 1, usize::MAX);
        one.pop()
    }

    /// Drains up to `max` queued messages into `out` without waiting; returns how many.
    pub fn drain_into(&self, out: &mut Vec<Message>, max: usize) -> usize {
        self.queue.pop(out, max, usize::MAX)
    }

    /// Like [`Subscription::drain_into`], stopping before the messages taken would exceed
    /// `max_bytes` (at least one is taken if any is queued).
    pub fn drain_bytes_into(&self, out: &mut Vec<Message>, max: usize, max_bytes: usize) -> usize {
        self.queue.pop(out, max, max_bytes)
    }

    /// Messages dropped because a bound was reached (oldest first).
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

    fn big(topic: &str, n: u8, len: usize) -> Message {
        Message::new(topic, Payload::Binary(Bytes::from(vec![n; len])), "p")
    }

    #[test]
    fn byte_bound_drops_oldest_and_counts() {
        let bus = Bus::new();
        let mut opts = SubscribeOptions::new("t", "s");
        opts.queue_bytes = 3 * 1001;
        let s = bus.subscribe(opts).unwrap();
        for n in 0..10 {
            bus.publish(big("t", n, 1000)).unwrap();
        }
        assert_eq!(s.dropped(), 7);
        assert_eq!(bus.stats().queued_bytes, 3 * 1001);
        let got: Vec<u8> = std::iter::from_fn(|| s.try_recv())
            .map(|m| m.payload.to_bytes()[0])
            .collect();
        assert_eq!(got, vec![7, 8, 9]);
        assert_eq!(bus.stats().queued_bytes, 0);
        // A message larger than the bound is still delivered, alone.
        bus.publish(big("t", 1, 1000)).unwrap();
        bus.publish(big("t", 2, 10_000)).unwrap();
        assert_eq!(s.dropped(), 8);
        assert_eq!(s.try_recv().unwrap().payload.to_bytes().len(), 10_000);
    }

    #[test]
    fn total_bound_covers_every_queue_and_is_released() {
        let bus = Bus::with_total_bytes(10 * 1001);
        let stuck: Vec<Subscription> = (0..4)
            .map(|i| {
                bus.subscribe(SubscribeOptions::new("#", format!("s{i}")))
                    .unwrap()
            })
            .collect();
        for n in 0..100 {
            bus.publish(big("t", n, 1000)).unwrap();
        }
        assert!(bus.stats().queued_bytes <= 10 * 1001);
        let dropped: u64 = stuck.iter().map(Subscription::dropped).sum();
        let queued: usize = stuck
            .iter()
            .map(|s| s.queue.items.lock().unwrap().0.len())
            .sum();
        assert_eq!(
            dropped + queued as u64,
            400,
            "every message is queued or counted"
        );
        drop(stuck);
        assert_eq!(
            bus.stats().queued_bytes,
            0,
            "closed subscriptions release their bytes"
        );
    }

    #[test]
    fn drain_by_bytes_takes_at_least_one() {
        let bus = Bus::new();
        let s = bus.subscribe(SubscribeOptions::new("t", "s")).unwrap();
        for n in 0..5 {
            bus.publish(big("t", n, 1000)).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(s.drain_bytes_into(&mut out, 64, 2500), 2);
        assert_eq!(s.drain_bytes_into(&mut out, 64, 10), 1);
        assert_eq!(s.drain_bytes_into(&mut out, 64, usize::MAX), 2);
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
