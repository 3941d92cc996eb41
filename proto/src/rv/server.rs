//! The rendezvous side of the control datagrams: cookies, signatures, sessions, anti-replay
//! and pushes with retransmission (docs/PROTOCOL.md section 4.1).
//!
//! The machine authenticates and hands back what a datagram asks for ([`Inbound`]); the
//! rendezvous decides (registry, limits) and answers through [`Server::accept`],
//! [`Server::refuse`] and [`Server::respond`]. Before a source has proven it receives at its
//! address (a valid cookie), the machine answers only with datagrams smaller than the one it
//! got: a Cookie (30 bytes) to a Hello (48) or to a Register with a stale cookie (>= 131), an
//! Unknown (22) to a Request for a session it does not hold (>= 83).
//!
//! Invariants and limits:
//! - at most [`ServerConfig::max_sessions`] sessions (one per peer; the registry's limit);
//! - at most [`ServerConfig::max_pending_pushes`] pushes waiting for an ack, each sent at most
//!   [`ServerConfig::push_attempts`] times;
//! - a session's observed address moves only on a Request with a sequence number above every
//!   one seen (so a replayed or reordered older datagram cannot move it back), and a
//!   sequence number is acted on once: a copy is answered again only from the session's
//!   observed address, and marked `duplicate` so that it causes nothing new.
//!
//! Time comes in as `now`; the only secret, `seed`, is drawn by the caller.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use super::verify::{verify_register, verify_registers, verify_signature};
use super::wire::{self, Builder, Cookie, Datagram, Id, SessionKey, WireError};
use crate::control::{self, Push, Request, Response};
use crate::path::auth::{OwnSecret, PairKey};
use crate::PeerId;

/// Limits and timers of the server machine, with the rendezvous's defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// A cookie is made under the secret of its epoch and accepted during that epoch and the
    /// next: valid for 60 to 120 s (default 60 s epochs).
    pub cookie_epoch: Duration,
    /// Most sessions (default 100,000, the registry's limit).
    pub max_sessions: usize,
    /// First retransmission of an unacknowledged push (default 200 ms; doubled each time).
    pub push_rto: Duration,
    /// Most sends of one push (default 5: 0, 0.2, 0.6, 1.4, 3.0 s).
    pub push_attempts: u32,
    /// Most pushes waiting for acknowledgement (default 65,536); beyond it new pushes are
    /// refused.
    pub max_pending_pushes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            cookie_epoch: Duration::from_secs(60),
            max_sessions: 100_000,
            push_rto: Duration::from_millis(200),
            push_attempts: 5,
            max_pending_pushes: 65_536,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What an authenticated datagram asks of the rendezvous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A signed registration from an address that proved it receives there (valid cookie).
    /// Answer with [`Server::accept`] or [`Server::refuse`].
    ///
    /// `pinned`: the node pinned this rendezvous's key; pass [`pinned_key`] to
    /// [`Server::accept`], or refuse.
    Register {
        id: Id,
        peer: PeerId,
        request: Request,
        from: SocketAddr,
        pinned: bool,
    },
    /// A request under a session. `moved`: `from` is the peer's new observed address.
    /// `duplicate`: a copy of a request already acted on (answer it, cause nothing new).
    /// Answer with [`Server::respond`].
    Request {
        id: Id,
        peer: PeerId,
        request: Request,
        from: SocketAddr,
        moved: bool,
        duplicate: bool,
    },
    /// The peer acknowledged a push.
    PushAcked { peer: PeerId },
}

/// Why a datagram was dropped (some are answered first: see each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerDrop {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("kind sent only by the rendezvous")]
    WrongDirection,
    #[error("stale or forged cookie (answered with a fresh one)")]
    Cookie,
    #[error("registration signature does not verify")]
    Signature,
    #[error("registration body is not a Register")]
    NotRegister,
    #[error("no such session (answered Unknown)")]
    UnknownSession,
    #[error("bad session tag")]
    Tag,
    #[error("replayed or too old sequence number")]
    Replay,
    #[error("ack for no push in flight")]
    StrayAck,
}

