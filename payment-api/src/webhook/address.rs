//! Which URLs webhooks may be sent to. Any http(s) URL, except that with
//! `WEBHOOK_ALLOW_PRIVATE=false` no loopback, private, link-local or otherwise internal address:
//! checked when an endpoint is created (for an address written in the URL) and again at every
//! delivery, after name resolution (so a name that later resolves inward is refused too).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest URL an endpoint may have.
pub const MAX_URL_LEN: usize = 2_048;

/// Whether `ip` is one a public endpoint never has.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let octets = v6.octets();
            let embedded = |at: usize| {
                IpAddr::V4(std::net::Ipv4Addr::new(octets[at], octets[at + 1], octets[at + 2], octets[at + 3]))
            };
            // An IPv4 address carried inside: IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96)
            // and 6to4 (2002:aabb:ccdd::/48) reach the IPv4 host they name.
            let compatible = segments[..6].iter().all(|s| *s == 0);
            let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            if (compatible || nat64) && is_internal(embedded(12)) || segments[0] == 0x2002 && is_internal(embedded(2)) {
                return true;
            }
            let first = segments[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated, still routed inward)
        }
    }
}

/// Checks an endpoint's URL; the reason it cannot be used otherwise.
pub fn check(url: &str, allow_private: bool) -> Result<Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("`url` is longer than {MAX_URL_LEN} characters"));
    }
    let parsed = Url::parse(url).map_err(|e| format!("`url` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("`url` must be http:// or https://".to_owned());
    }
    let Some(host) = parsed.host_str() else { return Err("`url` has no host".to_owned()) };
    if !allow_private {
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let local_name = host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost");
        if local_name || literal.is_some_and(is_internal) {
            return Err(
                "`url` points at a loopback or private address, which WEBHOOK_ALLOW_PRIVATE=false forbids".into()
            );
        }
    }
    Ok(parsed)
}

/// Resolves names as the system does, keeping only public addresses (for
/// `WEBHOOK_ALLOW_PRIVATE=false`).
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let found: Vec<SocketAddr> = tokio::net::lookup_host(host).await?.collect();
            let public: Vec<SocketAddr> = found.into_iter().filter(|a| !is_internal(a.ip())).collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{} resolves only to private addresses", name.as_str()).into();
                return Err(refused);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The resolver for `allow_private`.
pub fn resolver(allow_private: bool) -> Option<Arc<PublicOnly>> {
    (!allow_private).then(|| Arc::new(PublicOnly))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_only_when_asked() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://localhost/",
            "http://169.254.169.254/",
        ] {
            assert!(check(url, false).is_err(), "{url}");
            assert!(check(url, true).is_ok(), "{url}");
        }
        assert!(check("https://example.com/hooks", false).is_ok());
        assert!(check("http://[2606:4700::1111]/", false).is_ok());
        assert!(check("http://[64:ff9b::808:808]/", false).is_ok(), "NAT64 of a public address");
        for url in ["ftp://example.com/", "not a url", "http://"] {
            assert!(check(url, true).is_err(), "{url}");
        }
        assert!(check(&format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)), true).is_err());
    }
}
