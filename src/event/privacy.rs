//! The privacy settings of `[settings]` (Zaraz's settings page), applied once
//! while an event is built so every tool sees the same cleaned values.

use std::net::IpAddr;

use crate::config::Settings;

/// Which cleanings are on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Privacy {
    pub hide_ip: bool,
    pub trim_ip: bool,
    pub trim_url_query: bool,
    pub remove_url_hash: bool,
    pub clean_user_agent: bool,
    pub hide_external_referrer: bool,
}

impl From<&Settings> for Privacy {
    fn from(s: &Settings) -> Self {
        Privacy {
            hide_ip: s.hide_ip,
            trim_ip: s.trim_ip,
            trim_url_query: s.trim_url_query,
            remove_url_hash: s.remove_url_hash,
            clean_user_agent: s.clean_user_agent,
            hide_external_referrer: s.hide_external_referrer,
        }
    }
}

impl Privacy {
    /// The IP tools may see: none, trimmed, or as is.
    pub fn ip(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        if self.hide_ip {
            return None;
        }
        let ip = ip?;
        if !self.trim_ip {
            return Some(ip);
        }
        Some(match ip {
            // Last octet zeroed.
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                IpAddr::V4([a, b, c, 0].into())
            }
            // Last 80 bits zeroed: the first 48 stay.
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 80) - 1);
                IpAddr::V6(bits.into())
            }
        })
    }

    /// The page URL with the query and/or fragment removed as configured.
    pub fn page_url(&self, url: &str) -> String {
        if !self.trim_url_query && !self.remove_url_hash {
            return url.to_string();
        }
        match url::Url::parse(url) {
            Ok(mut u) => {
                if self.trim_url_query {
                    u.set_query(None);
                }
                if self.remove_url_hash {
                    u.set_fragment(None);
                }
                u.to_string()
            }
            Err(_) => url.to_string(),
        }
    }

    /// The referrer: dropped when it is external and that is configured; a
    /// same-site one (an earlier page of this site, e.g. a virtual page's
    /// previous in-app URL) is cleaned like the page URL, so a query or
    /// fragment removed from `page.url` does not reach tools through it.
    pub fn referrer(&self, referrer: &str, page_url: &str) -> String {
        if referrer.is_empty() {
            return String::new();
        }
        let host = |s: &str| {
            url::Url::parse(s)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        };
        match (host(referrer), host(page_url)) {
            (Some(r), Some(p)) if r == p => self.page_url(referrer),
            _ if self.hide_external_referrer => String::new(),
            _ => referrer.to_string(),
        }
    }

    /// The User-Agent, with minor versions and build numbers zeroed when
    /// `clean_user_agent` is on (browser and OS family and major version
    /// stay, as in Chrome's reduced User-Agent).
    pub fn user_agent(&self, ua: &str) -> String {
        if !self.clean_user_agent {
            return ua.to_string();
        }
        clean_user_agent(ua)
    }
}

/// `Chrome/131.0.6778.85` → `Chrome/131.0.0.0`; `Mac OS X 10_15_7` →
/// `Mac OS X 10_0_0`: every version keeps its first number only.
pub fn clean_user_agent(ua: &str) -> String {
    let mut out = String::with_capacity(ua.len());
    let bytes = ua.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        // A version: digits followed by [._]digits…; keep the first number.
        if c.is_ascii_digit()
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'/')
        {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            out.push_str(&ua[start..i]);
            while i + 1 < bytes.len()
                && (bytes[i] == b'.' || bytes[i] == b'_')
                && bytes[i + 1].is_ascii_digit()
            {
                out.push(bytes[i] as char);
                out.push('0');
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Privacy {
        Privacy {
            hide_ip: false,
            trim_ip: true,
            trim_url_query: true,
            remove_url_hash: true,
            clean_user_agent: true,
            hide_external_referrer: true,
        }
    }

    #[test]
    fn ips() {
        let p = all();
        assert_eq!(
            p.ip(Some("203.0.113.77".parse().unwrap())),
            Some("203.0.113.0".parse().unwrap())
        );
        assert_eq!(
            p.ip(Some("2001:db8:1234:5678:9abc::1".parse().unwrap())),
            Some("2001:db8:1234::".parse().unwrap())
        );
        let hide = Privacy {
            hide_ip: true,
            ..all()
        };
        assert_eq!(hide.ip(Some("1.2.3.4".parse().unwrap())), None);
        assert_eq!(
            Privacy::default().ip(Some("1.2.3.4".parse().unwrap())),
            Some("1.2.3.4".parse().unwrap())
        );
    }

    #[test]
    fn urls_and_referrers() {
        let p = all();
        assert_eq!(p.page_url("https://s.test/a?utm=1#top"), "https://s.test/a");
        assert_eq!(
            Privacy::default().page_url("https://s.test/a?utm=1#top"),
            "https://s.test/a?utm=1#top"
        );
        assert_eq!(
            p.referrer("https://google.com/search?q=x", "https://s.test/a"),
            ""
        );
        assert_eq!(
            p.referrer("https://s.test/prev", "https://s.test/a"),
            "https://s.test/prev"
        );
        assert_eq!(
            Privacy::default().referrer("https://google.com/", "https://s.test/"),
            "https://google.com/"
        );
    }

    /// A same-site referrer is an earlier page URL of this site (a virtual
    /// page's referrer is the previous in-app URL): it is cleaned like the
    /// page URL, so a trimmed query does not reach tools through it.
    #[test]
    fn same_site_referrers_are_cleaned_like_page_urls() {
        let p = all();
        assert_eq!(
            p.referrer(
                "https://s.test/prev?email=jane%40example.com",
                "https://s.test/a"
            ),
            "https://s.test/prev"
        );
        let query_only = Privacy {
            trim_url_query: true,
            ..Privacy::default()
        };
        assert_eq!(
            query_only.referrer("https://s.test/prev?q=1", "https://s.test/a?x=2"),
            "https://s.test/prev"
        );
        // Another site's URL is its own: kept whole, or dropped when
        // external referrers are hidden.
        assert_eq!(
            query_only.referrer("https://google.com/search?q=x", "https://s.test/a"),
            "https://google.com/search?q=x"
        );
        assert_eq!(
            Privacy::default().referrer("https://s.test/prev?q=1", "https://s.test/a"),
            "https://s.test/prev?q=1"
        );
    }

    #[test]
    fn user_agents() {
        assert_eq!(
            clean_user_agent("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.85 Safari/537.36"),
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_0_0) AppleWebKit/537.0 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.0"
        );
        assert_eq!(clean_user_agent("Firefox/132.0.1"), "Firefox/132.0.0");
    }
}
