//! What a connection remembers about its packet identifiers: our publishes, subscribes and
//! unsubscribes awaiting an answer, and incoming QoS 2 publishes awaiting PUBREL.
//!
//! It is kept apart from the socket loop ([`crate::connection`]) so a reconnecting link can
//! carry it from one connection to the next (resending with DUP); today a closed connection
//! fails everything pending in it.

use std::collections::{HashMap, HashSet};

use lichen_mqtt::ReasonCode;
use tokio::sync::oneshot;

use crate::ClientError;

pub(crate) type PublishReply = oneshot::Sender<Result<ReasonCode, ClientError>>;
pub(crate) type CodesReply = oneshot::Sender<Result<Vec<ReasonCode>, ClientError>>;

/// Which acknowledgement a QoS 1/2 publish waits for next: PUBACK (`Acked`), PUBREC
/// (`Received`) or PUBCOMP (`Completed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Acked,
    Received,
    Completed,
}

pub(crate) struct PendingPublish {
    pub topic: String,
    pub stage: Stage,
    pub reply: PublishReply,
}

pub(crate) struct PendingCodes {
    /// Filters in the request: the ack must carry one reason code per filter (MQTT 5).
    pub filters: usize,
    pub reply: CodesReply,
}

#[derive(Default)]
pub(crate) struct Session {
    last_id: u16,
    pub publishes: HashMap<u16, PendingPublish>,
    pub subscribes: HashMap<u16, PendingCodes>,
    pub unsubscribes: HashMap<u16, PendingCodes>,
    /// Incoming QoS 2 packet ids delivered and acknowledged with PUBREC, awaiting PUBREL.
    pub incoming_qos2: HashSet<u16>,
}

impl Session {
    /// A free packet identifier (1..=65535), or `None` when all are in use.
    pub fn allocate_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_id = self.last_id.checked_add(1).unwrap_or(1);
            let id = self.last_id;
            if !self.publishes.contains_key(&id)
                && !self.subscribes.contains_key(&id)
                && !self.unsubscribes.contains_key(&id)
            {
                return Some(id);
            }
        }
        None
    }

    /// Our QoS 1/2 publishes not yet completed (the in-flight window counts these).
    pub fn inflight(&self) -> usize {
        self.publishes.len()
    }

    /// Operations awaiting an answer.
    pub fn pending(&self) -> usize {
        self.publishes.len() + self.subscribes.len() + self.unsubscribes.len()
    }

    /// Answers everything pending with `error` (the connection is gone).
    pub fn fail_all(&mut self, error: &ClientError) {
        for (_, p) in self.publishes.drain() {
            let _ = p.reply.send(Err(error.clone()));
        }
        for (_, p) in self.subscribes.drain() {
            let _ = p.reply.send(Err(error.clone()));
        }
        for (_, p) in self.unsubscribes.drain() {
            let _ = p.reply.send(Err(error.clone()));
        }
        self.incoming_qos2.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_zero_and_ids_in_use() {
        let mut s = Session {
            last_id: u16::MAX - 1,
            ..Default::default()
        };
        let (tx, _rx) = oneshot::channel();
        s.subscribes.insert(
            1,
            PendingCodes {
                filters: 1,
                reply: tx,
            },
        );
        assert_eq!(s.allocate_id(), Some(u16::MAX));
        assert_eq!(s.allocate_id(), Some(2), "wraps past 0 and skips 1, in use");
    }

    #[test]
    fn allocation_fails_when_every_id_is_in_use() {
        let mut s = Session::default();
        for id in 1..=u16::MAX {
            let (tx, _rx) = oneshot::channel();
            s.unsubscribes.insert(
                id,
                PendingCodes {
                    filters: 1,
                    reply: tx,
                },
            );
        }
        assert_eq!(s.allocate_id(), None);
    }
}
