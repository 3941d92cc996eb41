//! The long-term credential mechanism (RFC 8489 section 9.2) with REST-API usernames, and
//! stateless nonces.
//!
//! A nonce is `p2pn` + 16 hex digits of the unix second it was issued + 16 hex digits of
//! HMAC-SHA256(key, issued || client IP) truncated to 8 bytes, where `key` is derived from the
//! seed the server was built with. It is valid from its issue time for
//! [`super::TurnServerConfig::nonce_lifetime`] and only from the IP it was issued to, so the
//! server keeps no per-client nonce state. An expired or foreign nonce gets 438 Stale Nonce with a
//! fresh one.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use stun_rs::attributes::stun::{MessageIntegrity, Nonce, Realm, UserName};
use stun_rs::{Algorithm, AlgorithmId, HMACKey, StunMessage};

use super::wire;
use crate::turn::credentials::{parse_username, SharedSecret};

/// Length of a nonce this server issues.
pub const NONCE_LEN: usize = 4 + 16 + 16;
/// Nonces issued this far in the future (by another clock reading) are still accepted.
const CLOCK_SLACK_SECS: u64 = 60;

/// Issues and checks nonces.
pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl Nonces {
    pub fn new(seed: u64, lifetime_secs: u64) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"p2pnat turn nonce key");
        hasher.update(seed.to_le_bytes());
        Nonces {
            key: hasher.finalize().into(),
            lifetime_secs: lifetime_secs.max(1),
        }
    }

    fn tag(&self, issued: u64, client: IpAddr) -> u64 {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&issued.to_be_bytes());
        match client {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        let bytes = mac.finalize().into_bytes();
        u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
    }

    /// A fresh nonce for `client` at `unix_now`.
    pub fn issue(&self, unix_now: u64, client: IpAddr) -> String {
        format!("p2pn{unix_now:016x}{:016x}", self.tag(unix_now, client))
    }

    /// Whether `nonce` was issued by this server to `client` and has not expired.
    pub fn is_valid(&self, nonce: &str, unix_now: u64, client: IpAddr) -> bool {
        if nonce.len() != NONCE_LEN || !nonce.starts_with("p2pn") {
            return false;
        }
        let (Ok(issued), Ok(tag)) = (
            u64::from_str_radix(&nonce[4..20], 16),
            u64::from_str_radix(&nonce[20..36], 16),
        ) else {
            return false;
        };
        issued <= unix_now.saturating_add(CLOCK_SLACK_SECS)
            && unix_now < issued.saturating_add(self.lifetime_secs)
            && tag == self.tag(issued, client)
    }
}

/// Who sent an authenticated request.
#[derive(Clone)]
pub struct Credentials {
    /// The part of the username after the colon (the peer ID for the rendezvous's users).
    pub user: String,
    pub key: HMACKey,
}

/// Why a request was not authenticated; each maps to its STUN error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No MESSAGE-INTEGRITY: the first request of a client. 401 with REALM and NONCE.
    #[error("no credentials (challenge)")]
    Challenge,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE. 400.
    #[error("credentials incomplete")]
    Incomplete,
    /// The nonce expired or was not issued to this client. 438 with a fresh nonce.
    #[error("stale nonce")]
    StaleNonce,
    /// Malformed or expired username, or MESSAGE-INTEGRITY does not verify. 401.
    #[error("bad credentials")]
    Unauthorized,
}

impl AuthError {
    pub fn code(self) -> u16 {
        match self {
            AuthError::Challenge | AuthError::Unauthorized => 401,
            AuthError::Incomplete => 400,
            AuthError::StaleNonce => 438,
        }
    }
}

/// Checks a request's credentials in the order RFC 8489 section 9.2.4 gives.
pub fn authenticate(
    datagram: &[u8],
    message: &StunMessage,
    secret: &SharedSecret,
    realm: &str,
    nonces: &Nonces,
    unix_now: u64,
    client: IpAddr,
) -> Result<Credentials, AuthError> {
    if message.get::<MessageIntegrity>().is_none() {
        return Err(AuthError::Challenge);
    }
    let username = message
        .get::<UserName>()
        .and_then(|a| a.as_user_name().ok());
    let got_realm = message.get::<Realm>().and_then(|a| a.as_realm().ok());
    let nonce = message.get::<Nonce>().and_then(|a| a.as_nonce().ok());
    let (Some(username), Some(_), Some(nonce)) = (username, got_realm, nonce) else {
        return Err(AuthError::Incomplete);
    };
    if !nonces.is_valid(nonce.as_str(), unix_now, client) {
        return Err(AuthError::StaleNonce);
    }
    let username = username.as_str();
    let password = secret
        .check_username(username, unix_now)
        .map_err(|_| AuthError::Unauthorized)?;
    let user = parse_username(username)
        .map_err(|_| AuthError::Unauthorized)?
        .user
        .to_string();
    let key = HMACKey::new_long_term(username, realm, password, Algorithm::from(AlgorithmId::MD5))
        .map_err(|_| AuthError::Unauthorized)?;
    if !wire::integrity_ok(datagram, &key) {
        return Err(AuthError::Unauthorized);
    }
    Ok(Credentials { user, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_lifetime_and_binding_to_ip() {
        let nonces = Nonces::new(7, 3600);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let nonce = nonces.issue(1_000, ip);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert!(nonces.is_valid(&nonce, 1_000, ip));
        assert!(nonces.is_valid(&nonce, 4_599, ip));
        assert!(!nonces.is_valid(&nonce, 4_600, ip), "expired");
        assert!(!nonces.is_valid(&nonce, 1_000, other), "another client's");
        assert!(
            !Nonces::new(8, 3600).is_valid(&nonce, 1_000, ip),
            "another server's"
        );
        assert!(!nonces.is_valid("p2pnzzzz", 1_000, ip));
        assert!(!nonces.is_valid(&"p2pn".repeat(9), 1_000, ip));
    }
}
