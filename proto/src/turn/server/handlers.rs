//! Request, indication and data handling of [`TurnServer`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{UnknownAttributes, XorMappedAddress};
use stun_rs::attributes::turn::{
    ChannelNumber, Data, EvenPort, LifeTime, RequestedAddressFamily, RequestedTrasport,
    ReservationToken, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH, SEND};
use stun_rs::{AddressFamily, MessageClass, StunMessage};

use super::allocation::{Allocation, BindError, ByteBucket, Phase};
use super::auth::{self, Credentials};
use super::{
    never_relayed, wire, AllocationId, Client, DropReason, Family, Output, PeerPolicy, TurnServer,
};
use crate::path::normalize;
use crate::turn::channel_data::CHANNEL_MIN;

/// Why an authenticated request was refused; each is answered with its STUN error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("bad request")]
    BadRequest,
    #[error("peer not allowed")]
    Forbidden,
    #[error("no allocation for this 5-tuple, or another transaction's")]
    AllocationMismatch,
    #[error("address family not supported")]
    FamilyUnsupported,
    #[error("another user's allocation")]
    WrongCredentials,
    #[error("only UDP relaying is supported")]
    UnsupportedTransport,
    #[error("peer address family differs from the relayed address's")]
    PeerFamilyMismatch,
    #[error("allocation quota of this user reached")]
    Quota,
    #[error("server at capacity")]
    Capacity,
}

impl RequestError {
    pub fn code(self) -> u16 {
        match self {
            RequestError::BadRequest => 400,
            RequestError::Forbidden => 403,
            RequestError::AllocationMismatch => 437,
            RequestError::FamilyUnsupported => 440,
            RequestError::WrongCredentials => 441,
            RequestError::UnsupportedTransport => 442,
            RequestError::PeerFamilyMismatch => 443,
            RequestError::Quota => 486,
            RequestError::Capacity => 508,
        }
    }
}

/// The Allocate success response (XOR-RELAYED-ADDRESS, LIFETIME, XOR-MAPPED-ADDRESS,
/// MESSAGE-INTEGRITY).
pub(super) fn allocate_success(
    allocation: &Allocation,
    relayed: SocketAddr,
    lifetime: Duration,
) -> Vec<u8> {
    wire::response(
        ALLOCATE,
        MessageClass::SuccessResponse,
        allocation.transaction.into(),
        vec![
            XorRelayedAddress::from(relayed).into(),
            LifeTime::new(lifetime.as_secs().try_into().unwrap_or(u32::MAX)).into(),
            XorMappedAddress::from(allocation.client.addr).into(),
        ],
        Some(&allocation.key),
    )
}

