//! Parked connections: an idle plain TCP connection (nothing to read, write, deliver or
//! acknowledge) gives up its task, its buffers and its registration with tokio's reactor. What
//! stays is a [`Parked`] record (~150 B) in one slab, and the socket in one epoll instance that
//! a single registry task watches (through tokio's `AsyncFd`). The connection is resumed on a
//! new task with fresh buffers when its socket becomes readable (a packet, or the peer closing)
//! or when it is woken (a delivery, a kick, a takeover, the keep-alive sweeper, shutdown).
//!
//! Keep-alive needs no timer here: the broker's sweeper checks every session's last packet
//! time and kicks the late ones, which resumes them to close.
//!
//! Bounds: the slab holds at most one record per connection (`limits.max_connections`); its
//! capacity stays at the peak. The resume queue holds each parked connection at most once (a
//! token is claimed once).
//!
//! Ownership of a parked connection is decided by `Session::parked`: whoever swaps its token
//! to 0 (a waker, or the registry on readiness) resumes it; the slab and the epoll set change
//! only under one lock, so a socket is never left registered after its record was taken.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lichen_mqtt::{Protocol, Will};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::{Aliases, Conn, MIN_READ};
use crate::broker::{Shared, lock};
use crate::hooks::AuthHandle;
use crate::policy::Grants;
use crate::session::Session;

/// A connection that has been idle on its task this long parks (checked by the sweeper every
/// 250 ms). A fresh connection, and one that had been parked at least this long before its
/// last resume (a device that pings now and then), parks as soon as it is idle.
pub const PARK_AFTER_MS: u64 = 1000;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// What a parked connection keeps: its protocol state, not its buffers.
pub(crate) struct Parked {
    sock: std::net::TcpStream,
    protocol: Protocol,
    out_alias_max: u16,
    client_receive_max: u16,
    expiry: u32,
    /// The client's Maximum Packet Size (u32::MAX: none given).
    client_max_packet: u32,
    /// When it parked, in tenths of a second on `Shared::now_ms` (fits the padding).
    parked_at_ds: u32,
    session: Arc<Session>,
    conn_id: u64,
    thing: Arc<str>,
    handle: Option<AuthHandle>,
    grants: Grants,
    grants_gen: u64,
    will: Option<Box<Will>>,
    aliases: Option<Box<Aliases>>,
}

/// The slab of parked connections and the epoll instance their sockets are in.
pub(crate) struct Parking {
    epoll: OwnedFd,
    slots: std::sync::Mutex<Slots>,
    /// Tokens claimed by wakers, for the registry task to resume.
    resume: std::sync::Mutex<Vec<u64>>,
    notify: Notify,
    next_gen: AtomicU64,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Box<Parked>>>,
    free: Vec<u32>,
}

/// A token names a slot and the parking that filled it: `generation << 32 | (slot + 1)`.
fn slot_of(token: u64) -> Option<usize> {
    ((token & 0xffff_ffff) as usize).checked_sub(1)
}

