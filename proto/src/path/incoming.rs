//! The agent's incoming side: a project datagram's decoding, a check's reply and the checks it
//! triggers (bounded for strangers: docs/PROTOCOL.md section 8), and a reply's pair success and
//! selection. Split from `agent.rs`; the same `PathAgent`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::agent::{PathAgent, PathError, Transmit};
use super::pairs::{class, PairState};
use super::wire::{CheckBody, CheckDatagram};
use super::LocalSocketId;

impl PathAgent {
    pub(super) fn datagram(
        &mut self,
        now: Instant,
        local: LocalSocketId,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), PathError> {
        let datagram = CheckDatagram::decode(bytes)?;
        if datagram.receiver != self.own() {
            return Err(PathError::NotForUs);
        }
        match datagram.body {
            CheckBody::Check { .. } => self.check_arrived(now, local, from, bytes, &datagram),
            CheckBody::Reply { .. } => self.reply_arrived(now, local, from, bytes, &datagram),
            CheckBody::SweepOffer { .. } | CheckBody::SweepGo { .. } => {
                self.sweep_message_arrived(now, local, from, bytes, &datagram)
            }
        }
    }

    fn check_arrived(
        &mut self,
        now: Instant,
        local: LocalSocketId,
        from: SocketAddr,
        bytes: &[u8],
        datagram: &CheckDatagram,
    ) -> Result<(), PathError> {
        let CheckBody::Check { heartbeat, relayed } = datagram.body else {
            return Ok(());
        };
        let peer = datagram.sender;
        let key = match self.peers.get(&peer) {
            Some(state) => state.key.clone(),
            None => {
                if !self.stranger_keys.take(now, ()) {
                    return Err(PathError::StrangerRateLimited);
                }
                self.secret.pair_key(&peer)?
            }
        };
        if !CheckDatagram::verify(bytes, &key) {
            return Err(PathError::BadTag);
        }
        let reply = CheckDatagram {
            transaction: datagram.transaction,
            sender: self.own(),
            receiver: peer,
            body: CheckBody::Reply { observed: from },
        };
        self.replies.push_back(Transmit {
            local,
            destination: from,
            contents: reply.encode(&key),
        });
        self.counters.replies_sent += 1;
        let config = self.config;
        let state = self.peer_state(now, peer)?;
        let selected = state.selected;
        let trusted = state.connected || state.round_until.is_some_and(|until| until > now);
        let direct = !relayed && local != LocalSocketId::RELAY && state.peer_relayed != Some(from);
        if config.relay_only && direct {
            return Ok(());
        }
        if let Some(pair) = state.pair_or_insert(local, from, config.max_pairs) {
            if relayed {
                super::relay::mark_relayed(pair, selected);
            }
            let is_selected = Some(pair.path) == selected;
            if heartbeat && !is_selected {
                pair.follow = true;
            }
            if pair.state != PairState::Succeeded || (heartbeat && !is_selected) {
                // A check's source may be spoofed (its tag proves only that some identity
                // made it): outside a round with this peer, or a connection to it, it gets
                // its reply and one check back, not a round of them (amplification bound,
                // docs/PROTOCOL.md section 8). A genuine peer's punch request starts the round.
                let window = if trusted {
                    config.check_timeout
                } else {
                    Duration::ZERO
                };
                pair.schedule(now, now + window);
                pair.triggered = true;
            }
            let path = pair.path;
            // QUIC from here may be decrypted now (quinn authenticates every packet itself).
            self.route_to_peer(peer, path, false);
            // The peer's handshake may arrive before our own check succeeds: without a path,
            // quinn's answer would be lost and retried only after its 1 s timeout (seen in
            // netsim as a 1 s first message in one run of three).
            if selected.is_none() {
                self.select(now, peer, path, None, true);
            }
        }
        Ok(())
    }

    fn reply_arrived(
        &mut self,
        now: Instant,
        local: LocalSocketId,
        from: SocketAddr,
        bytes: &[u8],
        datagram: &CheckDatagram,
    ) -> Result<(), PathError> {
        let outstanding = *self
            .outstanding
            .get(&datagram.transaction)
            .ok_or(PathError::UnknownTransaction)?;
        if outstanding.peer != datagram.sender {
            return Err(PathError::UnknownTransaction);
        }
        let state = self
            .peers
            .get_mut(&outstanding.peer)
            .ok_or(PathError::UnknownTransaction)?;
        if !CheckDatagram::verify(bytes, &state.key) {
            return Err(PathError::BadTag);
        }
        self.outstanding.remove(&datagram.transaction);
        if outstanding.path.local != local || outstanding.path.remote != from {
            return Err(PathError::ReplyFromElsewhere {
                from,
                expected: outstanding.path.remote,
            });
        }
        state.last_activity = now;
        // A birthday probe has no pair until it is answered.
        let limit = state.pair_limit(self.config.max_pairs);
        let Some(pair) = state.pair_or_insert(local, from, limit) else {
            return Ok(());
        };
        let rtt = now.saturating_duration_since(outstanding.sent);
        pair.state = PairState::Succeeded;
        pair.last_reply = Some(now);
        pair.rtt = Some(rtt);
        pair.triggered = false;
        pair.next_check = None;
        pair.check_until = None;
        let (path, follow) = (pair.path, pair.follow);
        let replace = match state.selected {
            None => true,
            Some(current) if current == path => state.provisional,
            Some(current) => {
                let current_alive = state
                    .pairs
                    .iter()
                    .find(|p| p.path == current)
                    .and_then(|p| p.last_reply)
                    .is_some_and(|t| now.saturating_duration_since(t) < self.config.path_timeout);
                let (new_class, old_class) = (class(&path), class(&current));
                new_class > old_class || (follow && new_class == old_class) || !current_alive
            }
        };
        if replace {
            self.select(now, outstanding.peer, path, Some(rtt), false);
        }
        Ok(())
    }
}
