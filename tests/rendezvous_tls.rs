//! The rendezvous's TLS port (issue #13, UDP blocked), with the real `p2p-rendezvous` on
//! loopback: a node registered over TLS (`p2pnat::rendezvous_tls`) and one registered over QUIC
//! find each other and get each other's punch requests; the control ALPN without a client
//! certificate is refused while TURN over TLS without one is served; connections over
//! `--tls-max-per-ip` are refused while other IPs are still served; garbage does not hurt it.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Rendezvous;
use p2pnat::identity::Identity;
use p2pnat::rendezvous_tls::{read_frame, RendezvousTls, ALPN_RENDEZVOUS_TLS, ALPN_TURN};
use p2pnat::tls;
use p2pnat_proto::control::{self, Push, RegisteredOver, Request, Response};
use p2pnat_proto::control_stream::{encode_frame, FrameKind};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

fn register() -> Request {
    Request::Register {
        local_addrs: vec!["10.9.9.9:9999".parse().unwrap()],
        nat: NatReport::UNKNOWN,
        relayed: None,
    }
}

fn tls_addr(rendezvous: &Rendezvous) -> SocketAddr {
    rendezvous.tls_addr.as_ref().unwrap().parse().unwrap()
}

/// A node's QUIC connection to the rendezvous, as `p2p-node` makes it (unpinned).
async fn quic_connect(identity: &Identity, rendezvous: &Rendezvous) -> quinn::Connection {
    let mut config = quinn::EndpointConfig::default();
    config.grease_quic_bit(false);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let runtime = quinn::default_runtime().unwrap();
    let mut endpoint = quinn::Endpoint::new(config, None, socket, runtime).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(
        tls::client_crypto(identity, tls::ALPN_RENDEZVOUS, true).unwrap(),
    ));
    endpoint
        .connect(rendezvous.addr.parse().unwrap(), tls::UNPINNED_SERVER_NAME)
        .unwrap()
        .await
        .unwrap()
}

async fn quic_request(connection: &quinn::Connection, request: &Request) -> Response {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&control::encode(request)).await.unwrap();
    send.finish().unwrap();
    let bytes = recv
        .read_to_end(control::MAX_CONTROL_MESSAGE)
        .await
        .unwrap();
    control::decode(&bytes).unwrap()
}

