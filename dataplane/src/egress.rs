//! The egress policy: which next hops a node sends to.
//!
//! Whoever builds a Sphinx packet chooses each hop's next address and the bytes that arrive
//! there, so a node that forwarded anywhere could be made to send chosen UDP or TCP to services
//! on its own host or network. A node therefore never forwards to an address that is
//! unspecified, multicast, broadcast, link-local or reserved, nor to its own listen addresses;
//! loopback and private ranges (RFC 1918, CGNAT `100.64.0.0/10`, ULA `fc00::/7`) only when
//! [`EgressPolicy`] allows them. IPv6 addresses that embed an IPv4 one (IPv4-mapped
//! `::ffff:a.b.c.d` and the deprecated IPv4-compatible `::a.b.c.d`) are judged as that IPv4
//! address. The check runs once per packet: it allocates nothing, and the node's own addresses
//! are worked out once, when the node starts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::counters::NodeDrop;

/// Which kinds of next-hop address a node may send to, beyond public unicast ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Loopback next hops (`127.0.0.0/8`, `::1`): for nodes that all run on one host (tests,
    /// the demo, benchmarks).
    pub allow_loopback: bool,
    /// Private next hops (RFC 1918, `100.64.0.0/10`, `fc00::/7`): for a mixnet on a private
    /// network.
    pub allow_private: bool,
}

impl EgressPolicy {
    /// Public unicast next hops only: what a node on the Internet wants.
    pub const STRICT: EgressPolicy = EgressPolicy {
        allow_loopback: false,
        allow_private: false,
    };
    /// Public and loopback next hops: what [`crate::node::NodeConfig::default`] allows, for
    /// nodes that all run on one host (tests, the demo, benchmarks).
    pub const LOOPBACK: EgressPolicy = EgressPolicy {
        allow_loopback: true,
        allow_private: false,
    };
    /// Public, private and loopback next hops: for nodes that run on one host or network.
    pub const LOCAL: EgressPolicy = EgressPolicy {
        allow_loopback: true,
        allow_private: true,
    };
}

/// What kind of address an IP is, for the egress policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrKind {
    /// Never a next hop: unspecified, multicast, broadcast, link-local, reserved.
    Unroutable,
    /// Loopback.
    Loopback,
    /// A private range.
    Private,
    /// Anything else.
    Public,
}

/// The IPv4 address an IPv6 address stands for, if it embeds one (IPv4-mapped or
/// IPv4-compatible; `::` and `::1` are IPv6's own unspecified and loopback addresses).
fn embedded_v4(v6: &Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(v4),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => Some(v4),
        _ => None,
    }
}

fn kind_v4(ip: Ipv4Addr) -> AddrKind {
    let [a, b, ..] = ip.octets();
    if a == 0 || ip.is_link_local() || ip.is_multicast() || a >= 240 {
        // 0/8 "this network", 169.254/16, 224/4, 240/4 (reserved, and the broadcast address)
        AddrKind::Unroutable
    } else if ip.is_loopback() {
        AddrKind::Loopback
    } else if ip.is_private() || (a == 100 && (b & 0xc0) == 64) {
        AddrKind::Private
    } else {
        AddrKind::Public
    }
}

fn kind_v6(ip: &Ipv6Addr) -> AddrKind {
    if let Some(v4) = embedded_v4(ip) {
        return kind_v4(v4);
    }
    let first = ip.segments()[0];
    if ip.is_unspecified() || ip.is_multicast() || (first & 0xffc0) == 0xfe80 {
        AddrKind::Unroutable
    } else if ip.is_loopback() {
        AddrKind::Loopback
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfec0 {
        // ULA fc00::/7, and the deprecated site-local fec0::/10
        AddrKind::Private
    } else {
        AddrKind::Public
    }
}

/// The kind of `ip` (an IPv6 address embedding an IPv4 one is judged as that address).
pub(crate) fn kind(ip: IpAddr) -> AddrKind {
    match ip {
        IpAddr::V4(v4) => kind_v4(v4),
        IpAddr::V6(v6) => kind_v6(&v6),
    }
}

/// The same IP in one canonical form: an IPv6 address that embeds an IPv4 one becomes it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(&v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The IP addresses of the host's interfaces (empty, and logged, if they cannot be listed).
fn local_ips() -> Vec<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid place for getifaddrs to store its list's head.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot list the host's addresses: only explicit listen addresses count as the node's own"
        );
        return Vec::new();
    }
    let mut ips = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null `ifa_addr` points to a sockaddr whose family says its type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: the family is AF_INET, so the sockaddr is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                ips.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: the family is AF_INET6, so the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                ips.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once; no reference into
    // the list outlives this call.
    unsafe { libc::freeifaddrs(head) };
    ips
}

/// An [`EgressPolicy`] with the node's own addresses worked out: what each packet's next hop
/// is checked against.
#[derive(Debug, Clone)]
pub(crate) struct EgressFilter {
    policy: EgressPolicy,
    /// The node's own addresses (canonical IPs), never a next hop.
    own: Vec<SocketAddr>,
}

impl EgressFilter {
    /// A filter for `policy` on a node listening at `listen` (UDP and TCP listen addresses).
    /// A listen address on an unspecified IP stands for every address of the host's
    /// interfaces with that port.
    pub(crate) fn new(policy: EgressPolicy, listen: &[SocketAddr]) -> EgressFilter {
        let mut own = Vec::new();
        for a in listen {
            if a.ip().is_unspecified() {
                own.extend(
                    local_ips()
                        .into_iter()
                        .map(|ip| SocketAddr::new(canonical(ip), a.port())),
                );
            } else {
                own.push(SocketAddr::new(canonical(a.ip()), a.port()));
            }
        }
        own.sort_unstable();
        own.dedup();
        EgressFilter { policy, own }
    }

