//! Config value types that validate themselves while deserializing, so the
//! TOML parser reports the span of the bad value rather than of its table.

use std::net::{IpAddr, SocketAddr};

use std::borrow::Cow;

use ipnet::IpNet;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de::Error as _, Deserialize, Deserializer};

/// A socket address such as `0.0.0.0:8080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(ListenAddr).map_err(|_| {
            D::Error::custom(format!(
                "invalid listen address {s:?}: expected IP:PORT, e.g. \"0.0.0.0:8080\""
            ))
        })
    }
}

/// The origin's base URL: `http://host[:port]` or `https://host[:port]`, no
/// path, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    https: bool,
    host: String,
    authority: String,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s
            .parse()
            .map_err(|e| format!("invalid upstream URL {s:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "invalid upstream URL {s:?}: must start with http:// or https://"
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid upstream URL {s:?}: no host"))?;
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(format!(
                "invalid upstream URL {s:?}: must not have a path or query"
            ));
        }
        if authority.as_str().contains('@') {
            return Err(format!(
                "invalid upstream URL {s:?}: credentials are not allowed"
            ));
        }
        let host = authority.host().to_string();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if https && rustls::pki_types::ServerName::try_from(bare).is_err() {
            return Err(format!(
                "invalid upstream URL {s:?}: {bare:?} is not a DNS name or IP address"
            ));
        }
        let authority = if authority.port().is_some() {
            authority.as_str().to_string()
        } else {
            format!("{host}:{}", if https { 443 } else { 80 })
        };
        Ok(UpstreamUrl {
            https,
            host,
            authority,
        })
    }

    /// `host:port` of the origin (the port filled in from the scheme).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether the origin speaks TLS (`https://`).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host alone, without brackets for an IPv6 address: the default TLS
    /// server name.
    pub fn host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// `http://host:port` or `https://host:port`.
    pub fn base(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UpstreamUrl::parse(&s).map_err(D::Error::custom)
    }
}

/// `upstream_host`: the `Host` the origin sees, `host[:port]`; `""` (`None`)
/// keeps the visitor's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamHost(pub Option<String>);

impl<'de> Deserialize<'de> for UpstreamHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(UpstreamHost(None));
        }
        let valid = !s.contains(['@', '/', '?', '#'])
            && s.parse::<http::uri::Authority>().is_ok()
            && http::HeaderValue::from_str(&s).is_ok();
        if !valid {
            return Err(D::Error::custom(format!(
                "invalid upstream_host {s:?}: expected a host name with an optional port, e.g. \"shop.example.com\""
            )));
        }
        Ok(UpstreamHost(Some(s)))
    }
}

/// `upstream_sni`: the TLS server name for an https origin; `""` (`None`) =
/// the upstream URL's host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsServerName(pub Option<String>);

impl<'de> Deserialize<'de> for TlsServerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(TlsServerName(None));
        }
        rustls::pki_types::DnsName::try_from(s.as_str()).map_err(|_| {
            D::Error::custom(format!(
                "invalid upstream_sni {s:?}: expected a DNS name such as \"shop.example.com\""
            ))
        })?;
        Ok(TlsServerName(Some(s)))
    }
}

/// The path under which tagproxy serves its own endpoints, e.g. `/_tagproxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(pub String);

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.~".contains(&b));
        if !s.starts_with('/') {
            Err(D::Error::custom(format!(
                "invalid prefix {s:?}: must start with '/'"
            )))
        } else if s.len() < 2 || s.ends_with('/') {
            Err(D::Error::custom(format!(
                "invalid prefix {s:?}: must be a path like \"/_tagproxy\" without a trailing '/'"
            )))
        } else if !ok_chars {
            Err(D::Error::custom(format!(
                "invalid prefix {s:?}: only letters, digits and / _ - . ~ are allowed"
            )))
        } else {
            Ok(PathPrefix(s))
        }
    }
}

/// An exact request path tagproxy answers besides those under `prefix`, for
/// pages and servers written for Zaraz (its `initPath`, `eventsApiPath`),
/// e.g. `/assets/z/init.js`: starts with '/', no trailing '/', letters,
/// digits and `/ _ - . ~` only (no query, no percent-encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath(pub String);

impl<'de> Deserialize<'de> for RoutePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.~".contains(&b));
        if !s.starts_with('/') || s.len() < 2 || s.ends_with('/') || s.contains("//") {
            Err(D::Error::custom(format!(
                "invalid path {s:?}: must be a path like \"/assets/z/init.js\" without a trailing '/'"
            )))
        } else if !ok_chars {
            Err(D::Error::custom(format!(
                "invalid path {s:?}: only letters, digits and / _ - . ~ are allowed"
            )))
        } else {
            Ok(RoutePath(s))
        }
    }
}

/// Networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        let mut nets = Vec::with_capacity(items.len());
        for s in items {
            let net = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    D::Error::custom(format!(
                        "invalid trusted proxy {s:?}: expected an IP or CIDR like \"10.0.0.0/8\""
                    ))
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }
}

/// A number that must be at least 1.
pub fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n == 0 {
        return Err(D::Error::custom("must be greater than 0"));
    }
    Ok(n)
}

/// A bot score threshold, 1..=99 like Cloudflare's bot scores.
pub fn bot_score<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = u64::deserialize(d)?;
    if !(1..=99).contains(&n) {
        return Err(D::Error::custom(format!(
            "must be between 1 and 99 (a bot score), not {n}"
        )));
    }
    Ok(n as u8)
}

/// A count that must be at least 1.
pub fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if n == 0 {
        return Err(D::Error::custom("must be greater than 0"));
    }
    Ok(n)
}

/// A string schema for a type that parses itself (the loader checks more
/// than a pattern can say; the description tells what).
fn string_schema(description: &str, pattern: Option<&str>) -> Schema {
    let mut schema = json_schema!({ "type": "string", "description": description });
    if let Some(p) = pattern {
        schema.insert("pattern".into(), p.into());
    }
    schema
}

impl JsonSchema for ListenAddr {
    fn schema_name() -> Cow<'static, str> {
        "ListenAddr".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "IP:PORT to listen on, e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"",
            Some(r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$"),
        )
    }
}

impl JsonSchema for UpstreamUrl {
    fn schema_name() -> Cow<'static, str> {
        "UpstreamUrl".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "The origin: http(s)://host[:port], without path, query or credentials",
            Some(r"^https?://[^/?#@]+/?$"),
        )
    }
}

impl JsonSchema for UpstreamHost {
    fn schema_name() -> Cow<'static, str> {
        "UpstreamHost".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "The Host header the origin sees, host[:port]; \"\" = the visitor's Host",
            None,
        )
    }
}

impl JsonSchema for TlsServerName {
    fn schema_name() -> Cow<'static, str> {
        "TlsServerName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "TLS server name (SNI and certificate check) for an https upstream, a DNS name; \"\" = the upstream URL's host",
            None,
        )
    }
}

impl JsonSchema for PathPrefix {
    fn schema_name() -> Cow<'static, str> {
        "PathPrefix".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "Path of tagproxy's own endpoints, e.g. \"/_tagproxy\": starts with '/', no trailing '/'",
            Some(r"^/[A-Za-z0-9/_.~-]*[A-Za-z0-9_.~-]$"),
        )
    }
}

impl JsonSchema for RoutePath {
    fn schema_name() -> Cow<'static, str> {
        "RoutePath".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "An exact request path, e.g. \"/assets/z/init.js\": starts with '/', no trailing '/'",
            Some(r"^/[A-Za-z0-9/_.~-]*[A-Za-z0-9_.~-]$"),
        )
    }
}

impl JsonSchema for TrustedProxies {
    fn schema_name() -> Cow<'static, str> {
        "TrustedProxies".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "array",
            "description": "IPs or CIDRs (\"10.0.0.0/8\") whose X-Forwarded-For is believed",
            "items": { "type": "string" }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(
            UpstreamUrl::parse("http://example.com")
                .unwrap()
                .authority(),
            "example.com:80"
        );
        assert_eq!(
            UpstreamUrl::parse("http://[::1]:3000/")
                .unwrap()
                .authority(),
            "[::1]:3000"
        );
        assert!(UpstreamUrl::parse("http://x/app").is_err());
        assert!(UpstreamUrl::parse("example.com").is_err());
        let tls = UpstreamUrl::parse("https://shop.example").unwrap();
        assert_eq!(tls.authority(), "shop.example:443");
        assert!(tls.is_https());
        assert_eq!(tls.base(), "https://shop.example:443");
        let v6 = UpstreamUrl::parse("https://[::1]:8443").unwrap();
        assert_eq!(v6.host(), "::1");
        assert!(UpstreamUrl::parse("ftp://example.com").is_err());
    }

    #[test]
    fn trusted_proxies_accept_mapped_v4() {
        let t = TrustedProxies(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.contains("10.0.0.1".parse().unwrap()));
    }
}
