//! Control over project datagrams on the rendezvous's UDP port (docs/PROTOCOL.md section
//! 4.1): the thin driver of `p2pnat_proto::rv::server`. Datagrams come from the main
//! socket's side channel; requests are decided by `requests::handle`, exactly as over QUIC
//! and TLS; answers leave at once and pushes (and their retransmissions) from [`drive`].
//!
//! A Register's signature check (tens of µs, the one costly step) runs off the receive path,
//! on [`Verifiers`] threads (one per core, at most 4), and only for Registers under a valid
//! cookie: a spoofed source cannot make the rendezvous check signatures. At most
//! [`VERIFY_QUEUE`] wait; more are dropped (the node retransmits). A verifier takes every
//! Register waiting (up to [`verify::MAX_BATCH`]) and checks their signatures together
//! ([`verify_registers`]: ed25519-dalek's batch check, the one-by-one verdicts except for
//! signatures with a small-order part that only the key's holder can make; about 70% of the
//! cost each when Registers queue up, as under load; one at a time when they do not).

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use p2pnat::socket::NodeSocket;
use p2pnat_proto::control::{Push, RefusalCode, Request, Response};
use p2pnat_proto::rv::server::{pinned_key, Inbound, Prescreen, Server, ServerDrop};
use p2pnat_proto::rv::verify::{self, verify_registers};
use p2pnat_proto::PeerId;
use tokio::time::Instant;

use crate::metrics::{Dropped, METRICS};
use crate::requests::{handle as handle_request, Link, Owner, DATAGRAM_OWNER};
use crate::server::State;

fn owner(from: SocketAddr) -> Owner {
    Owner {
        conn: DATAGRAM_OWNER,
        link: Link::Datagram { remote: from },
    }
}

fn machine(state: &State) -> std::sync::MutexGuard<'_, Server> {
    state.dgram.lock().expect("datagram machine lock")
}

/// Sends what the machine has queued.
fn flush(state: &State, socket: &NodeSocket) {
    loop {
        let Some(transmit) = machine(state).poll_transmit() else {
            return;
        };
        if let Err(e) = socket.send_raw(transmit.destination, &transmit.contents) {
            tracing::debug!(to = %transmit.destination, "control datagram not sent: {e}");
        }
    }
}

/// Registers waiting for their signature check.
pub const VERIFY_QUEUE: usize = 4096;

type Job = (SocketAddr, Vec<u8>);

/// Threads that check Registers' signatures and then handle them.
pub struct Verifiers {
    jobs: SyncSender<Job>,
}

