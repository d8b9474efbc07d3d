//! Who gets a connection slot: fairness between clients. This module owns
//! the list of live connections and the rules over it; it does not read a
//! byte from any of them (requests are `admit`'s, sockets `conn`'s).
//!
//! A thread per connection makes idle connections the cheapest attack, and
//! `max_connections` alone lets whoever connects most often hold every slot:
//! 600 idle sockets that reconnect as soon as they are dropped kept every
//! shipper out. What a connection can be trusted with depends on whether a
//! request on it has passed the token (and certificate binding) check;
//! until then it is *unauthenticated*. The rules, decided by [`decide`] (a
//! pure function over the list of live connections) and applied by
//! [`Slots`]:
//!
//! 1. **Per source address** (TLS listener only): one address may hold at
//!    most `max_connections_per_ip` connections; more are closed at once,
//!    without a thread or a TLS handshake. One host, or one attacker with
//!    one address, can never take more than that.
//! 2. **Unauthenticated share**: unauthenticated connections may hold at
//!    most half of `max_connections` (at least one), so the other half is
//!    always left to hosts that have proved who they are.
//! 3. **Eviction, not refusal**, when the unauthenticated share (or the
//!    whole server) is full: a legitimate shipper is itself unauthenticated
//!    when it arrives, so refusing newcomers would let a standing crowd of
//!    idle sockets lock every shipper out, however many authenticated slots
//!    are free. Instead the newcomer is admitted and one unauthenticated
//!    connection is shut down: the oldest one of the source address that
//!    holds the most unauthenticated connections. A shipper authenticates
//!    within a round trip or two of arriving; a connection still
//!    unauthenticated is more likely an attacker's the longer it has been,
//!    and the more of them its address holds. So a lone shipper (one
//!    connection from its address) is never chosen while any address holds
//!    two or more: to push it out, an attacker needs about as many distinct
//!    addresses as there are unauthenticated slots, all of them busy
//!    reconnecting, within the shipper's handshake. (Plain FIFO eviction
//!    would let one address's reconnect loop evict every newcomer within
//!    milliseconds.) Authenticated connections are never evicted; when
//!    every slot is authenticated, newcomers get 503 as before.
//!
//! The loopback plain listener (`listen_plain`) sits behind a TLS proxy, so
//! every connection there has the proxy's address: per-address limits and
//! eviction by address would treat all clients as one. Its connections
//! count against `max_connections` and the unauthenticated share, are
//! never evicted and never evict; beyond the share they get 503. Fairness
//! between the clients behind the proxy is the proxy's job (it sees their
//! addresses: e.g. nginx `limit_conn`, and buffering request heads).
//!
//! An evicted connection's thread may take a moment to notice the shutdown
//! and exit; until it does it still holds a thread, so at most
//! [`MAX_DYING`] evictions may be pending, and beyond that newcomers are
//! refused like a full server: threads stay bounded by `max_connections`
//! plus that.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Mutex;

/// Evicted connections whose threads have not yet exited, at most.
pub const MAX_DYING: usize = 16;

/// Where a connection comes from, as far as fairness is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The TLS listener: the peer's address (IPv4-mapped IPv6 as IPv4).
    Addr(IpAddr),
    /// The loopback plain listener: a proxy in front, clients unknown.
    Proxy,
}

impl Source {
    pub fn tls(ip: IpAddr) -> Source {
        Source::Addr(ip.to_canonical())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `max_connections`.
    pub max: usize,
    /// Unauthenticated connections, at most.
    pub unauthenticated: usize,
    /// `max_connections_per_ip`.
    pub per_ip: usize,
}

impl Limits {
    pub fn new(max_connections: usize, per_ip: usize) -> Limits {
        Limits {
            max: max_connections,
            unauthenticated: (max_connections / 2).max(1),
            per_ip,
        }
    }
}

/// A live connection as [`decide`] sees it; the list is in admission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub source: Source,
    pub authenticated: bool,
    /// Shut down to make room; its thread has not exited yet.
    pub evicted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// Admit after shutting down this unauthenticated connection.
    Evict(u64),
    Refuse(Refusal),
}

/// Why a newcomer was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already holds `max_connections_per_ip`: closed at once.
    PerAddress,
    /// Every slot is taken and none may be evicted: 503 if a busy answerer
    /// is free, else closed.
    Busy,
}

