//! The node side of the control datagrams (docs/PROTOCOL.md section 4.1): Hello and cookie,
//! the signed Register, requests under the session with retransmission, and pushes with
//! their acks.
//!
//! Drive it: [`Client::hello`] / [`Client::request`] start operations, each named by the
//! [`OpId`] returned; feed every control datagram from the rendezvous's address to
//! [`Client::handle_datagram`]; send what [`Client::poll_transmit`] gives to the rendezvous;
//! call [`Client::handle_timeout`] at [`Client::poll_timeout`]; take [`ClientEvent`]s from
//! [`Client::poll_event`]. Every operation ends in exactly one [`ClientEvent::Done`].
//!
//! Limits: at most [`MAX_PENDING`] operations at once (more are refused); each is sent at
//! `rto`, doubling up to `max_rto`, until `deadline` after it started; a Register follows at
//! most [`MAX_COOKIE_RETRIES`] fresh cookies. The last [`RECENT_PUSHES`] push IDs are kept so
//! a retransmitted push is acknowledged again but reported once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::wire::{self, Builder, Cookie, Datagram, Id, SessionKey, WireError};
use crate::control::{self, Push, Request, Response};
use crate::path::auth::PairKey;
use crate::PeerId;

/// Most operations in flight at once.
pub const MAX_PENDING: usize = 64;
/// Fresh cookies a Register takes before it fails.
pub const MAX_COOKIE_RETRIES: u8 = 2;
/// Push IDs remembered to report a push once.
pub const RECENT_PUSHES: usize = 64;

/// Timers of the client machine, with the node's defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// First retransmission (default 250 ms).
    pub rto: Duration,
    /// Largest gap between retransmissions (default 1 s).
    pub max_rto: Duration,
    /// An operation unanswered this long fails (default 5 s: sends at 0, 0.25, 0.75, 1.75,
    /// 2.75, 3.75, 4.75 s).
    pub deadline: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
        }
    }
}

/// Names one operation.
pub type OpId = u64;

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A Hello was answered: the rendezvous is reachable and a cookie is held.
    Cookie,
    /// The rendezvous answered (a `Registered` also starts a session).
    Response(Response),
    /// The rendezvous holds no session for this node (it restarted, or the registration
    /// expired): register again.
    UnknownSession,
    /// No answer within the deadline.
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Done {
        op: OpId,
        outcome: Outcome,
    },
    /// A push from the rendezvous (already acknowledged).
    Push(Push),
}

/// Why an operation could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("{MAX_PENDING} rendezvous operations are already in flight")]
    TooMany,
    #[error("not registered: only a Register can be sent without a session")]
    NotRegistered,
}

/// Why a datagram from the rendezvous was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientDrop {
    #[error("not from the rendezvous's address")]
    WrongSource,
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("kind sent only by nodes")]
    WrongDirection,
    #[error("answers no operation in flight")]
    Unmatched,
    #[error("for another session")]
    OtherSession,
    #[error("bad session tag")]
    Tag,
    /// A new push while the caller has no room for it ([`Client::set_push_room`]): neither
    /// acknowledged nor reported, so the rendezvous sends it again.
    #[error("a push arrived while there is no room for it; left unacknowledged for the rendezvous to resend")]
    NoPushRoom,
}

#[derive(Debug, Clone)]
enum Kind {
    Hello,
    /// A Register under a cookie (`retries`: fresh cookies taken so far).
    Register {
        request: Request,
        retries: u8,
        cookie: Cookie,
    },
    /// A request under the session.
    Request,
}

#[derive(Debug)]
struct Pending {
    op: OpId,
    id: Id,
    kind: Kind,
    contents: Vec<u8>,
    sent: u32,
    next: Instant,
    deadline: Instant,
}

/// The client machine. See the module documentation.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    key: SigningKey,
    peer: PeerId,
    server: SocketAddr,
    /// Secret for transaction IDs (random, from the caller), and a counter.
    id_seed: [u8; 32],
    counter: u64,
    cookie: Option<Cookie>,
    session: Option<(u64, SessionKey)>,
    seq: u64,
    pending: Vec<Pending>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    recent_pushes: VecDeque<Id>,
    /// Whether the caller can take a push now ([`Client::set_push_room`]).
    push_room: bool,
    /// The pair key with the pinned rendezvous, if pinned (see [`Client::pin`]).
    pinned: Option<PairKey>,
}