impl Verifiers {
    pub fn start(state: Arc<State>, socket: Arc<NodeSocket>) -> std::io::Result<Self> {
        let (jobs, queue) = sync_channel::<Job>(VERIFY_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let runtime = tokio::runtime::Handle::current();
        for n in 0..threads {
            let (state, socket, queue) = (state.clone(), socket.clone(), queue.clone());
            let runtime = runtime.clone();
            std::thread::Builder::new()
                .name(format!("verify-{n}"))
                .spawn(move || {
                    // Inside the runtime: `requests::handle` may spawn (QUIC pushes).
                    let _entered = runtime.enter();
                    verify_loop(&state, &socket, &queue);
                })?;
        }
        Ok(Verifiers { jobs })
    }
}

fn verify_loop(state: &State, socket: &NodeSocket, queue: &Mutex<Receiver<Job>>) {
    let mut batch: Vec<Job> = Vec::with_capacity(verify::MAX_BATCH);
    loop {
        {
            let queue = queue.lock().expect("verify queue lock");
            let Ok(job) = queue.recv() else { return };
            batch.push(job);
            while batch.len() < verify::MAX_BATCH {
                let Ok(job) = queue.try_recv() else { break };
                batch.push(job);
            }
        }
        let datagrams: Vec<&[u8]> = batch.iter().map(|(_, bytes)| bytes.as_slice()).collect();
        let verdicts = verify_registers(&datagrams);
        for ((from, bytes), good) in batch.drain(..).zip(verdicts) {
            if good {
                handle(state, socket, from, &bytes, true);
            } else {
                METRICS.count_drop(Dropped::DatagramAuthFailure);
                tracing::debug!(%from, "control datagram dropped: registration signature does not verify");
            }
        }
    }
}

/// Takes one control datagram from `from`: Registers under a valid cookie go to the
/// verifiers, everything else is handled here.
pub fn receive(
    state: &State,
    socket: &NodeSocket,
    verifiers: &Verifiers,
    from: SocketAddr,
    bytes: Vec<u8>,
) {
    let now = Instant::now().into_std();
    let screened = machine(state).prescreen(now, from, &bytes);
    match screened {
        Prescreen::Verify => match verifiers.jobs.try_send((from, bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                METRICS.count_drop(Dropped::DatagramVerifyQueue);
                tracing::debug!(%from, "registration dropped: the signature checks are behind");
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!("registration dropped: no signature checker runs");
            }
        },
        Prescreen::Handle => handle(state, socket, from, &bytes, false),
    }
}

/// Handles one control datagram from `from` (`verified`: a Register whose signature
/// [`verify_registers`] accepted).
fn handle(state: &State, socket: &NodeSocket, from: SocketAddr, bytes: &[u8], verified: bool) {
    let now = Instant::now().into_std();
    let inbound = if verified {
        machine(state).handle_verified(now, from, bytes)
    } else {
        machine(state).handle(now, from, bytes)
    };
    match inbound {
        Err(e) => {
            METRICS.count_drop(match e {
                ServerDrop::Wire(_) | ServerDrop::NotRegister | ServerDrop::WrongDirection => {
                    Dropped::DatagramMalformed
                }
                _ => Dropped::DatagramAuthFailure,
            });
            tracing::debug!(%from, "control datagram dropped: {e}");
        }
        Ok(None) => {}
        Ok(Some(Inbound::Register {
            id,
            peer,
            request,
            from,
            pinned,
        })) => {
            let _span =
                tracing::info_span!("node", peer = %peer, remote = %from, over = "udp").entered();
            // The pair key (one X25519) before any lock.
            let pair = match (pinned, &state.identity_secret) {
                (false, _) => None,
                (true, Some(own)) => match pinned_key(own, &peer) {
                    Some(pair) => Some(pair),
                    None => {
                        METRICS.count_drop(Dropped::DatagramMalformed);
                        tracing::debug!("pinned registration from a key with no pair key");
                        return;
                    }
                },
                (true, None) => {
                    let refused = Response::Refused {
                        code: RefusalCode::BadRequest,
                        message: "this rendezvous cannot answer pinned registrations".into(),
                    };
                    machine(state).refuse(id, from, &refused);
                    flush(state, socket);
                    return;
                }
            };
            let response = handle_request(state, peer, &owner(from), request);
            let mut machine = machine(state);
            if matches!(response, Response::Registered { .. }) {
                if !machine.accept(id, peer, from, pair.as_ref(), &response) {
                    METRICS.count_drop(Dropped::RegisterQuota);
                    let full = Response::Refused {
                        code: RefusalCode::RegistryFull,
                        message: "no room for another session".into(),
                    };
                    machine.refuse(id, from, &full);
                }
            } else {
                machine.refuse(id, from, &response);
            }
        }
        Ok(Some(Inbound::Request {
            id,
            peer,
            request,
            from,
            moved,
            duplicate,
        })) => {
            let _span =
                tracing::info_span!("node", peer = %peer, remote = %from, over = "udp").entered();
            if moved {
                tracing::debug!("observed address moved (NAT rebinding)");
                state
                    .registry
                    .lock()
                    .expect("registry lock")
                    .set_observed(&peer, from);
            }
            // A copy of a Connect already acted on is answered like a Lookup: it pushes
            // nothing new.
            let request = match request {
                Request::Connect { peer } if duplicate => Request::Lookup { peer },
                other => other,
            };
            let unregister = matches!(request, Request::Unregister);
            let response = handle_request(state, peer, &owner(from), request);
            let mut machine = machine(state);
            machine.respond(id, &peer, from, &response);
            if unregister {
                // Answered under the session first; then the session goes too.
                machine.forget(&peer);
            }
        }
        Ok(Some(Inbound::PushAcked { peer })) => {
            tracing::trace!(peer = %peer.short(), "push acknowledged");
        }
    }
    flush(state, socket);
}

/// Pushes `push` to `target`'s datagram session (sent by [`drive`]).
pub fn push(state: &State, target: &PeerId, push: &Push) {
    let now = Instant::now().into_std();
    if machine(state).push(now, target, push) {
        tracing::debug!("punch request pushed (datagram)");
        state.dgram_wake.notify_one();
    } else {
        METRICS.count_drop(Dropped::DatagramPushQuota);
        tracing::debug!("punch request not pushed: no session, or too many pushes in flight");
    }
}

/// The registration of `peer` expired: its session goes too, and its owner entry if that
/// is a datagram one (a connection's goes when the connection closes).
pub fn forget(state: &State, peer: &PeerId) {
    machine(state).forget(peer);
    let mut owners = state.owners.lock().expect("owners lock");
    if owners
        .get(peer)
        .is_some_and(|o| matches!(o.link, Link::Datagram { .. }))
    {
        owners.remove(peer);
    }
}

/// Sends pushes and their retransmissions, forever.
pub async fn drive(state: Arc<State>, socket: Arc<NodeSocket>) {
    let _alive = crate::http::loop_guard("control datagrams");
    loop {
        let next = {
            let mut machine = machine(&state);
            machine.handle_timeout(Instant::now().into_std());
            machine.poll_timeout()
        };
        flush(&state, &socket);
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = state.dgram_wake.notified() => {}
                }
            }
            None => state.dgram_wake.notified().await,
        }
    }
}
