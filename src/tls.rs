//! TLS 1.3 inside QUIC, where the certificate key *is* the peer's identity.
//!
//! Each node presents a self-signed X.509 certificate made (by rcgen) from its ed25519 identity key.
//! Nothing about the certificate but its key matters: names, dates and issuer are ignored. The
//! custom verifiers below:
//! - accept only ed25519 keys and only TLS 1.3 handshake signatures (checked against the key in the
//!   certificate, which proves the other side holds the private key);
//! - on the dialling side, require the certificate key to equal the peer ID given as the TLS server
//!   name (the dialler always dials a peer ID); a different key fails the handshake;
//! - on the accepting side, require a client certificate (mutual authentication), so the acceptor
//!   learns the dialler's peer ID from [`peer_id_of`].
//!
//! ALPN: [`ALPN_PEER`] between nodes, [`ALPN_RENDEZVOUS`] to the rendezvous. The rendezvous key is
//! checked only when the user pins it (`--rendezvous ID@ADDR`); otherwise any key is accepted for it
//! (the rendezvous never sees peer plaintext: peer connections are end-to-end).

use std::sync::Arc;

use p2pnat_proto::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::Identity;

/// ALPN between nodes (protocol version 1).
pub const ALPN_PEER: &[u8] = b"p2pnat/1";
/// ALPN between a node and the rendezvous (protocol version 1).
pub const ALPN_RENDEZVOUS: &[u8] = b"p2pnat-rendezvous/1";
/// ALPN of the control protocol over TLS on TCP, the rendezvous's TLS port (for networks that
/// drop UDP; docs/PROTOCOL.md section 7). `crate::rendezvous_tls` speaks it.
pub const ALPN_RENDEZVOUS_TLS: &[u8] = b"p2pnat-rendezvous-tls/1";
/// TLS server name used for an unpinned rendezvous.
pub const UNPINNED_SERVER_NAME: &str = "rendezvous";

/// Why TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot make a certificate from the identity key: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC cannot use this TLS configuration: {0}")]
    Quic(String),
}

const ED25519_OID: &str = "1.3.101.112";

/// The ed25519 key in a DER certificate, if it holds exactly one.
pub fn peer_id_of_certificate(der: &[u8]) -> Option<PeerId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return None;
    }
    let key: [u8; 32] = spki.subject_public_key.data.as_ref().try_into().ok()?;
    Some(PeerId(key))
}

/// The authenticated peer ID of an established QUIC connection.
pub fn peer_id_of(connection: &quinn::Connection) -> Option<PeerId> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(|cert| peer_id_of_certificate(cert))
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(reason: &str) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            reason.to_string(),
        )),
    )))
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    provider: &CryptoProvider,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The signature methods both verifiers share: TLS 1.3 with ed25519 only, checked against the key
/// in the presented certificate.
macro_rules! ed25519_tls13_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls12NotOffered,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_signature(message, cert, dss, &self.provider)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

/// Dialling side: the server's key must equal the peer ID in the server name.
#[derive(Debug)]
pub(crate) struct PeerServerVerifier {
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) accept_any_key: bool,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented =
            peer_id_of_certificate(end_entity).ok_or_else(|| invalid("not an ed25519 key"))?;
        if self.accept_any_key {
            return Ok(ServerCertVerified::assertion());
        }
        let ServerName::DnsName(name) = server_name else {
            return Err(invalid("server name is not a peer ID"));
        };
        let expected: PeerId = name
            .as_ref()
            .parse()
            .map_err(|_| invalid("server name is not a peer ID"))?;
        if presented != expected {
            return Err(invalid(
                "peer presented a key other than the peer ID dialled",
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    ed25519_tls13_signature_checks!();
}

/// Accepting side: any ed25519 client certificate; the key is the dialler's identity.
#[derive(Debug)]
pub(crate) struct PeerClientVerifier {
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        peer_id_of_certificate(end_entity).ok_or_else(|| invalid("not an ed25519 key"))?;
        Ok(ClientCertVerified::assertion())
    }

    ed25519_tls13_signature_checks!();
}

pub(crate) fn certificate(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsSetupError> {
    let pkcs8 = identity.pkcs8_der();
    let key_pair = rcgen::KeyPair::try_from(pkcs8.as_slice())?;
    let params = rcgen::CertificateParams::new(vec![identity.peer_id().to_text()])?;
    let cert = params.self_signed(&key_pair)?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)),
    ))
}

/// TLS for dialling: to peers (verify the dialled ID) or, with `accept_any_key`, to an unpinned
/// rendezvous.
pub fn client_crypto(
    identity: &Identity,
    alpn: &[u8],
    accept_any_key: bool,
) -> Result<Arc<quinn::crypto::rustls::QuicClientConfig>, TlsSetupError> {
    let provider = provider();
    let (cert, key) = certificate(identity)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier {
            provider,
            accept_any_key,
        }))
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| TlsSetupError::Quic(e.to_string()))?;
    Ok(Arc::new(quic))
}

/// TLS for accepting: requires a client certificate.
pub fn server_crypto(
    identity: &Identity,
    alpn: &[u8],
) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>, TlsSetupError> {
    let provider = provider();
    let (cert, key) = certificate(identity)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier { provider }))
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| TlsSetupError::Quic(e.to_string()))?;
    Ok(Arc::new(quic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_identity_key() {
        let identity = Identity::generate().unwrap();
        let (cert, _) = certificate(&identity).unwrap();
        assert_eq!(peer_id_of_certificate(&cert), Some(identity.peer_id()));
        assert_eq!(peer_id_of_certificate(b"garbage"), None);
    }
}
