from gateway.web.clientaddr import ClientAddress

ADDR = ClientAddress(["127.0.0.1/32", "10.0.0.0/8"])


def test_untrusted_peer_header_ignored():
    assert ADDR.of("203.0.113.9", "1.2.3.4") == "203.0.113.9"


def test_trusted_peer_gives_first_untrusted_hop_from_the_right():
    assert ADDR.of("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3") == "198.51.100.7"


def test_spoofed_left_entries_do_not_win():
    assert ADDR.of("10.0.0.1", "1.1.1.1, 198.51.100.7") == "198.51.100.7"


def test_garbage_in_chain_stops_at_last_good_hop():
    assert ADDR.of("127.0.0.1", "x, not-an-ip") == "127.0.0.1"


def test_no_header():
    assert ADDR.of("127.0.0.1", None) == "127.0.0.1"
