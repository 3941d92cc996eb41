//! The direct forms of the data path (`handle_client_message_direct`,
//! `handle_relay_datagram_into`): the same checks, counters and bytes as the queued forms.

use super::*;

#[test]
fn direct_forms_match_the_queued_forms() {
    let mut h = Harness::new(TurnServerConfig::default());
    let mut over_udp = Client::new(addr("192.0.2.10:4000"), "alice");
    let mut over_tcp = Client::new(addr("192.0.2.10:4000"), "alice");
    over_tcp.transport = ClientTransport::Tcp;
    let relayed_udp = h.allocate(&mut over_udp).unwrap();
    let relayed_tcp = h.allocate(&mut over_tcp).unwrap();
    let peer = addr("203.0.113.5:5000");
    let udp = crate::turn::server::Client::udp(over_udp.addr);
    let mut out = vec![0xAA; 7];

    // No permission: refused and counted alike, `out` left empty.
    assert_eq!(
        h.server
            .handle_relay_datagram_into(h.now, relayed_udp, peer, b"early", &mut out),
        Err(DropReason::NoPermission)
    );
    assert!(out.is_empty());
    assert_eq!(h.server.stats().dropped_no_permission, 1);
    assert_eq!(
        h.server
            .handle_client_message_direct(h.now, h.unix, udp, &[0x40, 1, 0, 1, 7], &policy),
        Err(DropReason::NoChannel)
    );

    // STUN through the direct form is handled as usual (queued answers).
    assert_eq!(
        h.simple(&mut over_udp, CREATE_PERMMISSION, vec![peer_attr(peer)]),
        None
    );
    // Permission, no channel: a Data indication.
    let client = h
        .server
        .handle_relay_datagram_into(h.now, relayed_udp, peer, b"hello", &mut out)
        .unwrap();
    assert_eq!(client, udp);
    let indication = decode(&out);
    assert_eq!(indication.method(), stun_rs::methods::DATA);
    assert!(h.server.poll_output().is_none());

    for (mut who, relayed) in [(over_udp, relayed_udp), (over_tcp, relayed_tcp)] {
        let from = crate::turn::server::Client {
            transport: who.transport,
            addr: who.addr,
        };
        let bind = vec![ChannelNumber::new(0x4001).into(), peer_attr(peer)];
        assert_eq!(h.simple(&mut who, CHANNEL_BIND, bind), None);
        // Peer -> client: the queued and the direct bytes are the same (padded over TCP).
        let before = h.server.stats().clone();
        h.server
            .handle_relay_datagram(h.now, relayed, peer, b"odd")
            .unwrap();
        let Some(Output::Transmit(queued)) = h.server.poll_output() else {
            panic!()
        };
        let to = h
            .server
            .handle_relay_datagram_into(h.now, relayed, peer, b"odd", &mut out)
            .unwrap();
        assert_eq!((to.transport, to.addr), (who.transport, queued.to));
        assert_eq!(out, queued.contents);
        // Client -> peer: the direct form borrows the payload, nothing is queued.
        let message = channel_data::encode(0x4001, b"up");
        let queued = h.client_on(who.transport, who.addr, &message);
        let direct = h
            .server
            .handle_client_message_direct(h.now, h.unix, from, &message, &policy)
            .unwrap()
            .unwrap();
        assert_eq!(
            queued,
            vec![Output::Transmit(Transmit {
                from: Via::Relay(direct.relayed),
                to: direct.peer,
                contents: direct.data.to_vec()
            })]
        );
        assert!(h.server.poll_output().is_none());
        // Empty ChannelData: counted, nothing to send (as queued: no output).
        assert_eq!(
            h.server
                .handle_client_message_direct(h.now, h.unix, from, &[0x40, 1, 0, 0], &policy),
            Ok(None)
        );
        let after = h.server.stats();
        assert_eq!(after.relayed_to_clients, before.relayed_to_clients + 2);
        assert_eq!(after.relayed_to_peers, before.relayed_to_peers + 3);
        assert_eq!(after.bytes_to_peers, before.bytes_to_peers + 4);
        // Unbound channel and garbage: dropped and counted, never a panic.
        for garbage in [
            &[0x40, 2, 0, 1, 0][..],
            &[0x40, 1, 0, 9, 1],
            &[0x7F],
            &[0xFF, 1],
        ] {
            assert!(h
                .server
                .handle_client_message_direct(h.now, h.unix, from, garbage, &policy)
                .is_err());
        }
    }
}
