"""The SSRF rules and the signature format, on their own."""

from __future__ import annotations

import ipaddress

import pytest
from clm_webhook import network, signing
from clm_webhook.settings import WebhookSettings
from hypothesis import given
from hypothesis import strategies as st
from webhook_receiver import Receiver


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.254", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # cloud metadata services
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),  # unique local
        ("fd12:3456::1", "a private address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped: judged as IPv4
        ("::ffff:10.0.0.1", "a private address"),
        ("100.64.0.1", "not a global address"),  # carrier-grade NAT
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("192.0.2.10", "a private address"),  # documentation (TEST-NET-1)
        ("198.18.0.1", "a private address"),  # benchmarking
        ("240.0.0.1", "a private address"),  # reserved
    ],
)
def test_non_global_addresses_are_refused(address, why):
    assert network.refusal(ipaddress.ip_address(address), [], False) == why


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_global_addresses_are_reached(address):
    assert network.refusal(ipaddress.ip_address(address), [], False) is None


def test_allowed_networks_and_allow_private_open_exactly_what_they_say():
    allowed = [ipaddress.ip_network("10.20.0.0/16")]
    assert network.refusal(ipaddress.ip_address("10.20.3.4"), allowed, False) is None
    assert network.refusal(ipaddress.ip_address("10.21.3.4"), allowed, False) is not None
    assert network.refusal(ipaddress.ip_address("127.0.0.1"), [], True) is None


def test_a_name_is_refused_when_any_of_its_addresses_is_private():
    settings = WebhookSettings()

    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.5"]

    with pytest.raises(network.TargetRefused, match=r"resolves to 10\.0\.0\.5, a private"):
        network.checked_address("https://mixed.example.com/x", settings, resolver)


def test_localhost_by_name_is_refused():
    with pytest.raises(network.TargetRefused, match="loopback"):
        network.checked_address("http://localhost:9/x", WebhookSettings())


def test_the_connection_goes_to_the_checked_address_with_the_name_in_host():
    # DNS rebinding: the name is resolved once, checked, and that address is the one reached.
    server = Receiver()
    try:
        settings = WebhookSettings(allowed_networks=["127.0.0.1/32"])
        calls: list[str] = []

        def resolver(host: str, port: int) -> list[str]:
            calls.append(host)
            return ["127.0.0.1"]

        url = f"http://hooks.example.test:{server.port}/in"
        response = network.post(
            url, body=b"{}", headers={}, timeout=5, settings=settings, resolver=resolver
        )
        assert response.status == 200
        assert calls == ["hooks.example.test"]
        [request] = server.received
        assert request.headers["host"] == f"hooks.example.test:{server.port}"
    finally:
        server.close()


def test_an_unresolvable_name_is_a_transient_failure():
    with pytest.raises(network.TransientFailure, match="cannot resolve"):
        network.checked_address("https://no-such-host.invalid/x", WebhookSettings())


SECRET = b"a-secret-of-enough-length"


@given(st.binary(max_size=2000), st.integers(min_value=0, max_value=2**36))
def test_a_signature_verifies_and_any_change_to_the_body_breaks_it(body, timestamp):
    header = signing.signature(SECRET, timestamp, body)
    assert header.startswith("v1=") and len(header) == 67
    ok = signing.verify([SECRET], timestamp=str(timestamp), header=header, body=body, now=timestamp)
    assert ok
    assert not signing.verify(
        [SECRET], timestamp=str(timestamp), header=header, body=body + b" ", now=timestamp
    )
    assert not signing.verify(
        [b"another-secret-entirely"],
        timestamp=str(timestamp),
        header=header,
        body=body,
        now=timestamp,
    )


def test_an_old_or_malformed_timestamp_is_refused_and_rotated_secrets_are_accepted():
    header = signing.signature(SECRET, 1_000_000, b"{}")
    verify = signing.verify
    assert not verify([SECRET], timestamp="1000000", header=header, body=b"{}", now=1_000_301)
    assert verify([SECRET], timestamp="1000000", header=header, body=b"{}", now=1_000_299)
    assert not verify([SECRET], timestamp="-1000000", header=header, body=b"{}", now=1_000_000)
    assert not verify([SECRET], timestamp="1e6", header=header, body=b"{}", now=1_000_000)
    # While a secret is being rotated the receiver accepts the old and the new one.
    assert verify(
        [b"new-secret-value-xyz", SECRET],
        timestamp="1000000",
        header=header,
        body=b"{}",
        now=1_000_000,
    )
    both = f"v1=deadbeef, {header}"
    assert verify([SECRET], timestamp="1000000", header=both, body=b"{}", now=1_000_000)
