//! The data path of the TURN server: permissions, Data indications, channels, Send
//! indications, the byte rate limit, and garbage input.

use super::*;

#[test]
fn peer_data_as_data_indication_then_channel_data_and_back() {
    let mut h = Harness::new(TurnServerConfig::default());
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    let relayed = h.allocate(&mut client).unwrap();
    let peer = addr("203.0.113.5:5000");
    let stranger = addr("203.0.113.6:5000");
    // No permission yet: dropped.
    assert_eq!(
        h.server
            .handle_relay_datagram(h.now, relayed, peer, b"early"),
        Err(DropReason::NoPermission)
    );
    assert_eq!(
        h.simple(&mut client, CREATE_PERMMISSION, vec![peer_attr(peer)]),
        None
    );
    h.server
        .handle_relay_datagram(h.now, relayed, peer, b"hello")
        .unwrap();
    let Some(Output::Transmit(t)) = h.server.poll_output() else {
        panic!()
    };
    assert_eq!(
        (t.from, t.to),
        (Via::Client(ClientTransport::Udp), client.addr)
    );
    let indication = decode(&t.contents);
    assert_eq!(
        (indication.method(), indication.class()),
        (stun_rs::methods::DATA, MessageClass::Indication)
    );
    let from = indication
        .get::<XorPeerAddress>()
        .unwrap()
        .as_xor_peer_address()
        .unwrap();
    assert_eq!(*from.socket_address(), peer);
    assert_eq!(
        indication
            .get::<Data>()
            .unwrap()
            .as_data()
            .unwrap()
            .as_bytes(),
        b"hello"
    );
    // Permissions are per IP: another port of the same IP passes, another IP does not.
    h.server
        .handle_relay_datagram(h.now, relayed, addr("203.0.113.5:6000"), b"x")
        .unwrap();
    assert!(h.server.poll_output().is_some());
    assert_eq!(
        h.server
            .handle_relay_datagram(h.now, relayed, stranger, b"x"),
        Err(DropReason::NoPermission)
    );

    // Send indication: client -> peer from the relayed address.
    let send = encode(
        &StunMessageBuilder::new(SEND, MessageClass::Indication)
            .with_transaction_id(TransactionId::from([9; 12]))
            .with_attribute(XorPeerAddress::from(peer))
            .with_attribute(Data::from(&b"via send"[..]))
            .build(),
    );
    let outputs = h.client(client.addr, &send);
    assert_eq!(
        outputs,
        vec![Output::Transmit(Transmit {
            from: Via::Relay(relayed),
            to: peer,
            contents: b"via send".to_vec()
        })]
    );

    // ChannelBind, then both directions as ChannelData.
    assert_eq!(
        h.simple(
            &mut client,
            CHANNEL_BIND,
            vec![ChannelNumber::new(0x4001).into(), peer_attr(peer)]
        ),
        None
    );
    h.server
        .handle_relay_datagram(h.now, relayed, peer, b"on channel")
        .unwrap();
    let Some(Output::Transmit(t)) = h.server.poll_output() else {
        panic!()
    };
    assert_eq!(t.contents, channel_data::encode(0x4001, b"on channel"));
    let outputs = h.client(client.addr, &channel_data::encode(0x4001, b"up"));
    assert_eq!(
        outputs,
        vec![Output::Transmit(Transmit {
            from: Via::Relay(relayed),
            to: peer,
            contents: b"up".to_vec()
        })]
    );
    // Unbound channel, conflicting binds, bad numbers.
    assert!(h
        .client(client.addr, &channel_data::encode(0x4002, b"up"))
        .is_empty());
    assert_eq!(
        h.simple(
            &mut client,
            CHANNEL_BIND,
            vec![
                ChannelNumber::new(0x4001).into(),
                peer_attr(addr("203.0.113.5:7"))
            ]
        ),
        Some(400)
    );
    assert_eq!(
        h.simple(
            &mut client,
            CHANNEL_BIND,
            vec![ChannelNumber::new(0x4003).into(), peer_attr(peer)]
        ),
        Some(400)
    );
    assert_eq!(
        h.simple(
            &mut client,
            CHANNEL_BIND,
            vec![ChannelNumber::new(0x3FFF).into(), peer_attr(peer)]
        ),
        Some(400)
    );
    assert_eq!(
        h.simple(
            &mut client,
            CHANNEL_BIND,
            vec![ChannelNumber::new(0x8000).into(), peer_attr(peer)]
        ),
        Some(400)
    );
    // RFC 5766's wider range (coturn 4.6's uclient) works on the server's TURN-only port.
    let other_peer = addr("203.0.113.5:5001");
    let wide = vec![ChannelNumber::new(0x7990).into(), peer_attr(other_peer)];
    assert_eq!(h.simple(&mut client, CHANNEL_BIND, wide), None);
    let outputs = h.client(client.addr, &[0x79, 0x90, 0, 2, b'h', b'i']);
    assert_eq!(
        outputs,
        vec![Output::Transmit(Transmit {
            from: Via::Relay(relayed),
            to: other_peer,
            contents: b"hi".to_vec()
        })]
    );
    h.server
        .handle_relay_datagram(h.now, relayed, other_peer, b"yo")
        .unwrap();
    let Some(Output::Transmit(t)) = h.server.poll_output() else {
        panic!()
    };
    assert_eq!(t.contents, [0x79, 0x90, 0, 2, b'y', b'o']);
    assert_eq!(
        h.simple(
            &mut client,
            CHANNEL_BIND,
            vec![
                ChannelNumber::new(0x4004).into(),
                peer_attr(addr("198.18.0.1:1"))
            ]
        ),
        Some(403)
    );
    // Rebinding the same pair refreshes it.
    assert_eq!(
        h.simple(
            &mut client,
            CHANNEL_BIND,
            vec![ChannelNumber::new(0x4001).into(), peer_attr(peer)]
        ),
        None
    );

    // After the channel (600 s) and permission (300 s) lifetimes, nothing passes.
    let tx = client.tx();
    h.ask(
        &client,
        &client.request(REFRESH, tx, vec![LifeTime::new(3600).into()]),
    );
    h.advance(Duration::from_secs(601));
    assert!(h
        .client(client.addr, &channel_data::encode(0x4001, b"up"))
        .is_empty());
    assert_eq!(
        h.server
            .handle_relay_datagram(h.now, relayed, peer, b"late"),
        Err(DropReason::NoPermission)
    );
    let stats = h.server.stats();
    assert_eq!((stats.relayed_to_peers, stats.relayed_to_clients), (3, 4));
}

