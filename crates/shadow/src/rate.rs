//! Local request rate limits (`maxTotalLocalRequestsRate`, `maxLocalRequestsPerSecondPerThing`)
//! and the outbound sync rate: token buckets holding one second's worth of requests, refilled
//! continuously. A request over either local limit is refused (the caller answers the
//! throttling error); it does not wait.
//!
//! Bound: at most [`MAX_TRACKED_THINGS`] per-thing buckets; beyond it, buckets that are full
//! again (idle for a second or more) are dropped first, and if none is, the new thing shares
//! the refusal (a flood of distinct thing names cannot grow memory).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub const MAX_TRACKED_THINGS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(per_second: u32, now: Instant) -> Bucket {
        let rate = f64::from(per_second.max(1));
        Bucket {
            rate,
            tokens: rate,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
    }

    fn full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.rate
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there (zero when one is).
    pub fn wait_time(&mut self, now: Instant) -> std::time::Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }
}

/// The two local limits together.
pub struct LocalLimiter {
    inner: Mutex<Limits>,
}

struct Limits {
    total: Bucket,
    per_thing_rate: u32,
    things: HashMap<String, Bucket>,
}

impl LocalLimiter {
    pub fn new(total_per_second: u32, per_thing_per_second: u32) -> LocalLimiter {
        let now = Instant::now();
        LocalLimiter {
            inner: Mutex::new(Limits {
                total: Bucket::new(total_per_second, now),
                per_thing_rate: per_thing_per_second,
                things: HashMap::new(),
            }),
        }
    }

    /// Changes the rates (a new configuration); buckets start full.
    pub fn reconfigure(&self, total_per_second: u32, per_thing_per_second: u32) {
        let now = Instant::now();
        let mut l = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        l.total = Bucket::new(total_per_second, now);
        l.per_thing_rate = per_thing_per_second;
        l.things.clear();
    }

    /// Whether a request for `thing` may run now (a token is taken from both buckets).
    pub fn admit(&self, thing: &str) -> bool {
        self.admit_at(thing, Instant::now())
    }

    pub fn admit_at(&self, thing: &str, now: Instant) -> bool {
        let mut l = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let rate = l.per_thing_rate;
        if !l.things.contains_key(thing) && l.things.len() >= MAX_TRACKED_THINGS {
            l.things.retain(|_, b| !b.full(now));
            if l.things.len() >= MAX_TRACKED_THINGS {
                return false;
            }
        }
        // Check the thing's bucket without taking, then the total, then take both: a
        // request refused by one limit does not spend the other's token.
        let thing_ok = {
            let b = l
                .things
                .entry(thing.to_string())
                .or_insert_with(|| Bucket::new(rate, now));
            b.refill(now);
            b.tokens >= 1.0
        };
        if !thing_ok || !l.total.try_take(now) {
            return false;
        }
        if let Some(b) = l.things.get_mut(thing) {
            b.tokens -= 1.0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn per_thing_and_total_limits_refuse_without_starving_others() {
        let l = LocalLimiter::new(5, 2);
        let t0 = Instant::now();
        assert!(l.admit_at("a", t0));
        assert!(l.admit_at("a", t0));
        assert!(!l.admit_at("a", t0), "third request of a within the second");
        assert!(l.admit_at("b", t0), "another thing still gets in");
        assert!(l.admit_at("b", t0));
        assert!(l.admit_at("c", t0));
        assert!(!l.admit_at("d", t0), "total of 5 reached");
        // Half a second later the per-thing bucket of a has one token again.
        assert!(l.admit_at("a", t0 + Duration::from_millis(500)));
    }

    #[test]
    fn tracked_things_are_bounded() {
        let l = LocalLimiter::new(u32::MAX, 1);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_THINGS {
            assert!(l.admit_at(&format!("t{i}"), t0));
        }
        assert!(!l.admit_at("one-more", t0), "no idle bucket to drop yet");
        assert!(l.admit_at("one-more", t0 + Duration::from_secs(2)));
    }
}
