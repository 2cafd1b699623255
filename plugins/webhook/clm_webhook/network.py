"""Reaching an endpoint without being turned against the network we run in (SSRF).

A ruleset (or a compromised CRM feeding one) can name any URL. Left alone, a post could reach
the engine's own host (``127.0.0.1``), the cloud's metadata service (``169.254.169.254``), or
a database on the private network. So before connecting:

* the host is resolved, and **every** address it resolves to must be global (not loopback,
  RFC 1918 private, link-local, unique-local ``fc00::/7``, carrier-grade NAT ``100.64/10``,
  multicast, reserved, unspecified, documentation ...; an IPv4-mapped IPv6 address is judged
  as its IPv4 address), unless ``allow_private_networks`` is set or the address is inside one
  of ``allowed_networks``;
* the connection goes to the address that was checked, not to a second resolution of the
  name (a DNS answer that changes between check and connect, "DNS rebinding", reaches
  nothing new): the URL's host is replaced by the address, the ``Host`` header and TLS's
  server name (SNI, and certificate checking) keep the name;
* redirects are not followed unless ``follow_redirects`` is set, and then each hop is checked
  like the first;
* no proxy from the environment is used (it would connect elsewhere than checked).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from .settings import WebhookSettings, check_url

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class TargetRefused(ValueError):
    """The URL may not be reached under the settings (a private address, a redirect ...):
    permanent, retrying cannot change it."""


class TransientFailure(RuntimeError):
    """A failure worth retrying: a timeout, a refused connection, a 429 or a 5xx."""


@dataclass(frozen=True)
class Response:
    """What came back: status, the first bytes of the body, the final URL, the headers."""

    status: int
    body: str
    url: str
    retry_after: str | None = None


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise TransientFailure(f"cannot resolve {host!r}: {error.strerror}") from None
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]  # an IPv6 zone id is not part of it
        if address not in seen:
            seen.append(address)
    return seen


def refusal(address: Address, allowed: Sequence[Network], allow_private: bool) -> str | None:
    """Why ``address`` may not be reached, or ``None``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow_private or any(address in network for network in allowed):
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a global address"
    return None


def checked_address(
    url: str, settings: WebhookSettings, resolver: Resolver = resolve
) -> tuple[str, Address]:
    """The host of ``url`` and the address to connect to; ``TargetRefused`` naming the
    address and what it is when any address of the host may not be reached."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    allowed = settings.networks()
    addresses = [ipaddress.ip_address(a) for a in resolver(host, port)]
    if not addresses:
        raise TransientFailure(f"{host!r} resolves to no address")
    for address in addresses:
        why = refusal(address, allowed, settings.allow_private_networks)
        if why is not None:
            raise TargetRefused(
                f"{host} resolves to {address}, {why}: refused (allow it with the webhook "
                "settings' allowed_networks)"
            )
    return host, addresses[0]


def pinned(url: str, address: Address) -> str:
    """``url`` with its host replaced by ``address`` (the name goes in ``Host`` and SNI)."""
    parts = urlsplit(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


def host_header(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    settings: WebhookSettings,
    resolver: Resolver = resolve,
    verify: bool | str = True,
) -> Response:
    """POST ``body`` to ``url`` under the settings' network rules: the response, whatever its
    status; ``TargetRefused`` or ``TransientFailure`` when none came."""
    hops = settings.max_redirects if settings.follow_redirects else 0
    with httpx.Client(
        timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False, verify=verify
    ) as client:
        for _ in range(hops + 1):
            host, address = checked_address(url, settings, resolver)
            extensions = {"sni_hostname": host} if url.startswith("https:") else {}
            request = client.build_request(
                "POST",
                pinned(url, address),
                content=body,
                headers={**headers, "Host": host_header(url)},
                extensions=extensions,
            )
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException as error:
                raise TransientFailure(
                    f"timed out after {timeout:g} s ({type(error).__name__})"
                ) from None
            except httpx.TransportError as error:
                raise TransientFailure(f"{type(error).__name__}: {error}") from None
            try:
                text = _first_bytes(response, settings.max_response_bytes)
            finally:
                response.close()
            if 300 <= response.status_code < 400 and response.status_code != 304:
                location = response.headers.get("location")
                if not location:
                    return Response(response.status_code, text, url)
                target = urljoin(url, location)
                if not settings.follow_redirects:
                    raise TargetRefused(
                        f"{response.status_code} redirect to {target} not followed "
                        "(follow_redirects is off in the webhook settings)"
                    )
                if response.status_code in (301, 302, 303):
                    raise TargetRefused(
                        f"{response.status_code} redirect to {target} would turn the POST into "
                        "a GET: not followed (use 307 or 308)"
                    )
                try:
                    url = check_url(target)
                except ValueError as error:
                    raise TargetRefused(f"redirect to an unusable URL: {error}") from None
                continue
            return Response(response.status_code, text, url, response.headers.get("retry-after"))
    raise TargetRefused(f"more than {settings.max_redirects} redirects")


def _first_bytes(response: httpx.Response, limit: int) -> str:
    """At most ``limit`` bytes of the body, decoded leniently (the rest is never read)."""
    data = b""
    if limit:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    return data[:limit].decode("utf-8", errors="replace")