fn found(response: Response, peer: PeerId) -> control::PeerRecord {
    match response {
        Response::Found { peer: p, record } if p == peer => record,
        other => panic!("expected Found for {peer}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_quic_nodes_find_and_punch_each_other() {
    let rendezvous = Rendezvous::start(&["--tls-listen", "127.0.0.1:0"]);
    let rendezvous_id: PeerId = rendezvous.id.parse().unwrap();

    // Over TLS, with the rendezvous's key pinned.
    let over_tls = Identity::generate().unwrap();
    let (tls_conn, mut tls_pushes) =
        RendezvousTls::connect(&over_tls, tls_addr(&rendezvous), Some(rendezvous_id))
            .await
            .unwrap();
    assert_eq!(tls_conn.rendezvous_id(), Some(rendezvous_id));
    match tls_conn.request(&register()).await.unwrap() {
        Response::Registered { observed, turn, .. } => {
            assert_eq!(
                observed,
                tls_conn.local_addr(),
                "observed is the TCP source"
            );
            assert!(turn.is_some(), "a relay is offered over TLS too");
        }
        other => panic!("registration over TLS: {other:?}"),
    }

    // Over QUIC.
    let over_quic = Identity::generate().unwrap();
    let quic = quic_connect(&over_quic, &rendezvous).await;
    assert!(matches!(
        quic_request(&quic, &register()).await,
        Response::Registered { .. }
    ));

    // QUIC looks the TLS node up and sees it, marked as registered over TLS.
    let record = found(
        quic_request(
            &quic,
            &Request::Lookup {
                peer: over_tls.peer_id(),
            },
        )
        .await,
        over_tls.peer_id(),
    );
    assert_eq!(record.observed, tls_conn.local_addr());
    assert_eq!(record.over, RegisteredOver::Tls);
    assert_eq!(record.local_addrs, vec!["10.9.9.9:9999".parse().unwrap()]);

    // QUIC -> Connect: the TLS node gets the punch request as a push frame.
    found(
        quic_request(
            &quic,
            &Request::Connect {
                peer: over_tls.peer_id(),
            },
        )
        .await,
        over_tls.peer_id(),
    );
    let push = tokio::time::timeout(WAIT, tls_pushes.recv())
        .await
        .expect("push over TLS in time")
        .unwrap();
    let Push::PunchRequest { peer, record } = push;
    assert_eq!(peer, over_quic.peer_id());
    assert_eq!(record.over, RegisteredOver::Quic);

    // TLS -> Connect: the QUIC node gets the punch request on a unidirectional stream.
    let record = found(
        tls_conn
            .request(&Request::Connect {
                peer: over_quic.peer_id(),
            })
            .await
            .unwrap(),
        over_quic.peer_id(),
    );
    assert_eq!(record.over, RegisteredOver::Quic);
    let mut uni = tokio::time::timeout(WAIT, quic.accept_uni())
        .await
        .expect("push over QUIC in time")
        .unwrap();
    let bytes = uni.read_to_end(control::MAX_CONTROL_MESSAGE).await.unwrap();
    let Push::PunchRequest { peer, record } = control::decode(&bytes).unwrap();
    assert_eq!(peer, over_tls.peer_id());
    assert_eq!(record.over, RegisteredOver::Tls);
    assert_eq!(record.observed, tls_conn.local_addr());

    // Requests in flight at once are matched to their responses by id.
    let unknown = PeerId([9; 32]);
    let lookups = futures_join(
        tls_conn.request(&Request::Lookup { peer: unknown }),
        tls_conn.request(&Request::Lookup {
            peer: over_quic.peer_id(),
        }),
    )
    .await;
    assert_eq!(lookups.0.unwrap(), Response::NotFound { peer: unknown });
    found(lookups.1.unwrap(), over_quic.peer_id());

    // The TLS connection closes: its registration goes with it.
    drop(tls_conn);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = quic_request(
            &quic,
            &Request::Lookup {
                peer: over_tls.peer_id(),
            },
        )
        .await;
        if answer
            == (Response::NotFound {
                peer: over_tls.peer_id(),
            })
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

/// Accepts any server certificate: these tests probe the server, not the client's checks.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client with no certificate offering `alpn` (none if empty), from `local_ip`.
async fn tls_without_cert(
    to: SocketAddr,
    local_ip: &str,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    let tcp = connect_from(to, local_ip).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("rendezvous").unwrap(), tcp)
        .await
}

async fn connect_from(to: SocketAddr, local_ip: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local_ip.parse().unwrap(), 0))?;
    socket.connect(to).await
}

