//! TURN REST-API credentials (coturn's `use-auth-secret`, draft-uberti-behave-turn-rest).
//!
//! The rendezvous and the TURN server share a secret. For a registered node the rendezvous issues
//! - username `<unix expiry seconds>:<peer id>`,
//! - password `base64(HMAC-SHA1(secret, username))`,
//!
//! and the TURN server recomputes the password from the username, so it needs no user database.
//! The username's expiry bounds how long a leaked credential works. The long-term key that
//! MESSAGE-INTEGRITY uses is then `MD5(username ":" realm ":" password)` (RFC 8489 section 9.2.2),
//! built by stun-rs's `HMACKey::new_long_term`.

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Longest secret accepted (bytes); longer files are a configuration mistake.
pub const MAX_SECRET_LEN: usize = 4096;
/// Longest username the server accepts before parsing it.
pub const MAX_USERNAME_LEN: usize = 256;

/// A username and password issued for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredentials {
    pub username: String,
    pub password: String,
    /// Unix time (seconds) after which the server refuses the username.
    pub expires_unix: u64,
}

/// The shared secret between the rendezvous (issuer) and a TURN server (checker).
#[derive(Clone)]
pub struct SharedSecret(Vec<u8>);

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

/// Why a secret or a username is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("shared secret is empty")]
    EmptySecret,
    #[error("shared secret is longer than {MAX_SECRET_LEN} bytes")]
    SecretTooLong,
    #[error("username longer than {MAX_USERNAME_LEN} bytes")]
    UsernameTooLong,
    #[error("username is not `<unix expiry>:<user>`")]
    MalformedUsername,
    #[error("username expired at {expires_unix} (now {now_unix})")]
    Expired { expires_unix: u64, now_unix: u64 },
}

impl SharedSecret {
    /// Takes the secret as given (a file's contents with surrounding whitespace trimmed, as
    /// coturn's `static-auth-secret` is a text value).
    pub fn new(secret: &[u8]) -> Result<Self, CredentialError> {
        let trimmed = secret.trim_ascii();
        if trimmed.is_empty() {
            return Err(CredentialError::EmptySecret);
        }
        if trimmed.len() > MAX_SECRET_LEN {
            return Err(CredentialError::SecretTooLong);
        }
        Ok(Self(trimmed.to_vec()))
    }

    /// The secret's bytes, for writing it to a file another TURN server reads.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The password for `username`: `base64(HMAC-SHA1(secret, username))`.
    pub fn password_for(&self, username: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(username.as_bytes());
        BASE64.encode(&mac.finalize().into_bytes())
    }

    /// Issues credentials for `user` valid until `now_unix + lifetime_secs`.
    pub fn issue(&self, user: &str, now_unix: u64, lifetime_secs: u64) -> RestCredentials {
        let expires_unix = now_unix.saturating_add(lifetime_secs);
        let username = format!("{expires_unix}:{user}");
        let password = self.password_for(&username);
        RestCredentials {
            username,
            password,
            expires_unix,
        }
    }

    /// Checks a username's form and expiry and returns its password. The caller then verifies
    /// the request's MESSAGE-INTEGRITY with the key built from it.
    pub fn check_username(&self, username: &str, now_unix: u64) -> Result<String, CredentialError> {
        let parsed = parse_username(username)?;
        if parsed.expires_unix < now_unix {
            return Err(CredentialError::Expired {
                expires_unix: parsed.expires_unix,
                now_unix,
            });
        }
        Ok(self.password_for(username))
    }
}

/// A REST-API username split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedUsername<'a> {
    pub expires_unix: u64,
    pub user: &'a str,
}

/// Splits `<unix expiry>:<user>` (the user part may be empty, as coturn allows).
pub fn parse_username(username: &str) -> Result<ParsedUsername<'_>, CredentialError> {
    if username.len() > MAX_USERNAME_LEN {
        return Err(CredentialError::UsernameTooLong);
    }
    let (expiry, user) = username.split_once(':').unwrap_or((username, ""));
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CredentialError::MalformedUsername);
    }
    let expires_unix = expiry
        .parse()
        .map_err(|_| CredentialError::MalformedUsername)?;
    Ok(ParsedUsername { expires_unix, user })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_coturn_rest_scheme() {
        // Known answer: HMAC-SHA1("north", "1700000000:alice") computed with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac north -binary | base64`.
        let secret = SharedSecret::new(b"north\n").unwrap();
        assert_eq!(
            secret.password_for("1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn issue_then_check() {
        let secret = SharedSecret::new(b"s3cret").unwrap();
        let issued = secret.issue("peer", 1_000, 600);
        assert_eq!(issued.username, "1600:peer");
        assert_eq!(issued.expires_unix, 1600);
        assert_eq!(
            secret.check_username(&issued.username, 1_500).unwrap(),
            issued.password
        );
        assert_eq!(
            secret.check_username(&issued.username, 1_601),
            Err(CredentialError::Expired {
                expires_unix: 1600,
                now_unix: 1601
            })
        );
    }

    #[test]
    fn rejects_malformed() {
        assert!(SharedSecret::new(b"  \n").is_err());
        let secret = SharedSecret::new(b"x").unwrap();
        for bad in [
            "",
            ":peer",
            "abc:peer",
            "-5:peer",
            "99999999999999999999999:p",
        ] {
            assert_eq!(
                secret.check_username(bad, 0),
                Err(CredentialError::MalformedUsername),
                "{bad}"
            );
        }
        let long = format!("1:{}", "a".repeat(MAX_USERNAME_LEN));
        assert_eq!(
            secret.check_username(&long, 0),
            Err(CredentialError::UsernameTooLong)
        );
        assert_eq!(parse_username("42").unwrap().user, "");
    }
}
