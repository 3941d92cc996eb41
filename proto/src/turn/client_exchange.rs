//! The request/response side of the [`TurnClient`]: building and tracking requests, checking
//! responses (transaction, method, MESSAGE-INTEGRITY) and acting on their outcome, including
//! the 401/438 exchange and losing or failing an allocation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{
    ErrorCode, MessageIntegrity, Nonce, Realm, UserName, XorMappedAddress,
};
use stun_rs::attributes::turn::{
    ChannelNumber, LifeTime, RequestedTrasport, XorPeerAddress, XorRelayedAddress,
};
use stun_rs::{
    Algorithm, AlgorithmId, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessage, StunMessageBuilder, TransactionId,
};

use super::wire;
use super::{
    Allocation, AllocationFailure, ClientEvent, Phase, State, Transaction, TurnClient,
    TurnClientError, TxKind, DEFAULT_LIFETIME, MAX_RESPONSE, MAX_STALE_RETRIES,
};

impl TurnClient {
    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        header: &wire::Header,
        message: &[u8],
    ) -> Result<(), TurnClientError> {
        if message.len() > MAX_RESPONSE {
            return Err(TurnClientError::TooLarge(message.len()));
        }
        let tx = self
            .transactions
            .get(&header.transaction_id)
            .ok_or(TurnClientError::UnknownTransaction)?;
        let decoder = MessageDecoderBuilder::default().build();
        let (response, _) = decoder
            .decode(message)
            .map_err(|e| TurnClientError::Decode(format!("{e:?}")))?;
        if response.method() != tx.kind.method() {
            return Err(TurnClientError::Unexpected(header.msg_type));
        }
        let success = response.class() == MessageClass::SuccessResponse;
        if let Some(key) = &tx.key {
            match response.get::<MessageIntegrity>() {
                Some(attribute) => {
                    let input = stun_rs::get_input_text::<MessageIntegrity>(message)
                        .ok_or(TurnClientError::IntegrityFailed)?;
                    let valid = attribute
                        .as_message_integrity()
                        .is_ok_and(|mi| mi.validate(&input, key));
                    if !valid {
                        return Err(TurnClientError::IntegrityFailed);
                    }
                }
                None if success => return Err(TurnClientError::MissingIntegrity),
                None => {}
            }
        }
        let tx = self
            .transactions
            .remove(&header.transaction_id)
            .expect("looked up above");
        if success {
            self.on_success(now, tx.kind, &response);
            return Ok(());
        }
        let (code, reason) = response
            .get::<ErrorCode>()
            .and_then(|a| a.as_error_code().ok())
            .map(|e| {
                (
                    e.error_code().error_code(),
                    e.error_code().reason().to_owned(),
                )
            })
            .unwrap_or((400, "error response without ERROR-CODE".to_owned()));
        self.learn_challenge(&response);
        match code {
            // The challenge (first request), a stale nonce, or credentials the server stopped
            // taking (new ones may have been set since): retry, a bounded number of times.
            401 | 438 if self.key.is_some() && tx.stale_retries < MAX_STALE_RETRIES => {
                self.start(now, tx.kind, tx.stale_retries + 1)
            }
            _ => self.on_failure(now, tx.kind, Some((code, reason))),
        }
        Ok(())
    }

    /// Takes REALM and NONCE from a 401/438 (or any response carrying them); a new realm
    /// rebuilds the key.
    fn learn_challenge(&mut self, response: &StunMessage) {
        if let Some(nonce) = response.get::<Nonce>().and_then(|a| a.as_nonce().ok()) {
            self.nonce = Some(nonce.as_str().to_owned());
        }
        let realm = response
            .get::<Realm>()
            .and_then(|a| a.as_realm().ok())
            .map(|r| r.as_str().to_owned());
        match realm {
            Some(realm) if self.realm.as_deref() != Some(&realm) => {
                self.realm = Some(realm);
                self.rebuild_key();
            }
            _ => {}
        }
    }

    pub(super) fn rebuild_key(&mut self) {
        self.key = self.realm.as_ref().and_then(|realm| {
            HMACKey::new_long_term(
                &self.username,
                realm,
                &self.password,
                Algorithm::new(AlgorithmId::MD5, None),
            )
            .ok()
        });
    }

    fn on_success(&mut self, now: Instant, kind: TxKind, response: &StunMessage) {
        let lifetime = response
            .get::<LifeTime>()
            .and_then(|a| a.as_life_time().ok())
            .map(|l| Duration::from_secs(u64::from(l.as_u32())));
        match kind {
            TxKind::Allocate => {
                let relayed = response
                    .get::<XorRelayedAddress>()
                    .and_then(|a| a.as_xor_relayed_address().ok())
                    .map(|a| *a.socket_address());
                let Some(relayed) = relayed else {
                    let reason = AllocationFailure::Malformed("no XOR-RELAYED-ADDRESS");
                    return self.allocation_failed(now, reason, None);
                };
                let mapped = response
                    .get::<XorMappedAddress>()
                    .and_then(|a| a.as_xor_mapped_address().ok())
                    .map(|a| *a.socket_address());
                let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
                self.phase = Phase::Allocated(Allocation {
                    relayed,
                    mapped,
                    expires_at: now + lifetime,
                    refresh_at: now + self.refresh_delay(lifetime),
                    refreshing: false,
                });
                self.backoff = self.config.backoff_initial;
                self.counters.allocations += 1;
                self.events.push_back(ClientEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
                // Everything wanted is (re)installed on this allocation.
                for permission in self.permissions.values_mut() {
                    permission.in_flight = false;
                    permission.due = now;
                }
                for channel in self.channels.values_mut() {
                    channel.in_flight = false;
                    channel.due = now;
                }
            }
            TxKind::Refresh { .. } => {
                let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME);
                let delay = self.refresh_delay(lifetime);
                if let Phase::Allocated(allocation) = &mut self.phase {
                    allocation.expires_at = now + lifetime;
                    allocation.refresh_at = now + delay;
                    allocation.refreshing = false;
                    self.events.push_back(ClientEvent::Refreshed { lifetime });
                }
            }
            TxKind::CreatePermission { ips } => {
                for ip in ips {
                    if let Some(permission) = self.permissions.get_mut(&ip) {
                        permission.in_flight = false;
                        if permission.state != State::Failed {
                            permission.state = State::Installed;
                            permission.due = now + self.config.permission_refresh;
                        }
                    }
                }
            }
            TxKind::ChannelBind { channel, peer } => {
                let Some(entry) = self.channels.get_mut(&peer).filter(|c| c.number == channel)
                else {
                    return;
                };
                entry.in_flight = false;
                entry.due = now + self.config.channel_refresh;
                if entry.state != State::Installed {
                    entry.state = State::Installed;
                    self.events
                        .push_back(ClientEvent::ChannelBound { peer, channel });
                }
                // A ChannelBind installs or refreshes the permission for the peer's IP.
                if let Some(permission) = self.permissions.get_mut(&peer.ip()) {
                    if permission.state == State::Pending {
                        permission.state = State::Installed;
                    }
                    if !permission.in_flight && permission.state == State::Installed {
                        permission.due = now + self.config.permission_refresh;
                    }
                }
            }
        }
    }

    /// A request failed: `error` is the final error response, `None` a timeout.
    pub(super) fn on_failure(&mut self, now: Instant, kind: TxKind, error: Option<(u16, String)>) {
        let code = error.as_ref().map(|(code, _)| *code);
        if code == Some(437) && kind != TxKind::Allocate {
            // Allocation Mismatch: the server has no allocation for us any more.
            let (code, reason) = error.unwrap_or_default();
            return self.allocation_lost(now, AllocationFailure::Error { code, reason });
        }
        match kind {
            TxKind::Allocate => {
                let reason = match error {
                    Some((code, reason)) => AllocationFailure::Error { code, reason },
                    None => AllocationFailure::Timeout,
                };
                self.allocation_failed(now, reason, code);
            }
            TxKind::Refresh { .. } => {
                let retry = self.config.refresh_retry;
                if let Phase::Allocated(allocation) = &mut self.phase {
                    allocation.refreshing = false;
                    allocation.refresh_at = now + retry;
                }
            }
            TxKind::CreatePermission { ips } if ips.len() > 1 && code.is_some() => {
                // CreatePermission is all or nothing: one refused peer (403 from a server that
                // relays only to registered peers) must not fail the others, so ask again for
                // each alone to learn which.
                for ip in ips {
                    self.start(now, TxKind::CreatePermission { ips: vec![ip] }, 0);
                }
            }
            TxKind::CreatePermission { ips } => {
                for ip in ips {
                    if let Some(permission) = self.permissions.get_mut(&ip) {
                        permission.in_flight = false;
                        permission.state = State::Failed;
                        self.events
                            .push_back(ClientEvent::PermissionFailed { ip, code });
                    }
                }
            }
            TxKind::ChannelBind { channel, peer } => {
                if let Some(entry) = self.channels.get_mut(&peer).filter(|c| c.number == channel) {
                    entry.in_flight = false;
                    entry.state = State::Failed;
                    self.events
                        .push_back(ClientEvent::ChannelFailed { peer, code });
                }
            }
        }
    }

    /// An Allocate failed: report it and wait (doubling; longer after 486 quota).
    fn allocation_failed(&mut self, now: Instant, reason: AllocationFailure, code: Option<u16>) {
        let mut wait = self.backoff;
        if code == Some(486) {
            wait = wait.max(self.config.quota_backoff);
        }
        self.transactions.clear();
        self.transmits.clear();
        if code == Some(437) {
            // Our 5-tuple still holds an allocation the server knows and we do not: delete it
            // (best effort) so that the next Allocate can succeed.
            if let Some(bytes) = self
                .build(&TxKind::Refresh { lifetime: Some(0) })
                .map(|b| b.0)
            {
                self.transmits.push_back(bytes);
            }
        }
        self.backoff = (self.backoff * 2).min(self.config.backoff_max);
        self.phase = Phase::Backoff { until: now + wait };
        self.events.push_back(ClientEvent::AllocationFailed {
            reason,
            retry_in: wait,
        });
    }

    /// The allocation is gone (437, expiry): report it and allocate again at once.
    pub(super) fn allocation_lost(&mut self, now: Instant, reason: AllocationFailure) {
        // Requests queued for the lost allocation would only draw 437s.
        self.transactions.clear();
        self.transmits.clear();
        for permission in self.permissions.values_mut() {
            permission.in_flight = false;
            if permission.state == State::Installed {
                permission.state = State::Pending;
            }
        }
        for channel in self.channels.values_mut() {
            channel.in_flight = false;
            if channel.state == State::Installed {
                channel.state = State::Pending;
            }
        }
        self.events.push_back(ClientEvent::AllocationFailed {
            reason,
            retry_in: Duration::ZERO,
        });
        self.phase = Phase::Allocating;
        self.start(now, TxKind::Allocate, 0);
    }

    fn refresh_delay(&self, lifetime: Duration) -> Duration {
        if lifetime > self.config.refresh_margin * 2 {
            lifetime - self.config.refresh_margin
        } else {
            lifetime / 2
        }
    }

    /// Encodes a request of `kind` with a fresh transaction ID (authenticated once a realm and
    /// nonce are known). `None` if it cannot be encoded (credentials stun-rs refuses).
    pub(super) fn build(&mut self, kind: &TxKind) -> Option<(Vec<u8>, [u8; 12], Option<HMACKey>)> {
        let txid = self.rng.transaction_id();
        let mut builder = StunMessageBuilder::new(kind.method(), MessageClass::Request)
            .with_transaction_id(TransactionId::from(txid));
        match kind {
            TxKind::Allocate => {
                builder = builder.with_attribute(RequestedTrasport::from(stun_rs::protocols::UDP));
                if let Some(lifetime) = self.config.requested_lifetime {
                    builder = builder.with_attribute(LifeTime::from(lifetime));
                }
            }
            TxKind::Refresh { lifetime } => {
                if let Some(lifetime) = lifetime.or(self.config.requested_lifetime) {
                    builder = builder.with_attribute(LifeTime::from(lifetime));
                }
            }
            TxKind::CreatePermission { ips } => {
                for ip in ips {
                    builder = builder.with_attribute(XorPeerAddress::from(SocketAddr::new(*ip, 0)));
                }
            }
            TxKind::ChannelBind { channel, peer } => {
                builder = builder
                    .with_attribute(ChannelNumber::new(*channel))
                    .with_attribute(XorPeerAddress::from(*peer));
            }
        }
        let key = match (&self.key, &self.realm, &self.nonce) {
            (Some(key), Some(realm), Some(nonce)) => {
                builder = builder
                    .with_attribute(UserName::new(&self.username).ok()?)
                    .with_attribute(Realm::new(realm).ok()?)
                    .with_attribute(Nonce::new(nonce).ok()?)
                    .with_attribute(MessageIntegrity::new(key.clone()));
                Some(key.clone())
            }
            _ => None,
        };
        let mut buffer = vec![0u8; MAX_RESPONSE];
        let size = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buffer, &builder.build())
            .ok()?;
        buffer.truncate(size);
        Some((buffer, txid, key))
    }

    /// Sends a new request and tracks it for retransmission.
    pub(super) fn start(&mut self, now: Instant, kind: TxKind, stale_retries: u8) {
        let Some((bytes, txid, key)) = self.build(&kind) else {
            return self.on_failure(now, kind, None);
        };
        self.transmits.push_back(bytes.clone());
        self.counters.requests += 1;
        self.transactions.insert(
            txid,
            Transaction {
                kind,
                bytes,
                key,
                attempts: 1,
                rto: self.config.rto,
                deadline: now + self.config.rto,
                stale_retries,
            },
        );
    }
}