impl Parking {
    /// None if the epoll instance cannot be created (connections then never park).
    pub(crate) fn new() -> Option<Parking> {
        // SAFETY: epoll_create1 has no memory arguments; a valid fd is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "no epoll instance; idle connections keep their tasks");
            return None;
        }
        // SAFETY: `fd` was just returned by epoll_create1 and nothing else owns it.
        let epoll = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Some(Parking {
            epoll,
            slots: Default::default(),
            resume: Default::default(),
            notify: Notify::new(),
            next_gen: AtomicU64::new(1),
        })
    }

    fn epoll_ctl(&self, op: libc::c_int, fd: RawFd, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: `ev` outlives the call; the epoll fd is ours and open.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Parks `p`. Returns it back if its socket cannot be watched (then it keeps running).
    fn park(&self, p: Parked) -> Result<(), Parked> {
        let session = p.session.clone();
        let conn_id = p.conn_id;
        let fd = p.sock.as_raw_fd();
        let token = {
            let mut slots = lock(&self.slots);
            let slot = match slots.free.pop() {
                Some(s) => s as usize,
                None => {
                    slots.entries.push(None);
                    slots.entries.len() - 1
                }
            };
            let generation = self.next_gen.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
            let token = (generation << 32) | (slot as u64 + 1);
            // Visible to wakers before the socket can report readiness (see the module doc).
            session.parked.store(token, Ordering::SeqCst);
            if let Err(e) = self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, token) {
                session.parked.store(0, Ordering::SeqCst);
                slots.free.push(slot as u32);
                tracing::debug!(error = %e, "cannot park a connection");
                return Err(p);
            }
            slots.entries[slot] = Some(Box::new(p));
            token
        };
        // Work that arrived while parking (its waker saw no token yet) resumes it now.
        if has_work(&session, conn_id)
            && session
                .parked
                .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.claimed(token);
        }
        Ok(())
    }

    /// Resumes the parked connection of `session`, if it is parked (any thread).
    pub(crate) fn unpark(&self, session: &Session) {
        let token = session.parked.swap(0, Ordering::SeqCst);
        if token != 0 {
            self.claimed(token);
        }
    }

    fn claimed(&self, token: u64) {
        lock(&self.resume).push(token);
        self.notify.notify_one();
    }

    /// Takes the record of a claimed token out of the slab and the epoll set.
    fn take(&self, token: u64) -> Option<Box<Parked>> {
        let slot = slot_of(token)?;
        let mut slots = lock(&self.slots);
        let p = slots.entries.get_mut(slot)?.take()?;
        if let Err(e) = self.epoll_ctl(libc::EPOLL_CTL_DEL, p.sock.as_raw_fd(), 0) {
            tracing::debug!(error = %e, "parked socket was not in the epoll set");
        }
        slots.free.push(slot as u32);
        Some(p)
    }

    /// Readiness of `token`'s socket: take it unless a waker claimed it first (that waker's
    /// claim resumes it).
    fn take_ready(&self, token: u64) -> Option<Box<Parked>> {
        let slot = slot_of(token)?;
        {
            let slots = lock(&self.slots);
            let p = slots.entries.get(slot)?.as_ref()?;
            p.session
                .parked
                .compare_exchange(token, 0, Ordering::SeqCst, Ordering::SeqCst)
                .ok()?;
        }
        self.take(token)
    }

    /// Connections parked now.
    pub(crate) fn len(&self) -> usize {
        let slots = lock(&self.slots);
        slots.entries.len() - slots.free.len()
    }
}

/// True when the session has something for its connection to do (checked after parking).
fn has_work(session: &Session, conn_id: u64) -> bool {
    let st = session.lock();
    !st.flow().queue.is_empty() || st.kick.is_some() || st.conn != conn_id
}

/// The epoll fd as `AsyncFd` wants it (the `Parking` owns it).
struct EpollFd(RawFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The registry task: resumes parked connections whose sockets are readable or that were
/// woken. Runs until the broker's tasks are aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let Some(parking) = shared.parking.as_ref() else {
        return;
    };
    // SAFETY: the epoll fd is owned by `shared.parking`, which this task keeps alive (it holds
    // `shared`) for as long as the registration exists.
    let registered = unsafe {
        AsyncFd::register_with_interest(
            EpollFd(parking.epoll.as_fd().as_raw_fd()),
            Interest::READABLE,
        )
    };
    let afd = match registered {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch parked connections");
            return;
        }
    };
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut ready = Vec::new();
    loop {
        tokio::select! {
            guard = afd.readable() => {
                let Ok(mut guard) = guard else { return };
                // SAFETY: `events` has room for EVENTS entries; timeout 0 never blocks.
                let n = unsafe {
                    libc::epoll_wait(parking.epoll.as_raw_fd(), events.as_mut_ptr(), EVENTS as libc::c_int, 0)
                };
                if n < EVENTS as libc::c_int {
                    guard.clear_ready();
                }
                for ev in events.iter().take(n.max(0) as usize) {
                    ready.push(ev.u64);
                }
            }
            _ = parking.notify.notified() => {}
        }
        for token in ready.drain(..) {
            if let Some(p) = parking.take_ready(token) {
                resume(&shared, *p);
            }
        }
        let claimed = std::mem::take(&mut *lock(&parking.resume));
        for token in claimed {
            if let Some(p) = parking.take(token) {
                resume(&shared, *p);
            }
        }
    }
}