    /// Whether a packet may be sent to `to` (a reason to drop it if not).
    pub(crate) fn check(&self, to: SocketAddr) -> Result<(), NodeDrop> {
        if to.port() == 0 {
            return Err(NodeDrop::UnroutableNextHop);
        }
        match kind(to.ip()) {
            AddrKind::Unroutable => return Err(NodeDrop::UnroutableNextHop),
            AddrKind::Loopback if !self.policy.allow_loopback => {
                return Err(NodeDrop::LoopbackNextHop);
            }
            AddrKind::Private if !self.policy.allow_private => {
                return Err(NodeDrop::PrivateNextHop);
            }
            _ => {}
        }
        let canon = SocketAddr::new(canonical(to.ip()), to.port());
        if self.own.contains(&canon) {
            return Err(NodeDrop::OwnAddressNextHop);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: &EgressFilter, a: &str) -> Result<(), NodeDrop> {
        f.check(a.parse().unwrap())
    }

    #[test]
    fn address_kinds() {
        let cases = [
            ("0.0.0.0", AddrKind::Unroutable),
            ("0.1.2.3", AddrKind::Unroutable),
            ("169.254.1.1", AddrKind::Unroutable),
            ("224.0.0.1", AddrKind::Unroutable),
            ("240.0.0.1", AddrKind::Unroutable),
            ("255.255.255.255", AddrKind::Unroutable),
            ("127.0.0.1", AddrKind::Loopback),
            ("127.9.9.9", AddrKind::Loopback),
            ("10.1.2.3", AddrKind::Private),
            ("172.16.0.1", AddrKind::Private),
            ("172.31.255.255", AddrKind::Private),
            ("192.168.1.1", AddrKind::Private),
            ("100.64.0.1", AddrKind::Private),
            ("100.127.255.255", AddrKind::Private),
            ("100.128.0.1", AddrKind::Public),
            ("172.32.0.1", AddrKind::Public),
            ("192.0.2.1", AddrKind::Public),
            ("::", AddrKind::Unroutable),
            ("ff02::1", AddrKind::Unroutable),
            ("fe80::1", AddrKind::Unroutable),
            ("::1", AddrKind::Loopback),
            ("fd00::1", AddrKind::Private),
            ("fc00::1", AddrKind::Private),
            ("2001:db8::1", AddrKind::Public),
            // IPv4-mapped and IPv4-compatible forms are judged as the IPv4 address
            ("::ffff:127.0.0.1", AddrKind::Loopback),
            ("::ffff:10.0.0.1", AddrKind::Private),
            ("::ffff:169.254.0.1", AddrKind::Unroutable),
            ("::ffff:0.0.0.0", AddrKind::Unroutable),
            ("::ffff:255.255.255.255", AddrKind::Unroutable),
            ("::ffff:192.0.2.1", AddrKind::Public),
            ("::127.0.0.1", AddrKind::Loopback),
            ("::192.168.0.1", AddrKind::Private),
            ("::224.0.0.1", AddrKind::Unroutable),
        ];
        for (ip, want) in cases {
            assert_eq!(kind(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn strict_policy_refuses_local_targets_and_allows_public_ones() {
        let f = EgressFilter::new(EgressPolicy::STRICT, &[]);
        assert_eq!(check(&f, "192.0.2.1:1789"), Ok(()));
        assert_eq!(check(&f, "[2001:db8::1]:1789"), Ok(()));
        assert_eq!(check(&f, "192.0.2.1:0"), Err(NodeDrop::UnroutableNextHop));
        for a in [
            "127.0.0.1:22",
            "[::1]:22",
            "[::ffff:127.0.0.1]:22",
            "[::127.0.0.1]:22",
        ] {
            assert_eq!(check(&f, a), Err(NodeDrop::LoopbackNextHop), "{a}");
        }
        for a in [
            "10.0.0.1:53",
            "[fd00::1]:53",
            "[::ffff:192.168.1.1]:53",
            "100.64.0.1:53",
        ] {
            assert_eq!(check(&f, a), Err(NodeDrop::PrivateNextHop), "{a}");
        }
        for a in [
            "169.254.169.254:80",
            "[fe80::1]:80",
            "255.255.255.255:9",
            "[ff02::1]:9",
        ] {
            assert_eq!(check(&f, a), Err(NodeDrop::UnroutableNextHop), "{a}");
        }
    }

    #[test]
    fn local_policy_allows_loopback_and_private_but_never_the_node_itself() {
        let me: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let f = EgressFilter::new(EgressPolicy::LOCAL, &[me]);
        assert_eq!(check(&f, "127.0.0.1:4001"), Ok(()));
        assert_eq!(check(&f, "10.0.0.1:4001"), Ok(()));
        assert_eq!(
            check(&f, "127.0.0.1:4000"),
            Err(NodeDrop::OwnAddressNextHop)
        );
        assert_eq!(
            check(&f, "[::ffff:127.0.0.1]:4000"),
            Err(NodeDrop::OwnAddressNextHop)
        );
        // still never link-local or multicast
        assert_eq!(
            check(&f, "169.254.169.254:80"),
            Err(NodeDrop::UnroutableNextHop)
        );
    }

    #[test]
    fn a_wildcard_listen_address_stands_for_the_hosts_addresses() {
        let f = EgressFilter::new(EgressPolicy::LOCAL, &["0.0.0.0:4100".parse().unwrap()]);
        // every host has a loopback interface
        assert_eq!(
            check(&f, "127.0.0.1:4100"),
            Err(NodeDrop::OwnAddressNextHop)
        );
        assert_eq!(check(&f, "127.0.0.1:4101"), Ok(()));
    }
}