impl Client {
    /// A client of the rendezvous at `server`, signing with `key`. `id_seed`: 32 random bytes
    /// (transaction IDs are derived from it, so an off-path attacker cannot guess them).
    pub fn new(
        config: ClientConfig,
        key: SigningKey,
        server: SocketAddr,
        id_seed: [u8; 32],
    ) -> Self {
        Client {
            pinned: None,
            config,
            peer: PeerId(key.verifying_key().to_bytes()),
            key,
            server,
            id_seed,
            counter: 0,
            cookie: None,
            session: None,
            seq: 0,
            pending: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            recent_pushes: VecDeque::new(),
            push_room: true,
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Pins the rendezvous's key: `pair` is the pair key of this node and the rendezvous
    /// (`OwnSecret::pair_key` with its peer ID). Registers then ask for a pinned session, and
    /// a Registered counts only if tagged under the key derived from `pair`, which only the
    /// rendezvous's private key can derive too; the session key is never sent.
    pub fn pin(&mut self, pair: PairKey) {
        self.pinned = Some(pair);
    }

    /// Whether a session is held (a Register was answered `Registered`).
    pub fn is_registered(&self) -> bool {
        self.session.is_some()
    }

    fn next_id(&mut self) -> (OpId, Id) {
        self.counter += 1;
        let digest = Sha256::new()
            .chain_update(self.id_seed)
            .chain_update(self.counter.to_be_bytes())
            .finalize();
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        (self.counter, id)
    }

    fn start(&mut self, now: Instant, kind: Kind, id: Id, op: OpId, contents: Vec<u8>) {
        self.transmits.push_back(contents.clone());
        self.pending.push(Pending {
            op,
            id,
            kind,
            contents,
            sent: 1,
            next: now + self.config.rto,
            deadline: now + self.config.deadline,
        });
    }

    /// Asks for a cookie: tells whether the rendezvous answers over UDP at all.
    pub fn hello(&mut self, now: Instant) -> Result<OpId, StartError> {
        if self.pending.len() >= MAX_PENDING {
            return Err(StartError::TooMany);
        }
        let (op, id) = self.next_id();
        self.start(now, Kind::Hello, id, op, wire::hello(&id));
        Ok(op)
    }

    fn register_datagram(&self, id: &Id, request: &Request) -> Vec<u8> {
        let builder = Builder::new(wire::KIND_REGISTER, id)
            .bytes(&self.cookie.unwrap_or_default())
            .bytes(&self.peer.0)
            .bytes(&[if self.pinned.is_some() {
                wire::FLAG_PINNED
            } else {
                0
            }])
            .body(&control::encode(request));
        let mut signed = wire::SIGNATURE_DOMAIN.to_vec();
        signed.extend_from_slice(builder.so_far());
        let signature = self.key.sign(&signed).to_bytes();
        builder.bytes(&signature).finish()
    }

    /// Sends `request`. A `Register` without a session goes as a signed Register under the
    /// cookie held (none: an empty one, answered with a cookie and sent again); anything else
    /// goes under the session.
    pub fn request(&mut self, now: Instant, request: Request) -> Result<OpId, StartError> {
        if self.pending.len() >= MAX_PENDING {
            return Err(StartError::TooMany);
        }
        let (op, id) = self.next_id();
        match self.session {
            None if matches!(request, Request::Register { .. }) => {
                let contents = self.register_datagram(&id, &request);
                let kind = Kind::Register {
                    request,
                    retries: 0,
                    cookie: self.cookie.unwrap_or_default(),
                };
                self.start(now, kind, id, op, contents);
            }
            None => return Err(StartError::NotRegistered),
            Some((session, key)) => {
                self.seq += 1;
                let contents = Builder::new(wire::KIND_REQUEST, &id)
                    .bytes(&self.peer.0)
                    .u64(session)
                    .u64(self.seq)
                    .body(&control::encode(&request))
                    .tagged(&key);
                self.start(now, Kind::Request, id, op, contents);
            }
        }
        Ok(op)
    }

    /// Forgets the session (e.g. to register afresh); operations in flight carry on.
    pub fn drop_session(&mut self) {
        self.session = None;
    }

    /// Whether a request under the session with transaction `id` is in flight.
    fn pending_request(&self, id: &Id) -> Result<(), ClientDrop> {
        self.pending
            .iter()
            .any(|p| p.id == *id && matches!(p.kind, Kind::Request))
            .then_some(())
            .ok_or(ClientDrop::Unmatched)
    }

    fn take(&mut self, id: &Id) -> Option<Pending> {
        let at = self.pending.iter().position(|p| p.id == *id)?;
        Some(self.pending.swap_remove(at))
    }

    fn done(&mut self, op: OpId, outcome: Outcome) {
        self.events.push_back(ClientEvent::Done { op, outcome });
    }

    /// Tells the machine whether the caller can take a push now (default: it can). While it
    /// cannot, a push not reported before is neither acknowledged nor reported
    /// ([`ClientDrop::NoPushRoom`]): the rendezvous sends it again (after 0.2, 0.6, 1.4 and
    /// 3 s by default), so a burst beyond the caller's queue delays pushes instead of losing
    /// them. A copy of a push already reported is acknowledged again either way.
    pub fn set_push_room(&mut self, room: bool) {
        self.push_room = room;
    }

    /// Handles one control datagram that came from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ClientDrop> {
        if from != self.server {
            return Err(ClientDrop::WrongSource);
        }
        match wire::decode(bytes)? {
            Datagram::Cookie { id, cookie } => {
                let mut pending = self.take(&id).ok_or(ClientDrop::Unmatched)?;
                let resend = match &mut pending.kind {
                    Kind::Hello => {
                        self.cookie = Some(cookie);
                        self.done(pending.op, Outcome::Cookie);
                        return Ok(());
                    }
                    // The answer to an earlier copy, sent before the fresh cookie was used:
                    // the Register under it is on its way.
                    Kind::Register { cookie: used, .. } if *used == cookie => None,
                    Kind::Register {
                        request,
                        retries,
                        cookie: used,
                    } => {
                        if *retries >= MAX_COOKIE_RETRIES {
                            self.done(pending.op, Outcome::TimedOut);
                            return Ok(());
                        }
                        *retries += 1;
                        *used = cookie;
                        Some(request.clone())
                    }
                    // A cookie answers no request; put it back untouched.
                    Kind::Request => {
                        self.pending.push(pending);
                        return Err(ClientDrop::Unmatched);
                    }
                };
                if let Some(request) = resend {
                    self.cookie = Some(cookie);
                    pending.contents = self.register_datagram(&id, &request);
                    self.transmits.push_back(pending.contents.clone());
                    pending.sent = 1;
                    pending.next = now + self.config.rto;
                }
                self.pending.push(pending);
            }
            Datagram::Registered {
                id,
                session,
                key,
                body,
                tagged,
                tag,
            } => {
                if !self
                    .pending
                    .iter()
                    .any(|p| p.id == id && matches!(p.kind, Kind::Register { .. }))
                {
                    return Err(ClientDrop::Unmatched);
                }
                // A refusal carries no session (tagged under zeros). Pinned, the key is
                // derived and the tag must verify under it: only the pinned rendezvous
                // can have made it.
                let key = match &self.pinned {
                    Some(pair) if session != 0 => super::server::pinned_session_key(pair, session),
                    _ => key,
                };
                if !wire::verify_tag(&key, tagged, &tag) {
                    return Err(ClientDrop::Tag);
                }
                let response: Response = wire::decode_body(body)?;
                if self.pinned.is_some()
                    && session == 0
                    && !matches!(response, Response::Refused { .. })
                {
                    return Err(ClientDrop::Tag);
                }
                let pending = self.take(&id).expect("found above");
                if matches!(response, Response::Registered { .. }) {
                    self.session = Some((session, key));
                    self.seq = 0;
                }
                self.done(pending.op, Outcome::Response(response));
            }
            Datagram::Response {
                id,
                session,
                body,
                tagged,
                tag,
            } => {
                let key = self.session_key(session)?;
                if !wire::verify_tag(&key, tagged, &tag) {
                    return Err(ClientDrop::Tag);
                }
                self.pending_request(&id)?;
                let response: Response = wire::decode_body(body)?;
                let pending = self.take(&id).expect("found above");
                self.done(pending.op, Outcome::Response(response));
            }
            Datagram::Unknown { id, session } => {
                // Unauthenticated, but it must name our session and an ID only we and the
                // rendezvous have seen.
                self.session_key(session)?;
                self.pending_request(&id)?;
                let pending = self.take(&id).expect("found above");
                self.session = None;
                self.done(pending.op, Outcome::UnknownSession);
            }
            Datagram::Push {
                id,
                session,
                body,
                tagged,
                tag,
            } => {
                let key = self.session_key(session)?;
                if !wire::verify_tag(&key, tagged, &tag) {
                    return Err(ClientDrop::Tag);
                }
                let push: Push = wire::decode_body(body)?;
                let reported = self.recent_pushes.contains(&id);
                if !reported && !self.push_room {
                    return Err(ClientDrop::NoPushRoom);
                }
                let ack = Builder::new(wire::KIND_PUSH_ACK, &id)
                    .bytes(&self.peer.0)
                    .u64(session)
                    .tagged(&key);
                self.transmits.push_back(ack);
                if !reported {
                    if self.recent_pushes.len() >= RECENT_PUSHES {
                        self.recent_pushes.pop_front();
                    }
                    self.recent_pushes.push_back(id);
                    self.events.push_back(ClientEvent::Push(push));
                }
            }
            Datagram::Hello { .. }
            | Datagram::Register { .. }
            | Datagram::Request { .. }
            | Datagram::PushAck { .. } => return Err(ClientDrop::WrongDirection),
        }
        Ok(())
    }

    fn session_key(&self, session: u64) -> Result<SessionKey, ClientDrop> {
        match self.session {
            Some((held, key)) if held == session => Ok(key),
            _ => Err(ClientDrop::OtherSession),
        }
    }

    /// The next datagram to send to the rendezvous.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.next.min(p.deadline)).min()
    }

    /// Retransmits what is due and fails what passed its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let pending = &mut self.pending[i];
            if pending.deadline <= now {
                let pending = self.pending.swap_remove(i);
                self.done(pending.op, Outcome::TimedOut);
                continue;
            }
            if pending.next <= now {
                let gap =
                    (self.config.rto * 2u32.saturating_pow(pending.sent)).min(self.config.max_rto);
                pending.sent += 1;
                pending.next = now + gap;
                self.transmits.push_back(pending.contents.clone());
            }
            i += 1;
        }
    }
}
