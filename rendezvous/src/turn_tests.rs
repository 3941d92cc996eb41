//! The driver with real sockets: batched garbage (a segmented send, so the listener's GRO
//! hands it over as one buffer) is dropped without harm, and the server still answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use p2pnat_proto::turn::credentials::SharedSecret;
use p2pnat_proto::turn::server::TurnServerConfig;

use super::{spawn, TurnSettings};
use crate::limits::ConnectionLimiter;
use crate::turn_stream::StreamLimits;
use crate::turn_udp::{BatchSocket, RecvBufs};

/// Sends a Binding request until an answer for it comes (the unauthenticated answers of one
/// source are rate limited, and garbage may have spent some); patience only, no timing asserted.
async fn binding_answered(client: &BatchSocket, server: SocketAddr) -> bool {
    let mut bufs = RecvBufs::new();
    for attempt in 0..50u8 {
        let transaction = [attempt; 12];
        let request = p2pnat_proto::stun::binding_request(transaction);
        let _ = client.try_send(server, &request, None);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, client.readable()).await {
            let Ok(filled) = client.try_recv(&mut bufs) else {
                continue;
            };
            for i in 0..filled {
                let (from, datagrams) = bufs.datagrams(i);
                for datagram in datagrams {
                    let answer = p2pnat_proto::stun::parse_binding_response(datagram);
                    if from == server && answer.is_ok_and(|a| a.transaction_id == transaction) {
                        return true;
                    }
                }
            }
        }
    }
    false
}

#[tokio::test]
async fn batched_garbage_is_dropped_and_the_server_still_answers() {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let settings = TurnSettings {
        listen: SocketAddr::new(localhost, 0),
        listen_required: true,
        relay_ip: localhost,
        secret: SharedSecret::new(b"north").unwrap(),
        config: TurnServerConfig::default(),
        stream: StreamLimits {
            max_buffered: 64 * 1024,
            idle_timeout: Duration::from_secs(30),
        },
        socket_buffer: 0,
    };
    let handle = spawn(settings, Arc::new(|_| true), ConnectionLimiter::new(16, 16))
        .unwrap()
        .unwrap();
    let client =
        BatchSocket::new(std::net::UdpSocket::bind(SocketAddr::new(localhost, 0)).unwrap())
            .unwrap();
    assert!(binding_answered(&client, handle.udp).await);

    // 64 datagrams of 100 bytes per send: ChannelData-looking (unbound channels, lengths past
    // the end), STUN-looking and neither; then odd sizes, one byte, and the largest.
    let mut garbage: Vec<u8> = (0..6400u32).map(|i| (i * 37 % 251) as u8).collect();
    for first in [0x40, 0x4F, 0x7F, 0x00, 0x01, 0x80, 0xFF] {
        for segment in garbage.chunks_mut(100) {
            segment[0] = first;
        }
        let _ = client.try_send(handle.udp, &garbage, Some(100));
    }
    let _ = client.try_send(handle.udp, &garbage[..6399], Some(7));
    let _ = client.try_send(handle.udp, &[0x40], None);
    let _ = client.try_send(handle.udp, &vec![0x41; 65_507], None);
    assert!(binding_answered(&client, handle.udp).await);
}