fn family_of(addr: SocketAddr) -> Family {
    if addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

fn peer_addresses(message: &StunMessage) -> Vec<SocketAddr> {
    message
        .attributes()
        .iter()
        .filter_map(|a| a.as_xor_peer_address().ok())
        .map(|a| normalize(*a.socket_address()))
        .collect()
}

fn requested_lifetime(message: &StunMessage) -> Option<u32> {
    message
        .get::<LifeTime>()
        .and_then(|a| a.as_life_time().ok())
        .map(|l| l.as_u32())
}

impl TurnServer {
    pub(super) fn client_stun(
        &mut self,
        now: Instant,
        unix_now: u64,
        from: Client,
        datagram: &[u8],
        policy: &dyn PeerPolicy,
    ) -> Result<(), DropReason> {
        let message = wire::decode(datagram).ok_or(DropReason::Malformed)?;
        match message.class() {
            MessageClass::Request => {}
            MessageClass::Indication if message.method() == SEND => {
                return self.send_indication(now, from, &message);
            }
            // A client's keepalive (RFC 8656 section 3.3 suggests Binding indications): it
            // only held its NAT's mapping open; nothing to do.
            MessageClass::Indication if message.method() == BINDING => return Ok(()),
            _ => return Err(DropReason::Unexpected),
        }
        let method = message.method();
        let transaction = *message.transaction_id();
        if method == BINDING {
            let unknown = wire::unknown_required(&message, false);
            let answer = if unknown.is_empty() {
                wire::response(
                    BINDING,
                    MessageClass::SuccessResponse,
                    transaction,
                    vec![XorMappedAddress::from(from.addr).into()],
                    None,
                )
            } else {
                let attribute = UnknownAttributes::from(&unknown[..]);
                wire::error(BINDING, transaction, 420, vec![attribute.into()], None)
            };
            return self.answer_unauthenticated(now, from, datagram.len(), answer);
        }
        if ![ALLOCATE, REFRESH, CREATE_PERMMISSION, CHANNEL_BIND].contains(&method) {
            let answer = wire::error(method, transaction, 400, Vec::new(), None);
            return self.answer_unauthenticated(now, from, datagram.len(), answer);
        }
        let credentials = match auth::authenticate(
            datagram,
            &message,
            &self.secret,
            &self.config.realm,
            &self.nonces,
            unix_now,
            from.addr.ip(),
        ) {
            Ok(credentials) => credentials,
            Err(e) => {
                self.stats.unauthorized += 1;
                let extra = match e {
                    auth::AuthError::Incomplete => Vec::new(),
                    _ => wire::challenge(
                        &self.config.realm,
                        &self.nonces.issue(unix_now, from.addr.ip()),
                    ),
                };
                let answer = wire::error(method, transaction, e.code(), extra, None);
                return self.answer_unauthenticated(now, from, datagram.len(), answer);
            }
        };
        let unknown = wire::unknown_required(&message, false);
        let result = if !unknown.is_empty() {
            let attribute = UnknownAttributes::from(&unknown[..]);
            let answer = wire::error(
                method,
                transaction,
                420,
                vec![attribute.into()],
                Some(&credentials.key),
            );
            Ok(Some(answer))
        } else if method == ALLOCATE {
            self.allocate(now, from, &message, &credentials)
        } else if method == REFRESH {
            self.refresh(now, from, &message, &credentials)
        } else if method == CREATE_PERMMISSION {
            self.create_permission(now, from, &message, &credentials, policy)
        } else {
            self.channel_bind(now, from, &message, &credentials, policy)
        };
        let answer = match result {
            Ok(Some(answer)) => answer,
            Ok(None) => return Ok(()),
            Err(e) => {
                match e {
                    RequestError::Forbidden => self.stats.refused_forbidden += 1,
                    RequestError::Quota | RequestError::Capacity => self.stats.refused_quota += 1,
                    _ => {}
                }
                wire::error(
                    method,
                    transaction,
                    e.code(),
                    Vec::new(),
                    Some(&credentials.key),
                )
            }
        };
        self.transmit_to_client(from, answer);
        Ok(())
    }

    /// Sends an answer to an unauthenticated request within the amplification and rate bounds.
    fn answer_unauthenticated(
        &mut self,
        now: Instant,
        to: Client,
        request_len: usize,
        answer: Vec<u8>,
    ) -> Result<(), DropReason> {
        if answer.len() > super::MAX_AMPLIFICATION * request_len {
            return Err(DropReason::Amplification);
        }
        if !self.unauthenticated.take(now, to.addr.ip()) {
            return Err(DropReason::SourceLimited);
        }
        self.transmit_to_client(to, answer);
        Ok(())
    }

    fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let max = self.config.max_lifetime.max(Duration::from_secs(1));
        let default = self.config.default_lifetime.min(max);
        match requested {
            None => default,
            Some(secs) => Duration::from_secs(secs.into()).clamp(default, max),
        }
    }

    /// The active allocation of `from`, used by the same user.
    fn allocation_of(
        &self,
        from: Client,
        credentials: &Credentials,
    ) -> Result<AllocationId, RequestError> {
        let id = *self
            .by_client
            .get(&from)
            .ok_or(RequestError::AllocationMismatch)?;
        let allocation = &self.allocations[&id];
        if allocation.user != credentials.user {
            return Err(RequestError::WrongCredentials);
        }
        match allocation.phase {
            Phase::Active { .. } => Ok(id),
            Phase::Binding { .. } => Err(RequestError::AllocationMismatch),
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        from: Client,
        message: &StunMessage,
        credentials: &Credentials,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let transaction = *message.transaction_id().as_bytes();
        if let Some(id) = self.by_client.get(&from) {
            let allocation = &self.allocations[id];
            if allocation.transaction != transaction {
                return Err(RequestError::AllocationMismatch);
            }
            // A retransmission: the same answer, or none yet while the socket is being bound.
            return Ok(match &allocation.phase {
                Phase::Active { response, .. } => Some(response.clone()),
                Phase::Binding { .. } => None,
            });
        }
        let transport = message
            .get::<RequestedTrasport>()
            .and_then(|a| a.as_requested_trasport().ok())
            .ok_or(RequestError::BadRequest)?;
        if transport.protocol() != stun_rs::protocols::UDP {
            return Err(RequestError::UnsupportedTransport);
        }
        let even_port = message
            .get::<EvenPort>()
            .and_then(|a| a.as_even_port().ok());
        if message.get::<ReservationToken>().is_some() || even_port.is_some_and(|e| e.reserve()) {
            return Err(RequestError::Capacity);
        }
        let family = match message
            .get::<RequestedAddressFamily>()
            .and_then(|a| a.as_requested_address_family().ok())
            .map(|a| a.family())
        {
            None | Some(AddressFamily::IPv4) => Family::V4,
            Some(AddressFamily::IPv6) => Family::V6,
        };
        if self.allocations.len() >= self.config.max_allocations
            || self.pending >= self.config.max_pending_binds
        {
            return Err(RequestError::Capacity);
        }
        let used = self.per_user.get(&credentials.user).copied().unwrap_or(0);
        if used >= self.config.max_allocations_per_user {
            return Err(RequestError::Quota);
        }
        let lifetime = self.granted_lifetime(requested_lifetime(message));
        let id = AllocationId(self.next_id);
        self.next_id += 1;
        let expires = now + self.config.bind_timeout;
        let allocation = Allocation::new(
            from,
            credentials.clone(),
            transaction,
            Phase::Binding { lifetime },
            expires,
            ByteBucket::new(self.config.max_bytes_per_sec, now),
        );
        self.allocations.insert(id, allocation);
        self.by_client.insert(from, id);
        *self.per_user.entry(credentials.user.clone()).or_insert(0) += 1;
        self.expiries.insert((expires, id));
        self.pending += 1;
        self.push(Output::BindRelay {
            id,
            family,
            even_port: even_port.is_some(),
        });
        Ok(None)
    }

    fn refresh(
        &mut self,
        now: Instant,
        from: Client,
        message: &StunMessage,
        credentials: &Credentials,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let id = self.allocation_of(from, credentials)?;
        let requested = requested_lifetime(message);
        let granted = if requested == Some(0) {
            self.remove(id);
            Duration::ZERO
        } else {
            let lifetime = self.granted_lifetime(requested);
            self.set_expiry(id, now + lifetime);
            lifetime
        };
        let lifetime = LifeTime::new(granted.as_secs().try_into().unwrap_or(u32::MAX));
        Ok(Some(wire::response(
            REFRESH,
            MessageClass::SuccessResponse,
            *message.transaction_id(),
            vec![lifetime.into()],
            Some(&credentials.key),
        )))
    }

    /// Checks that `peer` may be relayed to from the allocation whose relayed address is
    /// `relayed`.
    fn check_peer(
        relayed: SocketAddr,
        peer: SocketAddr,
        policy: &dyn PeerPolicy,
    ) -> Result<(), RequestError> {
        if family_of(peer) != family_of(relayed) {
            return Err(RequestError::PeerFamilyMismatch);
        }
        if never_relayed(peer.ip()) || !policy.may_relay_to(peer.ip()) {
            return Err(RequestError::Forbidden);
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Instant,
        from: Client,
        message: &StunMessage,
        credentials: &Credentials,
        policy: &dyn PeerPolicy,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let id = self.allocation_of(from, credentials)?;
        let peers = peer_addresses(message);
        if peers.is_empty() {
            return Err(RequestError::BadRequest);
        }
        let allocation = self.allocations.get_mut(&id).expect("indexed allocation");
        let relayed = allocation.relayed().expect("active allocation");
        for peer in &peers {
            Self::check_peer(relayed, *peer, policy)?;
        }
        let mut ips: Vec<_> = peers.iter().map(|p| p.ip()).collect();
        ips.sort();
        ips.dedup();
        if !allocation.permission_room(now, &ips, self.config.max_permissions) {
            return Err(RequestError::Capacity);
        }
        let expires = now + self.config.permission_lifetime;
        for ip in ips {
            allocation.permit(ip, expires);
        }
        Ok(Some(wire::response(
            CREATE_PERMMISSION,
            MessageClass::SuccessResponse,
            *message.transaction_id(),
            Vec::new(),
            Some(&credentials.key),
        )))
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        from: Client,
        message: &StunMessage,
        credentials: &Credentials,
        policy: &dyn PeerPolicy,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let id = self.allocation_of(from, credentials)?;
        let channel = message
            .get::<ChannelNumber>()
            .and_then(|a| a.as_channel_number().ok())
            .map(|c| c.number())
            .filter(|n| (CHANNEL_MIN..=wire::LEGACY_CHANNEL_MAX).contains(n))
            .ok_or(RequestError::BadRequest)?;
        let peer = match peer_addresses(message)[..] {
            [peer] if peer.port() != 0 => peer,
            _ => return Err(RequestError::BadRequest),
        };
        let allocation = self.allocations.get_mut(&id).expect("indexed allocation");
        let relayed = allocation.relayed().expect("active allocation");
        Self::check_peer(relayed, peer, policy)?;
        if !allocation.permission_room(now, &[peer.ip()], self.config.max_permissions) {
            return Err(RequestError::Capacity);
        }
        let expires = now + self.config.channel_lifetime;
        allocation
            .bind_channel(now, channel, peer, expires, self.config.max_channels)
            .map_err(|e| match e {
                BindError::Conflict => RequestError::BadRequest,
                BindError::Full => RequestError::Capacity,
            })?;
        allocation.permit(peer.ip(), now + self.config.permission_lifetime);
        Ok(Some(wire::response(
            CHANNEL_BIND,
            MessageClass::SuccessResponse,
            *message.transaction_id(),
            Vec::new(),
            Some(&credentials.key),
        )))
    }

    /// The allocation of `from` and its relayed address, for data from the client.
    pub(super) fn active_of_client(
        &self,
        from: Client,
    ) -> Result<(AllocationId, SocketAddr), DropReason> {
        let id = *self.by_client.get(&from).ok_or(DropReason::NoAllocation)?;
        let relayed = self.allocations[&id]
            .relayed()
            .ok_or(DropReason::NoAllocation)?;
        Ok((id, relayed))
    }

    fn send_indication(
        &mut self,
        now: Instant,
        from: Client,
        message: &StunMessage,
    ) -> Result<(), DropReason> {
        let (id, relayed) = self.active_of_client(from)?;
        if !wire::unknown_required(message, true).is_empty() {
            return Err(DropReason::Malformed);
        }
        let peer = *peer_addresses(message)
            .first()
            .ok_or(DropReason::Malformed)?;
        let data = message
            .get::<Data>()
            .and_then(|a| a.as_data().ok())
            .ok_or(DropReason::Malformed)?;
        self.relay_to_peer(now, id, relayed, peer, data.as_bytes())
    }
}