/// One registered peer's session: 88 bytes besides its map slot.
#[derive(Debug, Clone)]
struct Session {
    id: u64,
    /// The key of a pinned session (derived from both identities, never sent); `None`: the
    /// key is derived from the seed when needed.
    pinned_key: Option<SessionKey>,
    /// The Register that made it: a retransmitted copy gets the same session.
    register_id: Id,
    observed: SocketAddr,
    /// Highest sequence number seen, and which of the 64 below it were.
    max_seq: u64,
    window: u64,
}

#[derive(Debug)]
struct PendingPush {
    peer: PeerId,
    contents: Vec<u8>,
    sent: u32,
    next: Instant,
}

/// The server machine. See the module documentation.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    seed: [u8; 32],
    start: Instant,
    /// (epoch, its secret) for the current epoch and the one before.
    secrets: [Option<(u64, [u8; 32])>; 2],
    next_session: u64,
    sessions: HashMap<PeerId, Session>,
    pushes: HashMap<u64, PendingPush>,
    push_timers: BTreeSet<(Instant, u64)>,
    next_push: u64,
    transmits: VecDeque<Transmit>,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn address_bytes(addr: SocketAddr) -> ([u8; 16], [u8; 2]) {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    (ip, addr.port().to_be_bytes())
}

impl Server {
    /// A machine started at `start`, its cookie and session secrets derived from `seed` (32
    /// random bytes drawn by the caller; a restarted rendezvous draws new ones, so every old
    /// cookie and session key stops working).
    pub fn new(config: ServerConfig, seed: [u8; 32], start: Instant) -> Self {
        let next_session = u64::from_be_bytes(
            hmac(&seed, &[b"first session"])[..8]
                .try_into()
                .expect("8 bytes"),
        ) | 1;
        Server {
            secrets: [None, None],
            config,
            seed,
            start,
            next_session,
            sessions: HashMap::new(),
            pushes: HashMap::new(),
            push_timers: BTreeSet::new(),
            next_push: 1,
            transmits: VecDeque::new(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start);
        elapsed.as_secs() / self.config.cookie_epoch.as_secs().max(1)
    }

    fn secret(&mut self, epoch: u64) -> [u8; 32] {
        if let Some((_, secret)) = self.secrets.iter().flatten().find(|(e, _)| *e == epoch) {
            return *secret;
        }
        let secret = hmac(&self.seed, &[b"cookie", &epoch.to_be_bytes()]);
        // Replace an empty slot, or the older epoch's.
        let slot = match self.secrets {
            [None, _] => 0,
            [_, None] => 1,
            [Some((a, _)), Some((b, _))] => usize::from(a >= b),
        };
        self.secrets[slot] = Some((epoch, secret));
        secret
    }

    fn cookie_in(&mut self, epoch: u64, from: SocketAddr) -> Cookie {
        let secret = self.secret(epoch);
        let (ip, port) = address_bytes(from);
        let full = hmac(&secret, &[&ip, &port]);
        let mut cookie = [0; wire::COOKIE_LEN];
        cookie.copy_from_slice(&full[..wire::COOKIE_LEN]);
        cookie
    }

    /// The cookie for `from` now.
    pub fn cookie(&mut self, now: Instant, from: SocketAddr) -> Cookie {
        let epoch = self.epoch(now);
        self.cookie_in(epoch, from)
    }

    fn cookie_valid(&mut self, now: Instant, from: SocketAddr, cookie: &Cookie) -> bool {
        let epoch = self.epoch(now);
        // Not secret-dependent timing worth protecting beyond this: a cookie grants only the
        // right to be answered at one's own address. The previous epoch's cookie is made only
        // when the current one does not match (most cookies are current: one HMAC saved).
        self.cookie_in(epoch, from) == *cookie
            || epoch
                .checked_sub(1)
                .is_some_and(|e| self.cookie_in(e, from) == *cookie)
    }

    fn session_key(&self, peer: &PeerId, session: u64) -> SessionKey {
        if let Some(key) = self
            .sessions
            .get(peer)
            .filter(|s| s.id == session)
            .and_then(|s| s.pinned_key)
        {
            return key;
        }
        self.seed_key(peer, session)
    }

    fn seed_key(&self, peer: &PeerId, session: u64) -> SessionKey {
        let full = hmac(&self.seed, &[b"session", &peer.0, &session.to_be_bytes()]);
        let mut key = [0; wire::KEY_LEN];
        key.copy_from_slice(&full[..wire::KEY_LEN]);
        key
    }

    fn send(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        self.transmits.push_back(Transmit {
            destination,
            contents,
        });
    }

    fn send_cookie(&mut self, now: Instant, from: SocketAddr, id: &Id) {
        let cookie = self.cookie(now, from);
        let answer = Builder::new(wire::KIND_COOKIE, id).bytes(&cookie).finish();
        self.send(from, answer);
    }

    /// Handles one datagram from `from`. Answers that need no decision (cookies, Unknown,
    /// repeated pushes) are queued here; the rest is returned.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<Option<Inbound>, ServerDrop> {
        self.handle_inner(now, from, bytes, false)
    }

