//! Nym's node routing address: how a next hop is written into a Sphinx routing slot.
//!
//! Layout: `[4 | 6][port u16 BE][4 or 16 IP octets]`, zero-padded to the field's length (32 bytes
//! in a routing slot, 19 in a SURB-ACK). Trailing bytes beyond the address are ignored, as Nym
//! does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Length of the longest encoding (IPv6): 1 + 2 + 16.
pub const MAX_UNPADDED_LEN: usize = 19;

/// Why a routing address could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The first byte is neither 4 nor 6.
    #[error("routing address has IP version {0}, expected 4 or 6")]
    BadIpVersion(u8),
    /// Fewer bytes than the IP version needs.
    #[error("routing address is truncated")]
    Truncated,
}

/// Parses a routing address from the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<SocketAddr, AddressError> {
    let (&version, rest) = bytes.split_first().ok_or(AddressError::Truncated)?;
    let ip = match version {
        4 => {
            let o: [u8; 4] = rest
                .get(2..6)
                .ok_or(AddressError::Truncated)?
                .try_into()
                .map_err(|_| AddressError::Truncated)?;
            IpAddr::V4(Ipv4Addr::from(o))
        }
        6 => {
            let o: [u8; 16] = rest
                .get(2..18)
                .ok_or(AddressError::Truncated)?
                .try_into()
                .map_err(|_| AddressError::Truncated)?;
            IpAddr::V6(Ipv6Addr::from(o))
        }
        v => return Err(AddressError::BadIpVersion(v)),
    };
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    Ok(SocketAddr::new(ip, port))
}

/// Encodes `addr` zero-padded to `N` bytes (`N` >= 19).
pub fn encode<const N: usize>(addr: SocketAddr) -> [u8; N] {
    const { assert!(N >= MAX_UNPADDED_LEN) };
    let mut out = [0u8; N];
    out[1..3].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[0] = 4;
            out[3..7].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[0] = 6;
            out[3..19].copy_from_slice(&ip.octets());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_layouts() {
        let a: SocketAddr = "1.2.3.4:1789".parse().unwrap();
        let b = encode::<32>(a);
        assert_eq!(&b[..7], &[4, 0x06, 0xfd, 1, 2, 3, 4]);
        assert!(b[7..].iter().all(|&x| x == 0));
        assert_eq!(parse(&b), Ok(a));
        let a6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let b6 = encode::<19>(a6);
        assert_eq!(b6[0], 6);
        assert_eq!(parse(&b6), Ok(a6));
    }

    #[test]
    fn bad_addresses() {
        assert_eq!(parse(&[]), Err(AddressError::Truncated));
        assert_eq!(parse(&[4, 0, 1, 2, 3, 4]), Err(AddressError::Truncated));
        assert_eq!(parse(&[6; 18]), Err(AddressError::Truncated));
        assert_eq!(parse(&[5; 32]), Err(AddressError::BadIpVersion(5)));
        assert_eq!(parse(&[0; 32]), Err(AddressError::BadIpVersion(0)));
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse(&b);
        }

        #[test]
        fn round_trips(ip in any::<[u8; 16]>(), v4 in any::<bool>(), port in any::<u16>()) {
            let addr = if v4 {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])), port)
            } else {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)
            };
            prop_assert_eq!(parse(&encode::<32>(addr)), Ok(addr));
        }
    }
}