/// The admission rules (module doc) for a newcomer from `source`.
pub fn decide(entries: &[Entry], source: Source, limits: &Limits) -> Decision {
    let live = || entries.iter().filter(|e| !e.evicted);
    if matches!(source, Source::Addr(_))
        && live().filter(|e| e.source == source).count() >= limits.per_ip
    {
        return Decision::Refuse(Refusal::PerAddress);
    }
    let total = live().count();
    let unauthenticated = live().filter(|e| !e.authenticated).count();
    if total < limits.max && unauthenticated < limits.unauthenticated {
        return Decision::Admit;
    }
    let dying = entries.len() - total;
    if source == Source::Proxy || dying >= MAX_DYING {
        return Decision::Refuse(Refusal::Busy);
    }
    // The oldest unauthenticated connection of the address holding the
    // most of them; among equals, the address whose oldest came first.
    let candidates = || live().filter(|e| !e.authenticated && matches!(e.source, Source::Addr(_)));
    let mut held: HashMap<Source, usize> = HashMap::new();
    for e in candidates() {
        *held.entry(e.source).or_default() += 1;
    }
    let Some(&most) = held.values().max() else {
        return Decision::Refuse(Refusal::Busy);
    };
    match candidates().find(|e| held[&e.source] == most) {
        Some(victim) => Decision::Evict(victim.id),
        None => Decision::Refuse(Refusal::Busy),
    }
}

/// What happened to a newcomer, for the accept loop to act on and log.
pub enum Admitted {
    Yes {
        id: u64,
        /// The connection shut down to make room, and its address.
        evicted: Option<Source>,
    },
    No(Refusal),
}

struct Live {
    entry: Entry,
    /// A second handle on the socket, to shut it down on eviction.
    sock: Option<TcpStream>,
}

/// The live connections, shared by the accept loops and the connection
/// threads. One lock, taken once per accept, once per connection when it
/// authenticates, and once when it ends.
pub struct Slots {
    limits: Limits,
    inner: Mutex<(u64, Vec<Live>)>,
}