    /// What to do with a datagram before [`Self::handle`]: a Register under a valid cookie
    /// is worth its signature check ([`verify_register`], the one costly step: tens of µs),
    /// which the caller may run elsewhere (other threads) and then pass the datagram to
    /// [`Self::handle_verified`]. Everything else goes to [`Self::handle`] at once.
    pub fn prescreen(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> Prescreen {
        match wire::decode(bytes) {
            Ok(Datagram::Register { cookie, .. }) if self.cookie_valid(now, from, &cookie) => {
                Prescreen::Verify
            }
            _ => Prescreen::Handle,
        }
    }

    /// [`Self::handle`] for a Register whose signature [`verify_register`] accepted.
    pub fn handle_verified(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<Option<Inbound>, ServerDrop> {
        self.handle_inner(now, from, bytes, true)
    }

    fn handle_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        signature_checked: bool,
    ) -> Result<Option<Inbound>, ServerDrop> {
        match wire::decode(bytes)? {
            Datagram::Hello { id } => {
                self.send_cookie(now, from, &id);
                Ok(None)
            }
            Datagram::Register {
                id,
                cookie,
                peer,
                flags,
                body,
                signed,
                signature,
            } => {
                if !self.cookie_valid(now, from, &cookie) {
                    self.send_cookie(now, from, &id);
                    return Err(ServerDrop::Cookie);
                }
                if !signature_checked && !verify_signature(&peer, signed, &signature) {
                    return Err(ServerDrop::Signature);
                }
                let request: Request = wire::decode_body(body)?;
                if !matches!(request, Request::Register { .. }) {
                    return Err(ServerDrop::NotRegister);
                }
                Ok(Some(Inbound::Register {
                    id,
                    peer,
                    request,
                    from,
                    pinned: flags & wire::FLAG_PINNED != 0,
                }))
            }
            Datagram::Request {
                id,
                peer,
                session,
                seq,
                body,
                tagged,
                tag,
            } => {
                if self.sessions.get(&peer).is_none_or(|s| s.id != session) {
                    let answer = Builder::new(wire::KIND_UNKNOWN, &id).u64(session).finish();
                    self.send(from, answer);
                    return Err(ServerDrop::UnknownSession);
                }
                let key = self.session_key(&peer, session);
                if !wire::verify_tag(&key, tagged, &tag) {
                    return Err(ServerDrop::Tag);
                }
                let request: Request = wire::decode_body(body)?;
                let state = self.sessions.get_mut(&peer).expect("looked up above");
                let (fresh, newest) = accept_seq(state, seq);
                if !fresh && from != state.observed {
                    return Err(ServerDrop::Replay);
                }
                // An older fresh request from another address (reordered behind a move) is acted
                // on and answered where it came from, but does not move the session back.
                let moved = newest && from != state.observed;
                if moved {
                    state.observed = from;
                }
                Ok(Some(Inbound::Request {
                    id,
                    peer,
                    request,
                    from,
                    moved,
                    duplicate: !fresh,
                }))
            }
            Datagram::PushAck {
                id,
                peer,
                session,
                tagged,
                tag,
            } => {
                if self.sessions.get(&peer).is_none_or(|s| s.id != session) {
                    return Err(ServerDrop::UnknownSession);
                }
                let key = self.session_key(&peer, session);
                if !wire::verify_tag(&key, tagged, &tag) {
                    return Err(ServerDrop::Tag);
                }
                let push = u64::from_be_bytes(id);
                match self.pushes.get(&push) {
                    Some(pending) if pending.peer == peer => {
                        let pending = self.pushes.remove(&push).expect("present");
                        self.push_timers.remove(&(pending.next, push));
                        Ok(Some(Inbound::PushAcked { peer }))
                    }
                    _ => Err(ServerDrop::StrayAck),
                }
            }
            Datagram::Cookie { .. }
            | Datagram::Registered { .. }
            | Datagram::Response { .. }
            | Datagram::Unknown { .. }
            | Datagram::Push { .. } => Err(ServerDrop::WrongDirection),
        }
    }

    /// Accepts the registration `id` of `peer` from `from` (the registry took it): a session
    /// is made (or kept, for a copy of the same Register) and `response` sent, tagged under
    /// the session key, which goes with it unless `pinned` (the pair key of the node and this
    /// rendezvous, from [`pinned_key`], for a Register that asked for it): then the key is
    /// derived from it on both sides and never sent. False (nothing sent) when the session
    /// table is full.
    pub fn accept(
        &mut self,
        id: Id,
        peer: PeerId,
        from: SocketAddr,
        pinned: Option<&PairKey>,
        response: &Response,
    ) -> bool {
        let session = match self.sessions.get_mut(&peer) {
            Some(existing) if existing.register_id == id => {
                existing.observed = from;
                existing.id
            }
            existing => {
                if existing.is_none() && self.sessions.len() >= self.config.max_sessions {
                    return false;
                }
                let session = self.next_session;
                self.next_session = self.next_session.wrapping_add(1).max(1);
                self.sessions.insert(
                    peer,
                    Session {
                        id: session,
                        pinned_key: pinned.map(|pair| pinned_session_key(pair, session)),
                        register_id: id,
                        observed: from,
                        max_seq: 0,
                        window: 0,
                    },
                );
                session
            }
        };
        let key = self.session_key(&peer, session);
        let sent_key = if pinned.is_some() {
            [0; wire::KEY_LEN]
        } else {
            key
        };
        let answer = Builder::new(wire::KIND_REGISTERED, &id)
            .u64(session)
            .bytes(&sent_key)
            .body(&control::encode(response))
            .tagged(&key);
        self.send(from, answer);
        true
    }

    /// Refuses the registration `id` (`response` says why: a `Refused`). Sent without a
    /// session; the cookie proved `from` receives there.
    pub fn refuse(&mut self, id: Id, from: SocketAddr, response: &Response) {
        let answer = Builder::new(wire::KIND_REGISTERED, &id)
            .u64(0)
            .bytes(&[0; wire::KEY_LEN])
            .body(&control::encode(response))
            .tagged(&[0; wire::KEY_LEN]);
        self.send(from, answer);
    }

    /// Answers request `id` of `peer` (to `to`, where it came from), under its session.
    pub fn respond(&mut self, id: Id, peer: &PeerId, to: SocketAddr, response: &Response) {
        let Some(session) = self.sessions.get(peer).map(|s| s.id) else {
            return;
        };
        let key = self.session_key(peer, session);
        let answer = Builder::new(wire::KIND_RESPONSE, &id)
            .u64(session)
            .body(&control::encode(response))
            .tagged(&key);
        self.send(to, answer);
    }

    /// Pushes `push` to `peer` at its observed address, resent until acknowledged (bounded).
    /// False when `peer` has no session or too many pushes are in flight.
    pub fn push(&mut self, now: Instant, peer: &PeerId, push: &Push) -> bool {
        let Some(state) = self.sessions.get(peer) else {
            return false;
        };
        if self.pushes.len() >= self.config.max_pending_pushes {
            return false;
        }
        let (session, to) = (state.id, state.observed);
        let key = self.session_key(peer, session);
        let push_id = self.next_push;
        self.next_push += 1;
        let contents = Builder::new(wire::KIND_PUSH, &push_id.to_be_bytes())
            .u64(session)
            .body(&control::encode(push))
            .tagged(&key);
        self.send(to, contents.clone());
        let next = now + self.config.push_rto;
        self.pushes.insert(
            push_id,
            PendingPush {
                peer: *peer,
                contents,
                sent: 1,
                next,
            },
        );
        self.push_timers.insert((next, push_id));
        true
    }

    /// Forgets `peer`'s session (its registration expired or was removed).
    pub fn forget(&mut self, peer: &PeerId) {
        self.sessions.remove(peer);
    }

    /// Where `peer`'s session last came from.
    pub fn observed(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.sessions.get(peer).map(|s| s.observed)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn pending_pushes(&self) -> usize {
        self.pushes.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.push_timers.first().map(|(at, _)| *at)
    }

    /// Resends pushes that are due, to the target's observed address as it is now; gives up
    /// on those sent [`ServerConfig::push_attempts`] times.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, push_id)) = self.push_timers.first() {
            if at > now {
                break;
            }
            self.push_timers.pop_first();
            let Some(mut pending) = self.pushes.remove(&push_id) else {
                continue;
            };
            let Some(to) = self.observed(&pending.peer) else {
                continue;
            };
            if pending.sent >= self.config.push_attempts {
                continue;
            }
            self.send(to, pending.contents.clone());
            let backoff = self.config.push_rto * 2u32.saturating_pow(pending.sent);
            pending.sent += 1;
            pending.next = now + backoff;
            self.push_timers.insert((pending.next, push_id));
            self.pushes.insert(push_id, pending);
        }
    }
}