#[test]
fn byte_rate_limit_drops_the_excess() {
    let mut h = Harness::new(TurnServerConfig {
        max_bytes_per_sec: 100_000,
        ..TurnServerConfig::default()
    });
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    let relayed = h.allocate(&mut client).unwrap();
    let peer = addr("203.0.113.5:5000");
    h.simple(&mut client, CREATE_PERMMISSION, vec![peer_attr(peer)]);
    let payload = vec![7u8; 1000];
    let passed = (0..200)
        .filter(|_| {
            h.server
                .handle_relay_datagram(h.now, relayed, peer, &payload)
                .is_ok()
        })
        .count();
    assert_eq!(passed, 100, "a burst of one second's worth");
    h.outputs();
    h.now += Duration::from_millis(100);
    let passed = (0..200)
        .filter(|_| {
            h.server
                .handle_relay_datagram(h.now, relayed, peer, &payload)
                .is_ok()
        })
        .count();
    assert_eq!(passed, 10);
    assert_eq!(h.server.stats().dropped_rate_limited, 290);
}

#[test]
fn garbage_never_panics_and_memory_stays_bounded() {
    let mut h = Harness::new(TurnServerConfig::default());
    let mut client = Client::new(addr("192.0.2.10:4000"), "alice");
    let relayed = h.allocate(&mut client).unwrap();
    let tx = client.tx();
    let valid = [
        client.request(
            CREATE_PERMMISSION,
            tx,
            vec![peer_attr(addr("203.0.113.5:1"))],
        ),
        client.request(ALLOCATE, [3; 12], vec![udp(), LifeTime::new(5).into()]),
        channel_data::encode(0x4001, b"abc"),
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000u32 {
        let mut bytes = if round % 2 == 0 {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<_>>()
        } else {
            valid[(round as usize / 2) % valid.len()].clone()
        };
        if !bytes.is_empty() {
            // Random corruption, keeping the STUN header's first bits sometimes.
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            if round % 3 == 0 {
                bytes[0] &= 0x3F;
            }
        }
        let port = 1 + (next() % 50) as u16;
        let from = SocketAddr::from(([192, 0, 2, (next() % 4) as u8], port));
        let _ = h
            .server
            .handle_client_datagram(h.now, h.unix, from, &bytes, &policy);
        let _ = h.server.handle_relay_datagram(h.now, relayed, from, &bytes);
        if let Some(Output::BindRelay { id, .. }) = h.server.poll_output() {
            h.server.relay_bound(h.now, id, Err(RelayBindError::NoPort));
        }
        assert!(h.server.outputs.len() <= MAX_QUEUED_OUTPUTS);
    }
    assert!(h.server.allocation_count() <= h.server.config().max_allocations);
    for allocation in h.server.allocations.values() {
        let (permissions, channels) = allocation.table_sizes();
        assert!(permissions <= 64 && channels <= 64);
    }
    assert!(h.server.stats().dropped_malformed > 1000);
}

#[test]
fn stream_clients_are_their_own_5_tuple_and_get_padded_channel_data() {
    let mut h = Harness::new(TurnServerConfig::default());
    // A UDP client and a TCP client with the same address: two allocations.
    let mut over_udp = Client::new(addr("192.0.2.10:4000"), "alice");
    let mut over_tcp = Client::new(addr("192.0.2.10:4000"), "alice");
    over_tcp.transport = ClientTransport::Tcp;
    let relayed_udp = h.allocate(&mut over_udp).unwrap();
    let relayed_tcp = h.allocate(&mut over_tcp).unwrap();
    assert_ne!(relayed_udp, relayed_tcp);
    assert_eq!(h.server.allocation_count(), 2);

    let peer = addr("203.0.113.5:5000");
    assert_eq!(
        h.simple(
            &mut over_tcp,
            CHANNEL_BIND,
            vec![ChannelNumber::new(0x4001).into(), peer_attr(peer)]
        ),
        None
    );
    // Peer -> TCP client: ChannelData padded to a multiple of 4, over the TCP connection.
    h.server
        .handle_relay_datagram(h.now, relayed_tcp, peer, b"odd")
        .unwrap();
    let Some(Output::Transmit(t)) = h.server.poll_output() else {
        panic!()
    };
    assert_eq!(
        (t.from, t.to),
        (Via::Client(ClientTransport::Tcp), over_tcp.addr)
    );
    assert_eq!(t.contents, [0x40, 0x01, 0x00, 0x03, b'o', b'd', b'd', 0]);
    // TCP client -> peer: a frame as the stream decoder hands it out (no padding).
    let outputs = h.client_on(
        ClientTransport::Tcp,
        over_tcp.addr,
        &channel_data::encode(0x4001, b"up"),
    );
    assert_eq!(
        outputs,
        vec![Output::Transmit(Transmit {
            from: Via::Relay(relayed_tcp),
            to: peer,
            contents: b"up".to_vec()
        })]
    );
    // The UDP client's allocation has no such channel.
    assert!(h
        .client(over_udp.addr, &channel_data::encode(0x4001, b"up"))
        .is_empty());

    // The TCP connection closes: its allocation goes, the UDP one stays.
    h.server.client_closed(crate::turn::server::Client {
        transport: ClientTransport::Tcp,
        addr: over_tcp.addr,
    });
    assert_eq!(
        h.outputs(),
        vec![Output::ReleaseRelay {
            id: AllocationId(1),
            relayed: relayed_tcp
        }]
    );
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(
        h.server
            .handle_relay_datagram(h.now, relayed_tcp, peer, b"late"),
        Err(DropReason::NoAllocation)
    );
    assert_eq!(h.simple(&mut over_udp, REFRESH, vec![]), None);
}