/// Runs a parked connection again on a new task.
fn resume(shared: &Arc<Shared>, p: Parked) {
    let stream = match tokio::net::TcpStream::from_std(p.sock) {
        Ok(s) => s,
        Err(e) => {
            // The socket is gone from under us: end the connection as lost.
            tracing::warn!(client = %p.session.client_id, error = %e, "cannot resume a parked connection");
            shared.detach(&p.session, p.conn_id);
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            return;
        }
    };
    let now = shared.now_ms();
    let conn = Conn {
        shared: shared.clone(),
        stream,
        protocol: p.protocol,
        client_id: p.session.client_id.clone(),
        session: p.session,
        conn_id: p.conn_id,
        thing: p.thing,
        fingerprint: None,
        handle: p.handle,
        grants: p.grants,
        grants_gen: p.grants_gen,
        device_gen: shared.device_gen.load(Ordering::Acquire),
        rbuf: bytes::BytesMut::new(),
        wbuf: Vec::new(),
        read_cap: MIN_READ,
        will: p.will,
        expiry: p.expiry,
        aliases: p.aliases,
        out_alias_max: p.out_alias_max,
        client_receive_max: p.client_receive_max,
        client_max_packet: if p.client_max_packet == u32::MAX {
            usize::MAX
        } else {
            p.client_max_packet as usize
        },
        durable: 0,
        unacked_qos1: 0,
        last_tx_ms: now,
        // A connection that was parked a while parks again as soon as it is idle.
        park_soon: now.saturating_sub(u64::from(p.parked_at_ds) * 100) >= PARK_AFTER_MS,
    };
    tokio::spawn(super::drive(conn));
}

impl<S: super::Transport> Conn<S> {
    /// Whether the connection may park now: nothing buffered, queued, in flight or stored for
    /// it, and either it parks at once (`park_soon`) or it has been idle `PARK_AFTER_MS`.
    pub(super) fn may_park(&mut self) -> bool {
        if !S::PARKABLE
            || self.shared.parking.is_none()
            || !self.wbuf.is_empty()
            || !self.rbuf.is_empty()
            || self.durable != 0
            || self.fingerprint.is_some()
            || self.shared.closing.load(Ordering::Acquire)
        {
            return false;
        }
        {
            let st = self.session.lock();
            if st.conn != self.conn_id
                || st.kick.is_some()
                || !st.flow().queue.is_empty()
                || !st.flow().inflight.is_empty()
                || st.spilled() != 0
            {
                return false;
            }
        }
        let now = self.shared.now_ms();
        let last_rx = self.session.last_rx_ms.load(Ordering::Relaxed);
        let idle_for = now.saturating_sub(last_rx.max(self.last_tx_ms));
        let park = self.park_soon || idle_for >= PARK_AFTER_MS;
        // Not yet: let the sweeper wake it once it has been idle long enough.
        self.session.park_wanted.store(!park, Ordering::Relaxed);
        park
    }

    /// Parks the connection. Gives it back if its socket cannot be duplicated (it then keeps
    /// its task).
    pub(super) fn park(self) -> Option<Self> {
        let Some(sock) = self.stream.try_clone_std() else {
            return Some(self);
        };
        self.session.lock().shrink();
        // From here the duplicate is the connection's socket: dropping the stream below only
        // deregisters it from tokio's reactor and closes the original descriptor.
        let Conn {
            shared,
            stream,
            protocol,
            session,
            conn_id,
            thing,
            handle,
            grants,
            grants_gen,
            will,
            expiry,
            aliases,
            out_alias_max,
            client_receive_max,
            client_max_packet,
            ..
        } = self;
        drop(stream);
        let p = Parked {
            sock,
            protocol,
            out_alias_max,
            client_receive_max,
            expiry,
            client_max_packet: u32::try_from(client_max_packet).unwrap_or(u32::MAX),
            session,
            conn_id,
            thing,
            handle,
            grants,
            grants_gen,
            will,
            aliases,
            parked_at_ds: u32::try_from(shared.now_ms() / 100).unwrap_or(u32::MAX),
        };
        let refused = match shared.parking.as_ref() {
            Some(parking) => parking.park(p).err(),
            None => Some(p),
        };
        if let Some(p) = refused {
            // Rare (epoll_ctl failed): it runs on, on a new task.
            resume(&shared, p);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle plain TCP connection keeps (see ARCHITECTURE.md, crates/broker): these
    /// sizes are its memory budget, so growing them must be a decision.
    #[test]
    fn a_parked_connection_stays_small() {
        let parked = std::mem::size_of::<Parked>();
        let session = std::mem::size_of::<Session>();
        eprintln!("Parked {parked} B, Session {session} B");
        // 120 + malloc's 8 fills a 128-byte chunk.
        assert!(parked <= 120, "Parked is {parked} B");
        // + 16 for the Arc counts, + 8 for malloc: a 192-byte chunk.
        assert!(session <= 168, "Session is {session} B");
    }
}