/// A STUN Binding request over TURN over TLS is answered (the 20-byte header of the answer).
async fn binding_answered(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> bool {
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(b"p2pnat-test!");
    if stream.write_all(&request).await.is_err() {
        return false;
    }
    let mut header = [0u8; 20];
    match tokio::time::timeout(WAIT, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => header[..2] == [0x01, 0x01] && &header[8..] == b"p2pnat-test!",
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_alpn_needs_a_client_certificate_turn_does_not() {
    let rendezvous = Rendezvous::start(&["--tls-listen", "127.0.0.1:0"]);
    let addr = tls_addr(&rendezvous);

    // Control ALPN without a certificate: the handshake fails (TLS 1.3 may let the client
    // finish first; then its first read fails). No response ever comes.
    if let Ok(mut stream) = tls_without_cert(addr, "127.0.0.1", ALPN_RENDEZVOUS_TLS).await {
        let frame = encode_frame(FrameKind::Request, 1, &control::encode(&register()));
        let _ = stream.write_all(&frame).await;
        let answer = tokio::time::timeout(WAIT, read_frame(&mut stream))
            .await
            .expect("the server closes the connection in time");
        assert!(
            !matches!(answer, Ok(Some(_))),
            "a control frame came back without a client certificate: {answer:?}"
        );
    }

    // TURN over TLS, with ALPN stun.turn and with none: no certificate needed.
    for alpn in [ALPN_TURN, b""] {
        let mut stream = tls_without_cert(addr, "127.0.0.1", alpn).await.unwrap();
        assert!(binding_answered(&mut stream).await, "ALPN {alpn:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_limit_are_refused_and_others_served() {
    let rendezvous = Rendezvous::start(&["--tls-listen", "127.0.0.1:0", "--tls-max-per-ip", "3"]);
    let addr = tls_addr(&rendezvous);
    let rendezvous_id: PeerId = rendezvous.id.parse().unwrap();

    // Three connections from 127.0.0.1 (held open, no handshake yet) fill its share.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(addr, "127.0.0.1").await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The fourth is closed at once, before any handshake.
    let mut fourth = connect_from(addr, "127.0.0.1").await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, fourth.read(&mut byte))
        .await
        .expect("the refused connection is closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "refused connection read {read:?}"
    );
    // So is a control connection from that IP.
    let refused =
        RendezvousTls::connect(&Identity::generate().unwrap(), addr, Some(rendezvous_id)).await;
    match refused {
        Err(_) => {}
        Ok((connection, _)) => assert!(connection.request(&register()).await.is_err()),
    }

    // Another source IP is still served, control and TURN alike.
    let mut turn = tls_without_cert(addr, "127.0.0.2", b"").await.unwrap();
    assert!(binding_answered(&mut turn).await);

    // A slot freed on 127.0.0.1 is usable again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (connection, _) =
        RendezvousTls::connect(&Identity::generate().unwrap(), addr, Some(rendezvous_id))
            .await
            .unwrap();
    assert!(matches!(
        connection.request(&register()).await.unwrap(),
        Response::Registered { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_port_does_not_hurt_the_rendezvous() {
    let mut rendezvous = Rendezvous::start(&["--tls-listen", "127.0.0.1:0"]);
    let addr = tls_addr(&rendezvous);
    let rendezvous_id: PeerId = rendezvous.id.parse().unwrap();

    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0u8; 4096],
        vec![0xFF; 70_000],
        // A TLS record header announcing a huge handshake, then nothing.
        vec![0x16, 0x03, 0x01, 0xFF, 0xFF, 0x01],
        common::pseudo_random_bytes(20_000, 7),
    ];
    for bytes in &garbage {
        let mut stream = connect_from(addr, "127.0.0.1").await.unwrap();
        let _ = stream.write_all(bytes).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await;
    }
    // Garbage after a good TURN-over-TLS handshake: that connection closes, nothing else.
    let mut turn = tls_without_cert(addr, "127.0.0.1", ALPN_TURN)
        .await
        .unwrap();
    let _ = turn.write_all(&[0x80; 64]).await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, turn.read_to_end(&mut sink)).await;
    // After a good control handshake: a frame header over the length limit, then one of an
    // unknown kind. Each closes its connection without an answer.
    let identity = Identity::generate().unwrap();
    for header in [
        [1u8, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF],
        [9, 0, 0, 0, 1, 0, 0, 0, 0],
    ] {
        let config = p2pnat::rendezvous_tls::client_config(&identity, Some(rendezvous_id)).unwrap();
        let tcp = connect_from(addr, "127.0.0.1").await.unwrap();
        let mut raw = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from(rendezvous_id.to_text()).unwrap(), tcp)
            .await
            .unwrap();
        raw.write_all(&header).await.unwrap();
        let answer = tokio::time::timeout(WAIT, read_frame(&mut raw))
            .await
            .expect("closed in time");
        assert!(!matches!(answer, Ok(Some(_))), "{answer:?}");
    }

    assert!(
        rendezvous.child.try_wait().unwrap().is_none(),
        "the rendezvous exited"
    );
    let (connection, _) = RendezvousTls::connect(&identity, addr, Some(rendezvous_id))
        .await
        .unwrap();
    assert!(matches!(
        connection.request(&register()).await.unwrap(),
        Response::Registered { .. }
    ));
    let mut turn = tls_without_cert(addr, "127.0.0.1", b"").await.unwrap();
    assert!(binding_answered(&mut turn).await);
}
