//! Outbound URL guard: the service calls URLs that users hand it, so every target is
//! checked before a socket is opened. Checks are pure functions over the URL and over IP
//! addresses; `resolve` looks a name up once and checks every address it gets, and the
//! client then connects to exactly that checked address (no second lookup an attacker's
//! DNS could answer differently).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Why a target was refused.
/// Longest URL accepted; real API base URLs are far shorter.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("the URL is {0} characters long; at most {MAX_URL_LEN} are accepted")]
    TooLong(usize),
    #[error("{url:?} is not a valid URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("scheme {0:?} is not allowed (only http and https)")]
    Scheme(String),
    #[error("URLs with embedded credentials are refused; pass the API key through an environment variable instead")]
    Credentials,
    #[error("the URL has no host")]
    NoHost,
    #[error("host {host} is refused: {reason}")]
    BlockedHost { host: String, reason: &'static str },
    #[error(
        "address {addr} is refused: {reason} (set allow_private_targets to reach it on purpose)"
    )]
    BlockedAddr { addr: IpAddr, reason: &'static str },
    #[error("could not resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0} resolved to no addresses")]
    NoAddress(String),
}

impl GuardError {
    /// A refusal by policy, as opposed to a lookup that failed (which may work later).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Resolve { .. } | Self::NoAddress(_))
    }
}

impl From<GuardError> for crate::endpoint::EndpointError {
    fn from(err: GuardError) -> Self {
        if err.is_refusal() {
            Self::Forbidden(err.to_string())
        } else {
            // A failed lookup may work on a later try.
            Self::Connection(err.to_string())
        }
    }
}

/// The outbound policy: public http(s) targets only, unless private ones are allowed on
/// purpose (tests, local demos). Cloud metadata services stay refused either way: the flag
/// is for reaching a model on this machine or network, never the host's credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlGuard {
    allow_private: bool,
}

impl UrlGuard {
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }

    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// Checks what can be checked without a lookup: scheme, credentials, host present,
    /// literal addresses (in any IPv4 spelling the URL parser accepts) and names that
    /// always mean something internal.
    ///
    /// The `url` crate follows the WHATWG URL standard, which turns `http://2130706433/`,
    /// `http://0x7f000001/`, `http://0177.0.0.1/` and `http://127.1/` into `127.0.0.1`
    /// for http(s), so a literal address is checked whichever way it was spelled.
    pub fn check_url(&self, url: &str) -> Result<Url, GuardError> {
        if url.len() > MAX_URL_LEN {
            return Err(GuardError::TooLong(url.len()));
        }
        let parsed = Url::parse(url.trim()).map_err(|err| GuardError::InvalidUrl {
            url: url.to_string(),
            reason: err.to_string(),
        })?;
        match parsed.scheme() {
            "http" | "https" => {}
            other => return Err(GuardError::Scheme(other.to_string())),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(GuardError::Credentials);
        }
        match parsed.host() {
            None => return Err(GuardError::NoHost),
            Some(Host::Ipv4(v4)) => self.check_addr(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_addr(IpAddr::V6(v6))?,
            Some(Host::Domain(name)) => self.check_domain(name)?,
        }
        Ok(parsed)
    }

    /// Refuses names that always point inside: localhost and cloud metadata services.
    /// Everything else is judged by the addresses it resolves to.
    pub fn check_domain(&self, name: &str) -> Result<(), GuardError> {
        if name.is_empty() {
            return Err(GuardError::NoHost);
        }
        // A trailing dot is the same name (fully qualified); compare without it.
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if is_metadata_name(&name) {
            return Err(GuardError::BlockedHost {
                host: name,
                reason: "cloud metadata service",
            });
        }
        if self.allow_private {
            return Ok(());
        }
        let reason = if name == "localhost"
            || name.ends_with(".localhost")
            || name == "localhost.localdomain"
        {
            Some("localhost")
        } else if name.ends_with(".internal") || name.ends_with(".local") {
            Some("internal-only domain")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(GuardError::BlockedHost { host: name, reason }),
            None => Ok(()),
        }
    }

    /// Refuses every address that is not plain public unicast.
    pub fn check_addr(&self, ip: IpAddr) -> Result<(), GuardError> {
        let reason = match ip {
            IpAddr::V4(v4) => v4_refusal(v4),
            IpAddr::V6(v6) => v6_refusal(v6),
        };
        let reason = match reason {
            Some(_) if self.allow_private && !always_refused(ip) => None,
            other => other,
        };
        match reason {
            Some(reason) => Err(GuardError::BlockedAddr { addr: ip, reason }),
            None => Ok(()),
        }
    }

    /// Resolves the URL's host once and checks every address it resolves to; a name with
    /// any refused address is refused as a whole (a rebinding trick often mixes a public
    /// and a private answer). Returns the first address, which the caller must connect to.
    pub async fn resolve(&self, url: &Url) -> Result<SocketAddr, GuardError> {
        let port = url.port_or_known_default().ok_or(GuardError::NoHost)?;
        let name = match url.host() {
            None => return Err(GuardError::NoHost),
            Some(Host::Ipv4(v4)) => {
                self.check_addr(IpAddr::V4(v4))?;
                return Ok(SocketAddr::new(IpAddr::V4(v4), port));
            }
            Some(Host::Ipv6(v6)) => {
                self.check_addr(IpAddr::V6(v6))?;
                return Ok(SocketAddr::new(IpAddr::V6(v6), port));
            }
            Some(Host::Domain(name)) => name,
        };
        self.check_domain(name)?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
            .await
            .map_err(|err| GuardError::Resolve {
                host: name.to_string(),
                reason: err.to_string(),
            })?
            .collect();
        let first = self.check_resolved(name, &addrs)?;
        tracing::debug!(host = name, %first, "resolved and checked outbound target");
        Ok(first)
    }

    /// Checks every address a name resolved to and picks the first; split from `resolve`
    /// so the decision can be tested without a lookup.
    pub fn check_resolved(
        &self,
        name: &str,
        addrs: &[SocketAddr],
    ) -> Result<SocketAddr, GuardError> {
        for addr in addrs {
            self.check_addr(addr.ip())?;
        }
        addrs
            .first()
            .copied()
            .ok_or_else(|| GuardError::NoAddress(name.to_string()))
    }
}

