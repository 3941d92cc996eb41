//! A control session with the rendezvous over project datagrams on the node's one socket
//! (docs/PROTOCOL.md section 4.1): the thin driver of `p2pnat_proto::rv::client`.
//!
//! The socket hands every control datagram it receives to the session's channel
//! ([`NodeSocket::set_control_route`]); one task feeds them to the machine, sends what the
//! machine queues, runs its timers, wakes the waiting requests and forwards pushes. A session
//! is "connected" once the rendezvous answered a Hello; it closes when the rendezvous says it
//! holds no session for the node (it restarted or the registration expired), or on
//! [`DgramSession::close`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use p2pnat_proto::control::{Push, Request, Response};
use p2pnat_proto::rv::client::{
    Client, ClientConfig, ClientDrop, ClientEvent, OpId, Outcome, StartError,
};
use p2pnat_proto::PeerId;
use tokio::sync::{mpsc, oneshot, Notify};

use super::rendezvous_client::RendezvousError;
use crate::identity::Identity;
use crate::socket::{ControlDatagram, NodeSocket};

/// Control datagrams waiting for the session's task; more are dropped (the rendezvous
/// retransmits what matters).
const INBOX: usize = 256;

/// One datagram control session. See the module documentation.
pub struct DgramSession {
    client: Mutex<Client>,
    waiters: Mutex<HashMap<OpId, oneshot::Sender<Outcome>>>,
    pushes: Mutex<Option<mpsc::Sender<Push>>>,
    wake: Notify,
    closed: AtomicBool,
    closed_notify: Notify,
    /// Why it closed, once it has.
    reason: Mutex<Option<String>>,
    server: SocketAddr,
    route: mpsc::Sender<ControlDatagram>,
    socket: Arc<NodeSocket>,
}

impl DgramSession {
    /// Starts a session with the rendezvous at `server` and waits (at most the machine's
    /// deadline, 5 s) for its answer to a Hello.
    ///
    /// `pinned`: the rendezvous's key, when the user pinned it: the session is then keyed by
    /// both identities and a rendezvous without that key cannot answer the registration.
    pub async fn connect(
        socket: Arc<NodeSocket>,
        identity: &Identity,
        server: SocketAddr,
        pinned: Option<PeerId>,
    ) -> Result<Arc<Self>, String> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
        let mut client = Client::new(
            ClientConfig::default(),
            identity.signing_key().clone(),
            server,
            seed,
        );
        if let Some(pinned) = pinned {
            let pair = identity
                .path_secret()
                .pair_key(&pinned)
                .map_err(|e| format!("pinned rendezvous key {pinned}: {e}"))?;
            client.pin(pair);
        }
        let (route, inbox) = mpsc::channel(INBOX);
        socket.set_control_route(Some(route.clone()));
        let session = Arc::new(DgramSession {
            client: Mutex::new(client),
            waiters: Mutex::new(HashMap::new()),
            pushes: Mutex::new(None),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            reason: Mutex::new(None),
            server,
            route,
            socket: socket.clone(),
        });
        tokio::spawn(drive(session.clone(), inbox));
        // Closed if this future is dropped before the answer (TLS won the race).
        let guard = CloseOnDrop(Some(session.clone()));
        match session.run(|client, now| client.hello(now)).await {
            Ok(Outcome::Cookie) => {
                std::mem::forget(guard);
                Ok(session)
            }
            _ => Err(format!("rendezvous {server} did not answer over UDP")),
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Where pushes go from now on.
    pub fn deliver_pushes(&self, to: mpsc::Sender<Push>) {
        *self.pushes.lock().expect("pushes lock") = Some(to);
    }

    async fn run(
        &self,
        start: impl FnOnce(&mut Client, Instant) -> Result<OpId, StartError>,
    ) -> Result<Outcome, RendezvousError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RendezvousError::NotConnected);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut client = self.client.lock().expect("client lock");
            let op = start(&mut client, Instant::now())
                .map_err(|e| RendezvousError::Stream(e.to_string()))?;
            self.waiters.lock().expect("waiters lock").insert(op, tx);
        }
        self.wake.notify_one();
        rx.await.map_err(|_| RendezvousError::NotConnected)
    }

    /// Sends `request` and waits for the answer (retransmitted for at most 5 s).
    pub async fn request(&self, request: &Request) -> Result<Response, RendezvousError> {
        let request = request.clone();
        match self
            .run(move |client, now| client.request(now, request))
            .await?
        {
            Outcome::Response(response) => Ok(response),
            Outcome::TimedOut => Err(RendezvousError::Timeout),
            Outcome::UnknownSession => {
                self.close("the rendezvous holds no session for this node");
                Err(RendezvousError::Stream(
                    "the rendezvous forgot this node's registration".into(),
                ))
            }
            Outcome::Cookie => Err(RendezvousError::Unexpected),
        }
    }

    /// Completes when the session has closed; says why.
    pub async fn closed(&self) -> String {
        loop {
            let notified = self.closed_notify.notified();
            if self.closed.load(Ordering::Acquire) {
                let reason = self.reason.lock().expect("reason lock").clone();
                return reason.unwrap_or_else(|| "closed".into());
            }
            notified.await;
        }
    }

    /// Closes the session: its task ends, waiting requests fail, and the socket stops
    /// routing control datagrams to it.
    pub fn close(&self, reason: &str) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.reason.lock().expect("reason lock") = Some(reason.to_string());
        self.socket.clear_control_route(&self.route);
        self.waiters.lock().expect("waiters lock").clear();
        self.closed_notify.notify_waiters();
        self.wake.notify_one();
    }
}

