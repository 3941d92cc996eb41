//! The rendezvous answers STUN Binding requests with the requester's address, on its QUIC port
//! and on `--stun-listen` ports, and survives garbage.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::Rendezvous;
use p2pnat_proto::stun;

fn ask(socket: &UdpSocket, server: SocketAddr, transaction: [u8; 12]) -> SocketAddr {
    socket
        .send_to(&stun::binding_request(transaction), server)
        .unwrap();
    let mut buf = [0u8; 1500];
    let (len, from) = socket.recv_from(&mut buf).expect("STUN answer");
    assert_eq!(from, server);
    let response = stun::parse_binding_response(&buf[..len]).unwrap();
    assert_eq!(response.transaction_id, transaction);
    response.mapped
}

#[test]
fn binding_requests_get_the_mapped_address_on_both_ports() {
    let stun_only = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stun_port = stun_only.local_addr().unwrap();
    drop(stun_only);
    let rendezvous = Rendezvous::start(&["--stun-listen", &stun_port.to_string()]);
    let main: SocketAddr = rendezvous.addr.parse().unwrap();

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let me = socket.local_addr().unwrap();
    assert_eq!(ask(&socket, main, [1; 12]), me);
    assert_eq!(ask(&socket, stun_port, [2; 12]), me);

    // Garbage, truncated STUN and a STUN response are dropped; the server keeps answering.
    let request = stun::binding_request([3; 12]);
    for junk in [
        &b"\x00\x01garbage"[..],
        &request[..10],
        &[0xff; 1400][..],
        &[][..],
    ] {
        socket.send_to(junk, main).unwrap();
    }
    assert_eq!(ask(&socket, main, [4; 12]), me);
}