impl Slots {
    pub fn new(limits: Limits) -> Slots {
        Slots {
            limits,
            inner: Mutex::new((0, Vec::new())),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Live>)> {
        // Poisoned only if a thread panicked between two plain updates of
        // the list: the list is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on a newcomer and, if admitted, registers it (evicting
    /// another if the rules say so). Every admitted id must be given back
    /// with [`Slots::release`] (see [`Ticket`]).
    pub fn admit(&self, source: Source, sock: &TcpStream) -> Admitted {
        let mut guard = self.lock();
        let (next, list) = &mut *guard;
        let entries: Vec<Entry> = list.iter().map(|l| l.entry).collect();
        let evicted = match decide(&entries, source, &self.limits) {
            Decision::Refuse(r) => return Admitted::No(r),
            Decision::Admit => None,
            Decision::Evict(id) => list.iter_mut().find(|l| l.entry.id == id).map(|l| {
                l.entry.evicted = true;
                if let Some(s) = l.sock.take() {
                    // Its thread's next (or current) read ends at once.
                    let _ = s.shutdown(Shutdown::Both);
                }
                l.entry.source
            }),
        };
        *next += 1;
        list.push(Live {
            entry: Entry {
                id: *next,
                source,
                authenticated: false,
                evicted: false,
            },
            // Without a second handle the connection cannot be evicted:
            // it then lives out its own deadlines, like before.
            sock: sock.try_clone().ok(),
        });
        Admitted::Yes { id: *next, evicted }
    }

    /// A request on connection `id` passed the token (and certificate)
    /// check: from now on it can no longer be evicted.
    pub fn authenticated(&self, id: u64) {
        if let Some(l) = self.lock().1.iter_mut().find(|l| l.entry.id == id) {
            l.entry.authenticated = true;
            l.sock = None;
        }
    }

    /// Connection `id` has ended (its thread exits, or was never started).
    pub fn release(&self, id: u64) {
        self.lock().1.retain(|l| l.entry.id != id);
    }

    /// Connections whose threads are still running, evicted ones included.
    pub fn count(&self) -> usize {
        self.lock().1.len()
    }
}

/// An admitted connection's slot, given back however its thread ends
/// (returns, panics or is cut). Created in the connection's own thread, so
/// that a thread that never starts never holds one: the accept loop gives
/// such a slot back itself.
pub struct Ticket<'a> {
    slots: &'a Slots,
    id: u64,
}

impl<'a> Ticket<'a> {
    /// Takes charge of slot `id`, as returned by [`Slots::admit`].
    pub fn new(slots: &'a Slots, id: u64) -> Ticket<'a> {
        Ticket { slots, id }
    }

    /// A request on this connection passed the token and certificate check.
    pub fn authenticated(&self) {
        self.slots.authenticated(self.id);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.slots.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Source {
        Source::Addr(IpAddr::from([127, 0, 0, last]))
    }

    fn e(id: u64, source: Source, authenticated: bool) -> Entry {
        Entry {
            id,
            source,
            authenticated,
            evicted: false,
        }
    }

    #[test]
    fn limits_leave_half_to_authenticated_hosts() {
        assert_eq!(Limits::new(64, 8).unauthenticated, 32);
        assert_eq!(Limits::new(2, 8).unauthenticated, 1);
        assert_eq!(Limits::new(1, 8).unauthenticated, 1);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(Source::tls(mapped), ip(2));
    }

    #[test]
    fn decisions() {
        let l = Limits::new(8, 3); // 4 unauthenticated at most
        let a = ip(2);
        let b = ip(3);
        let me = ip(1);
        let evicted = |mut x: Entry| {
            x.evicted = true;
            x
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Vec<Entry>, Source, Decision)> = vec![
            ("empty", vec![], me, Decision::Admit),
            ("room", vec![e(1, a, false), e(2, a, false)], me, Decision::Admit),
            ("per-address cap", vec![e(1, a, false), e(2, a, true), e(3, a, false)], a,
                Decision::Refuse(Refusal::PerAddress)),
            ("an evicted one no longer counts for its address",
                vec![evicted(e(1, a, false)), e(2, a, false), e(3, a, false)], a, Decision::Admit),
            ("unauthenticated share full: the oldest of the biggest address goes",
                vec![e(1, me, false), e(2, b, false), e(3, a, false), e(4, a, false)], ip(9),
                Decision::Evict(3)),
            ("a lone connection outlives an older crowd's",
                vec![e(1, me, false), e(2, a, false), e(3, a, false), e(4, b, false)], a,
                Decision::Evict(2)),
            ("all addresses equal: the oldest goes",
                vec![e(1, me, false), e(2, b, false), e(3, a, false), e(4, ip(4), false)], ip(5),
                Decision::Evict(1)),
            ("authenticated ones do not count against the share",
                vec![e(1, a, true), e(2, a, true), e(3, b, false), e(4, b, false), e(5, me, false)],
                ip(9), Decision::Admit),
            ("server full: an unauthenticated one goes, never an authenticated one",
                vec![e(1, a, true), e(2, a, true), e(3, a, true), e(4, b, true), e(5, b, true),
                     e(6, b, true), e(7, me, true), e(8, ip(4), false)],
                ip(9), Decision::Evict(8)),
            ("server full of authenticated connections: 503",
                vec![e(1, a, true), e(2, a, true), e(3, a, true), e(4, b, true), e(5, b, true),
                     e(6, b, true), e(7, me, true), e(8, ip(4), true)],
                ip(9), Decision::Refuse(Refusal::Busy)),
            ("the proxy's connections are never evicted",
                vec![e(1, Source::Proxy, false), e(2, Source::Proxy, false),
                     e(3, Source::Proxy, false), e(4, Source::Proxy, false)],
                me, Decision::Refuse(Refusal::Busy)),
            ("and never evict: 503 beyond the share",
                vec![e(1, a, false), e(2, a, false), e(3, b, false), e(4, b, false)],
                Source::Proxy, Decision::Refuse(Refusal::Busy)),
            ("no per-address cap behind the proxy",
                vec![e(1, Source::Proxy, true), e(2, Source::Proxy, true), e(3, Source::Proxy, true)],
                Source::Proxy, Decision::Admit),
        ];
        for (what, entries, source, want) in table {
            assert_eq!(decide(&entries, source, &l), want, "{what}");
        }
    }

    #[test]
    fn too_many_dying_threads_refuse_rather_than_evict() {
        let l = Limits::new(2, 100);
        let mut entries: Vec<Entry> = (0..MAX_DYING as u64)
            .map(|i| Entry {
                evicted: true,
                ..e(i, ip(2), false)
            })
            .collect();
        entries.push(e(100, ip(2), false));
        assert_eq!(decide(&entries, ip(3), &l), Decision::Refuse(Refusal::Busy));
        entries.remove(0);
        assert_eq!(decide(&entries, ip(3), &l), Decision::Evict(100));
    }
}
