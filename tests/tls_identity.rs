//! The TLS layer binds a connection to a peer ID: a peer presenting any other key is refused, and
//! the acceptor learns the dialler's ID. Real QUIC over loopback through the library.

use std::net::SocketAddr;

use p2pnat::identity::Identity;
use p2pnat::tls;

fn server(identity: &Identity) -> quinn::Endpoint {
    let config =
        quinn::ServerConfig::with_crypto(tls::server_crypto(identity, tls::ALPN_PEER).unwrap());
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn client(identity: &Identity) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(
        tls::client_crypto(identity, tls::ALPN_PEER, false).unwrap(),
    ));
    endpoint
}

#[tokio::test]
async fn dialling_an_id_reaches_only_the_holder_of_its_key() {
    let (real, impostor_target, dialler) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    let server = server(&real);
    let addr: SocketAddr = server.local_addr().unwrap();
    let accepting = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let incoming = server.accept().await.unwrap();
                results.push(incoming.await.map(|c| tls::peer_id_of(&c)));
            }
            results
        })
    };
    let client = client(&dialler);

    // Dialling the ID of a different key at this address fails the handshake.
    let wrong = client
        .connect(addr, &impostor_target.peer_id().to_text())
        .unwrap()
        .await;
    let error = wrong.expect_err("a server with another key must be refused");
    assert!(
        error.to_string().to_lowercase().contains("certificate")
            || error.to_string().to_lowercase().contains("peer id"),
        "unexpected error: {error}"
    );

    // Dialling the right ID succeeds, and the server learns the dialler's ID.
    let right = client
        .connect(addr, &real.peer_id().to_text())
        .unwrap()
        .await
        .expect("the right key is accepted");
    assert_eq!(tls::peer_id_of(&right), Some(real.peer_id()));
    let results = accepting.await.unwrap();
    assert!(
        results[0].is_err(),
        "server side of the refused handshake fails too"
    );
    assert_eq!(results[1].as_ref().unwrap(), &Some(dialler.peer_id()));
    right.close(0u32.into(), b"done");
}

#[tokio::test]
async fn a_server_name_that_is_not_a_peer_id_is_refused() {
    let real = Identity::generate().unwrap();
    let server = server(&real);
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
    });
    let client = client(&Identity::generate().unwrap());
    let result = client.connect(addr, "example.org").unwrap().await;
    assert!(result.is_err());
}
