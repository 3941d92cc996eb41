"""Parsing of event lines (docs/PROTOCOL.md section 1.1)."""

import pytest

from p2pnat.events import parse_event


def test_ready():
    e = parse_event("ready peerabc local=192.168.1.2:5000,127.0.0.1:5000 observed=203.0.113.9:6000")
    assert (e.kind, e.peer_id, e.observed_addr) == ("ready", "peerabc", "203.0.113.9:6000")
    assert e.local_addrs == ("192.168.1.2:5000", "127.0.0.1:5000")
    e = parse_event("ready peerabc local=10.0.0.1:1 observed=203.0.113.9:6000 nat=endpoint-dependent")
    assert e.nat == "endpoint-dependent"
    e = parse_event("ready peerabc local=10.0.0.1:1 observed=-")
    assert e.observed_addr is None


def test_connected_and_path():
    e = parse_event("connected p1 direct 10.0.0.2:4000")
    assert (e.kind, e.peer_id, e.path, e.remote_addr) == ("connected", "p1", "direct", "10.0.0.2:4000")
    e = parse_event("path p1 relayed 198.51.100.1:3478")
    assert (e.kind, e.path) == ("path", "relayed")


def test_free_text_is_the_last_field():
    e = parse_event("failed 42 p1 peer unreachable: timed out after 10 s")
    assert (e.msg_id, e.peer_id, e.reason) == (42, "p1", "peer unreachable: timed out after 10 s")
    e = parse_event("disconnected p1 closed by peer")
    assert e.reason == "closed by peer"
    e = parse_event("error too-large message of 20000000 bytes over --max-message")
    assert (e.code, e.reason) == ("too-large", "message of 20000000 bytes over --max-message")
    e = parse_event("delivered 18446744073709551615 p1")
    assert e.msg_id == 2**64 - 1


def test_list_answers():
    e = parse_event("peer p1 connecting - -")
    assert (e.state, e.path, e.remote_addr) == ("connecting", None, None)
    assert parse_event("peers 3").count == 3
    assert parse_event("id me").peer_id == "me"


@pytest.mark.parametrize("line", ["", "ready", "failed", "failed notanumber", "delivered x",
                                  "connected", "peers many", "brand-new-event a b c", "\udcff weird"])
def test_never_raises_on_odd_lines(line):
    e = parse_event(line)
    assert e.raw == line
    assert e.kind == line.partition(" ")[0]


def test_unknown_event_keeps_its_words():
    e = parse_event("nat-type port-restricted 1.2.3.4:5")
    assert e.args == ("port-restricted", "1.2.3.4:5")
