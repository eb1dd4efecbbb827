//! Which address a request comes from. Behind a proxy or service mesh every
//! connection comes from the proxy; with `--trusted-proxy` naming it, the
//! client's address is taken from `X-Forwarded-For` (on HTTP and, as gRPC
//! metadata, on gRPC): the rightmost address there that is not itself a
//! trusted proxy. A connection from anywhere else is its own address,
//! whatever headers it sends.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use axum::http::HeaderMap;

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a
/// block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an address or block (10.0.0.0/8, fd00::/8)");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network = addr
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| bad())?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed; none by default.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[Cidr]>);

/// Where a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    /// The client's address.
    pub ip: IpAddr,
    /// The trusted proxy it came through, when it did.
    pub via: Option<IpAddr>,
}

impl TrustedProxies {
    /// Trusting the proxies in `blocks`.
    pub fn new(blocks: Vec<Cidr>) -> Self {
        Self(blocks.into())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(ip))
    }

    /// The client behind the connection from `peer` with `headers`.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let peer = peer.to_canonical();
        let direct = ClientAddr {
            ip: peer,
            via: None,
        };
        if !self.trusts(peer) {
            return direct;
        }
        // Every hop appends the address it got the request from: read them
        // right to left, past the proxies trusted, to the first one that
        // is not. Anything unreadable ends the walk.
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else {
                return direct;
            };
            for hop in text.split(',') {
                match parse_hop(hop.trim()) {
                    Some(ip) => hops.push(ip),
                    None => return direct,
                }
            }
        }
        let client = hops
            .iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(hops.first())
            .copied();
        match client {
            Some(ip) => ClientAddr {
                ip,
                via: Some(peer),
            },
            None => direct,
        }
    }
}

/// An `X-Forwarded-For` entry: an address, perhaps with a port.
fn parse_hop(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        headers
    }

    #[test]
    fn blocks_parse_and_contain() {
        let block: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains(ip("10.1.2.3")) && !block.contains(ip("11.0.0.1")));
        assert!(block.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped");
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_trusted_proxy_is_believed() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let header = forwarded(&["203.0.113.9, 10.0.0.3"]);
        assert_eq!(
            proxies.client_of(ip("10.0.0.2"), &header),
            ClientAddr {
                ip: ip("203.0.113.9"),
                via: Some(ip("10.0.0.2"))
            }
        );
        assert_eq!(
            proxies.client_of(ip("198.51.100.1"), &header).ip,
            ip("198.51.100.1"),
            "an untrusted peer's header is ignored"
        );
        // A client that sends its own header cannot hide behind it: the
        // rightmost untrusted hop is the one the proxy saw.
        let spoofed = forwarded(&["1.2.3.4", "203.0.113.9"]);
        assert_eq!(
            proxies.client_of(ip("10.0.0.2"), &spoofed).ip,
            ip("203.0.113.9")
        );
        let ported = forwarded(&["203.0.113.9:5555"]);
        assert_eq!(
            proxies.client_of(ip("10.0.0.2"), &ported).ip,
            ip("203.0.113.9")
        );
        for junk in [&["not an address"][..], &[]] {
            let got = proxies.client_of(ip("10.0.0.2"), &forwarded(junk));
            assert_eq!((got.ip, got.via), (ip("10.0.0.2"), None), "{junk:?}");
        }
        assert_eq!(
            TrustedProxies::default()
                .client_of(ip("10.0.0.2"), &header)
                .ip,
            ip("10.0.0.2"),
            "nothing trusted by default"
        );
    }
}
