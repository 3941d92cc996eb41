//! Extra local sockets (the birthday method's) are part of the node's one quinn socket: what
//! arrives on them reaches the side channel tagged with their id, and sends leave from them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pnat::socket::{self, NodeSocket};
use p2pnat_proto::path::{AgentConfig, LocalSocketId, PathAgent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_on_extra_sockets_reach_the_side_channel_with_their_socket_id() {
    let agent = PathAgent::new(
        p2pnat_proto::path::auth::OwnSecret::from_seed(&[1; 32]),
        AgentConfig::default(),
        [0; 32],
    );
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (node, mut side) = NodeSocket::new(std_socket, Some(Arc::new(Mutex::new(agent)))).unwrap();
    // quinn's endpoint driver is what polls the socket.
    let _endpoint = socket::endpoint(node.clone(), None).unwrap();
    // Let the endpoint driver go idle first: nothing would wake it for the extra sockets.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ids = node.open_extra(256);
    assert_eq!(ids.len(), 256);
    // Nothing wakes the endpoint driver between the opening and the first datagram.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut project = vec![0x81];
    project.extend_from_slice(b"p2pN");
    project.extend_from_slice(&[1; 20]);
    for id in ids.iter().step_by(37) {
        let addr = node.extra_addr(*id).unwrap();
        peer.send_to(&project, addr).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), side.recv())
            .await
            .expect("datagram on an extra socket reaches the side channel")
            .unwrap();
        assert_eq!(got.local, *id);
        assert_eq!(got.from, peer.local_addr().unwrap());
    }
    // Sending on an extra socket leaves from its port.
    node.send_raw_on(ids[1], peer.local_addr().unwrap(), b"hello")
        .unwrap();
    let mut buf = [0u8; 64];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (len, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"hello");
    assert_eq!(from, node.extra_addr(ids[1]).unwrap());
    node.close_extra(&ids);
    assert_eq!(node.extra_count(), 0);
    assert!(node
        .send_raw_on(ids[1], peer.local_addr().unwrap(), b"x")
        .is_ok());
    let _ = LocalSocketId(0);
}
