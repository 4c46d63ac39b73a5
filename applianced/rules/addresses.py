"""The canonical form of an address or network, and the network a ban of an address covers.

Pure. Every place where an address enters the program calls it: the config loader (ignoreip,
allowed_senders, senders), the control socket (ban, unban, blacklist, why), the filters (a
``<HOST>`` capture), hostname lookups, the cluster's shared bans and failures, and the
``whitelist`` config edit. So a rule, a protection check and the kernel all see one form:

- an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is the IPv4 address it carries, and an
  IPv4-mapped network (``::ffff:192.0.2.0/120``) the IPv4 network (``192.0.2.0/24``);
- an IPv6 address that stands for an IPv4 host, behind a NAT64 translator (``64:ff9b::/96``,
  ``64:ff9b:1::/48``) or a Teredo relay (``2001::/32``), is banned as itself: its /64 would
  cover every IPv4 host behind the same translator or relay.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from applianced.rules.decision import IPAddress, IPNetwork

__all__ = [
    "canonical_address",
    "canonical_network",
    "host_only",
    "network_of",
    "parse_address",
    "parse_network",
]

# IPv6 ranges whose addresses each stand for one IPv4 host elsewhere, never widened; kept
# as the address's top bits (value >> (128 - prefix length)), which host_only compares:
# 64:ff9b::/96, NAT64's well-known prefix (RFC 6052); 64:ff9b:1::/48, NAT64's local-use
# prefix (RFC 8215); 2001::/32, Teredo (RFC 4380), where a /64 is one server and all its clients.
_NAT64 = int(IPv6Address("64:ff9b::")) >> 32
_NAT64_LOCAL = int(IPv6Address("64:ff9b:1::")) >> 80
_TEREDO = int(IPv6Address("2001::")) >> 96
_MAPPED = IPv6Network("::ffff:0:0/96")


def canonical_address(address: IPAddress) -> IPAddress:
    """``address`` as the program keeps it: IPv4-mapped IPv6 becomes IPv4."""
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical_network(network: IPNetwork) -> IPNetwork:
    """``network`` as the program keeps it: a network inside ``::ffff:0:0/96`` becomes the
    IPv4 network it maps (``::ffff:192.0.2.10/128`` is ``192.0.2.10/32``)."""
    if isinstance(network, IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        return IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def host_only(value: int) -> bool:
    """Whether the IPv6 address ``value`` (as an integer) must be banned as itself, never as
    a prefix (the ranges above). Integers because the jails test it on every IPv6 failure."""
    return value >> 32 == _NAT64 or value >> 80 == _NAT64_LOCAL or value >> 96 == _TEREDO


def network_of(address: IPAddress, ipv6_prefix: int) -> IPNetwork:
    """The network a ban of ``address`` covers: the address itself for IPv4 and for an IPv6
    address that stands for an IPv4 host, else its ``ipv6_prefix`` (one host usually owns a
    whole /64)."""
    # Built from integers: ipaddress re-parses the text form when given an address object.
    address = canonical_address(address)
    if address.version == 6:
        value = int(address)
        shift = 0 if host_only(value) else 128 - min(ipv6_prefix, 128)
        return IPv6Network(((value >> shift) << shift, 128 - shift))
    return IPv4Network((int(address), 32))


def parse_address(text: str) -> IPAddress:
    """The canonical address written in ``text``; ValueError says what is expected."""
    try:
        return canonical_address(ip_address(text.strip()))
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IPv4 or IPv6 address (203.0.113.7, 2001:db8::7)"
        ) from None


def parse_network(text: str) -> IPNetwork:
    """The canonical network written in ``text``, an address or a CIDR (host bits allowed:
    ``192.0.2.7/24`` is ``192.0.2.0/24``); ValueError says what is expected."""
    try:
        return canonical_network(ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(
            f"{text!r} is not an address or CIDR network (203.0.113.7, 2001:db8::/48)"
        ) from None