struct CloseOnDrop(Option<Arc<DgramSession>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            session.close("abandoned before the rendezvous answered");
        }
    }
}

async fn drive(session: Arc<DgramSession>, mut inbox: mpsc::Receiver<ControlDatagram>) {
    let mut transmits = Vec::new();
    let mut events = Vec::new();
    while !session.closed.load(Ordering::Acquire) {
        let deadline = {
            let mut client = session.client.lock().expect("client lock");
            client.handle_timeout(Instant::now());
            while let Some(transmit) = client.poll_transmit() {
                transmits.push(transmit);
            }
            while let Some(event) = client.poll_event() {
                events.push(event);
            }
            client.poll_timeout()
        };
        for transmit in transmits.drain(..) {
            if let Err(e) = session.socket.send_raw(session.server, &transmit) {
                tracing::debug!(to = %session.server, "control datagram not sent: {e}");
            }
        }
        for event in events.drain(..) {
            match event {
                ClientEvent::Done { op, outcome } => {
                    let waiter = session.waiters.lock().expect("waiters lock").remove(&op);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(outcome);
                    }
                }
                ClientEvent::Push(push) => {
                    let pushes = session.pushes.lock().expect("pushes lock").clone();
                    match pushes {
                        Some(pushes) if pushes.try_send(push).is_ok() => {}
                        // Not expected: room was checked before the datagram was handled.
                        _ => tracing::warn!("push from the rendezvous dropped: nobody takes it"),
                    }
                }
            }
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = session.wake.notified() => {}
            datagram = inbox.recv() => {
                let Some(datagram) = datagram else { break };
                // This task is the pushes' only sender, so room seen here is still there when
                // the push is handed over below.
                let room = session
                    .pushes
                    .lock()
                    .expect("pushes lock")
                    .as_ref()
                    .is_some_and(|pushes| pushes.capacity() > 0);
                let result = {
                    let mut client = session.client.lock().expect("client lock");
                    client.set_push_room(room);
                    client.handle_datagram(Instant::now(), datagram.from, &datagram.bytes)
                };
                match result {
                    Ok(()) => {}
                    Err(ClientDrop::NoPushRoom) => tracing::warn!(
                        "push from the rendezvous not taken yet: the push queue is full; the rendezvous sends it again"
                    ),
                    Err(e) => tracing::debug!(from = %datagram.from, "control datagram dropped: {e}"),
                }
            }
        }
    }
}