/// Cloud metadata addresses (AWS/GCP/Azure, Alibaba, Oracle-style).
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Addresses refused even where private targets are allowed: metadata services and the
/// link-local ranges they (and container credential endpoints) live in, however the
/// address is spelled (plain, or carried inside an IPv6 address).
fn always_refused(ip: IpAddr) -> bool {
    let v4_bad = |v4: Ipv4Addr| METADATA_V4.contains(&v4) || in_v4(v4, [169, 254, 0, 0], 16);
    match ip {
        IpAddr::V4(v4) => v4_bad(v4),
        IpAddr::V6(v6) => {
            v6 == METADATA_V6
                || in_v6(v6, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)
                || embedded_v4(v6).is_some_and(v4_bad)
        }
    }
}

/// The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if bits >> 32 == 0 || in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(Ipv4Addr::from((bits & 0xffff_ffff) as u32));
    }
    if ip.segments()[0] == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// Names of cloud metadata services (GCP, AWS, Azure-style aliases).
fn is_metadata_name(name: &str) -> bool {
    matches!(
        name,
        "metadata" | "metadata.google.internal" | "metadata.goog" | "instance-data"
    ) || name.starts_with("instance-data.")
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

/// Why an IPv4 address is not public unicast, if it is not.
fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    // Specific names first so the message says the most useful thing.
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "cloud metadata address"),
        ([100, 100, 100, 200], 32, "cloud metadata address"),
        ([192, 0, 0, 192], 32, "cloud metadata address"),
        ([0, 0, 0, 0], 8, "unspecified / this-network address"),
        ([127, 0, 0, 0], 8, "loopback address"),
        ([10, 0, 0, 0], 8, "private address"),
        ([172, 16, 0, 0], 12, "private address"),
        ([192, 168, 0, 0], 16, "private address"),
        ([169, 254, 0, 0], 16, "link-local address"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT address"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 0, 2, 0], 24, "documentation address"),
        ([198, 51, 100, 0], 24, "documentation address"),
        ([203, 0, 113, 0], 24, "documentation address"),
        ([198, 18, 0, 0], 15, "benchmarking address"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast address"),
        ([224, 0, 0, 0], 4, "multicast address"),
        ([255, 255, 255, 255], 32, "broadcast address"),
        ([240, 0, 0, 0], 4, "reserved address"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

/// Why an IPv6 address is not public unicast, if it is not. Addresses that carry an IPv4
/// address (mapped, NAT64, 6to4) are judged by the address they carry.
fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    let seg = ip.segments();

    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    // ::ffff:a.b.c.d, IPv4-mapped: the socket goes to the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_refusal(v4).map(|_| "IPv4-mapped IPv6 address of a refused IPv4 address");
    }
    // ::a.b.c.d, IPv4-compatible (deprecated); no public service is reached this way.
    if bits >> 32 == 0 {
        return Some("IPv4-compatible IPv6 address");
    }
    // 64:ff9b::/96, well-known NAT64 prefix: the gateway forwards to the embedded IPv4.
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        let v4 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
        return v4_refusal(v4).map(|_| "NAT64 address of a refused IPv4 address");
    }
    // 2002::/16, 6to4: the IPv4 address sits in bits 16..48.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
        return v4_refusal(v4).map(|_| "6to4 address of a refused IPv4 address");
    }

    const RANGES: &[(Ipv6Addr, u32, &str)] = &[
        (
            Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
            128,
            "cloud metadata address",
        ),
        (
            Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
            48,
            "local-use NAT64 address",
        ),
        (
            Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
            64,
            "discard-only address",
        ),
        (
            Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
            32,
            "Teredo address",
        ),
        (
            Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0),
            48,
            "benchmarking address",
        ),
        (
            Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0),
            28,
            "ORCHID address",
        ),
        (
            Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0),
            28,
            "ORCHIDv2 address",
        ),
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
            32,
            "documentation address",
        ),
        (
            Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
            20,
            "documentation address",
        ),
        (
            Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
            7,
            "unique-local address",
        ),
        (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
            10,
            "link-local address",
        ),
        (
            Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
            10,
            "site-local address",
        ),
        (
            Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
            8,
            "multicast address",
        ),
    ];
    if let Some((_, _, reason)) = RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
    {
        return Some(reason);
    }
    // Everything outside global unicast 2000::/3 is reserved or special.
    if !in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return Some("reserved IPv6 address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> UrlGuard {
        UrlGuard::new(false)
    }

    /// Attempts to reach something internal; every one must be refused by `check_url`
    /// alone, without any lookup.
    const BYPASSES: &[&str] = &[
        // Plain internal targets.
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/v1",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://172.31.255.255/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://0/",
        "http://255.255.255.255/",
        "http://224.0.0.1/",
        "http://192.0.2.10/",
        "http://198.51.100.7/",
        "http://203.0.113.9/",
        // Cloud metadata.
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata.google.internal./",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
        // Other spellings of 127.0.0.1.
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://0177.0.0.1/",
        "http://0177.0000.0000.0001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
        "http://017700000001/",
        "http://0xa9fea9fe/",
        "http://3232235777/",
        // IPv6 forms.
        "http://[::1]/",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b::a00:1]/",
        "http://[2002:7f00:1::]/",
        "http://[2002:c0a8:101::1]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[ff02::1]/",
        "http://[2001:db8::1]/",
        // Credentials, schemes, confusing authorities.
        "http://user:pass@example.com/",
        "http://example.com@127.0.0.1/",
        "http://127.0.0.1:80@example.com/",
        "http://user@example.com/",
        "file:///etc/passwd",
        "ftp://example.com/",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:11211/",
        "ws://example.com/",
        "javascript:alert(1)",
        "data:text/plain,hello",
        "not a url",
        "http://[fe80::1%25eth0]/",
        "http://1.2.3.4.5/",
        "http://127.0.0.1#@example.com/",
    ];

    #[test]
    fn bypass_table_is_refused() {
        assert!(BYPASSES.len() >= 30);
        let guard = strict();
        for url in BYPASSES {
            match guard.check_url(url) {
                Ok(parsed) => panic!("{url} was accepted as {parsed}"),
                Err(err) => assert!(err.is_refusal(), "{url}: {err}"),
            }
        }
    }

    #[test]
    fn url_crate_normalises_ipv4_spellings() {
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://%31%32%37.0.0.1/",
            "http://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(
                parsed.host(),
                Some(Host::Ipv4(Ipv4Addr::LOCALHOST)),
                "{url}"
            );
        }
    }

    #[test]
    fn public_targets_pass() {
        let guard = strict();
        for url in [
            "http://8.8.8.8/v1",
            "https://1.1.1.1:8443/v1",
            "https://[2606:4700::1111]/v1",
            "https://api.openai.com/v1",
            "https://api.example.com:8443/openai/v1?x=1",
            "http://172.32.0.1/",
            "http://[::ffff:8.8.8.8]/",
            "http://[2002:808:808::1]/",
            "http://[64:ff9b::808:808]/",
        ] {
            let parsed = guard.check_url(url);
            assert!(parsed.is_ok(), "{url}: {parsed:?}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.15.255.255",
            "100.128.0.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(guard.check_addr(ip), Ok(()), "{ip}");
        }
    }

    #[test]
    fn refused_addresses_name_a_reason() {
        let guard = strict();
        let cases = [
            ("169.254.169.254", "cloud metadata address"),
            ("127.0.0.53", "loopback address"),
            ("::1", "loopback address"),
            ("fd00:ec2::254", "cloud metadata address"),
            ("100.127.255.255", "carrier-grade NAT address"),
            (
                "::ffff:10.1.2.3",
                "IPv4-mapped IPv6 address of a refused IPv4 address",
            ),
            ("64:ff9b::c0a8:1", "NAT64 address of a refused IPv4 address"),
            ("2002:a9fe:a9fe::", "6to4 address of a refused IPv4 address"),
            ("2001::1", "Teredo address"),
            ("::2", "IPv4-compatible IPv6 address"),
            ("4000::1", "reserved IPv6 address"),
        ];
        for (ip, reason) in cases {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(
                guard.check_addr(addr),
                Err(GuardError::BlockedAddr { addr, reason }),
                "{ip}"
            );
        }
    }

    #[test]
    fn allow_private_lets_loopback_through_but_not_bad_schemes() {
        let guard = UrlGuard::new(true);
        assert!(guard.check_url("http://127.0.0.1:9/v1").is_ok());
        assert!(guard.check_url("http://localhost:9/v1").is_ok());
        assert!(guard.check_addr("::1".parse().unwrap()).is_ok());
        assert_eq!(
            guard.check_url("file:///etc/passwd"),
            Err(GuardError::Scheme("file".into()))
        );
        assert_eq!(
            guard.check_url("http://a:b@127.0.0.1/"),
            Err(GuardError::Credentials)
        );
    }

    #[test]
    fn metadata_stays_refused_when_private_targets_are_allowed() {
        let guard = UrlGuard::new(true);
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://metadata.google.internal./",
            "http://METADATA/",
            "http://instance-data.ec2.internal/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::]/",
            "http://2852039166/",
            "http://100.100.100.200/",
            "http://169.254.170.2/v2/credentials",
            "http://[fe80::1]/",
        ] {
            assert!(guard.check_url(url).is_err(), "{url}");
        }
        for ip in ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"] {
            assert!(guard.check_addr(ip.parse().unwrap()).is_err(), "{ip}");
        }
        // What the flag is for still passes.
        for url in [
            "http://127.0.0.1:8000/v1",
            "http://10.1.2.3/v1",
            "http://192.168.1.5/v1",
            "http://[::1]:8000/v1",
        ] {
            assert!(guard.check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn urls_are_bounded_in_length() {
        let guard = UrlGuard::new(true);
        let long = format!("http://127.0.0.1/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(guard.check_url(&long), Err(GuardError::TooLong(long.len())));
        let fits = format!("http://127.0.0.1/{}", "a".repeat(100));
        assert!(guard.check_url(&fits).is_ok());
    }

    #[test]
    fn one_refused_answer_refuses_the_name() {
        let public: SocketAddr = "8.8.8.8:443".parse().unwrap();
        let private: SocketAddr = "10.0.0.5:443".parse().unwrap();
        let guard = strict();
        assert_eq!(guard.check_resolved("a.example", &[public]), Ok(public));
        assert!(matches!(
            guard.check_resolved("a.example", &[public, private]),
            Err(GuardError::BlockedAddr { .. })
        ));
        assert_eq!(
            guard.check_resolved("a.example", &[]),
            Err(GuardError::NoAddress("a.example".into()))
        );
        assert_eq!(
            UrlGuard::new(true).check_resolved("a.example", &[private, public]),
            Ok(private)
        );
    }

    #[tokio::test]
    async fn resolve_checks_every_address() {
        // Only loopback is ever looked up or reached in tests.
        let url = Url::parse("http://localhost:1234/v1").unwrap();
        let err = strict().resolve(&url).await.unwrap_err();
        assert!(err.is_refusal(), "{err}");

        let url = Url::parse("http://127.0.0.1:1234/v1").unwrap();
        assert!(matches!(
            strict().resolve(&url).await,
            Err(GuardError::BlockedAddr { .. })
        ));
        let addr = UrlGuard::new(true).resolve(&url).await.unwrap();
        assert_eq!(addr, "127.0.0.1:1234".parse().unwrap());

        let url = Url::parse("http://[::1]/").unwrap();
        let addr = UrlGuard::new(true).resolve(&url).await.unwrap();
        assert_eq!(addr, "[::1]:80".parse().unwrap());
    }

    #[tokio::test]
    async fn resolve_of_localhost_with_private_allowed_gives_loopback() {
        let url = Url::parse("http://localhost:4321/").unwrap();
        // Some sandboxes have no resolver entry for localhost; only check what we get.
        if let Ok(addr) = UrlGuard::new(true).resolve(&url).await {
            assert!(addr.ip().is_loopback(), "{addr}");
            assert_eq!(addr.port(), 4321);
            assert!(strict().check_addr(addr.ip()).is_err());
        }
    }
}