/// The pair key of the rendezvous (`own`) and a node that pinned it (`peer`): one X25519
/// (tens of µs; call it off the machine's lock). `None` for a peer ID that is no valid key.
pub fn pinned_key(own: &OwnSecret, peer: &PeerId) -> Option<PairKey> {
    own.pair_key(peer).ok()
}

/// The key of pinned session `session` under the pair key: both sides compute it.
pub fn pinned_session_key(pair: &PairKey, session: u64) -> SessionKey {
    let mut message = wire::PINNED_SESSION_DOMAIN.to_vec();
    message.extend_from_slice(&session.to_be_bytes());
    pair.tag(&message)
}

/// What [`Server::prescreen`] says to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prescreen {
    /// Check the signature ([`verify_register`]), then [`Server::handle_verified`].
    Verify,
    /// [`Server::handle`] it.
    Handle,
}

/// Records `seq` in `session`'s window. Returns (fresh: never seen, newest: above all seen).
fn accept_seq(session: &mut Session, seq: u64) -> (bool, bool) {
    if seq == 0 {
        return (false, false);
    }
    if seq > session.max_seq {
        let shift = seq - session.max_seq;
        session.window = if shift >= 64 {
            0
        } else {
            session.window << shift
        } | 1;
        session.max_seq = seq;
        return (true, true);
    }
    let back = session.max_seq - seq;
    if back >= 64 {
        return (false, false);
    }
    let bit = 1u64 << back;
    let fresh = session.window & bit == 0;
    session.window |= bit;
    (fresh, false)
}
