//! Static assets tagproxy serves itself (the client script), compressed once
//! at start-up and revalidated by ETag.

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use std::io::Write;

use super::body::{self, ProxyBody};
use super::codec::{self, Coding};

/// One asset in its identity, gzip and brotli forms.
pub struct Asset {
    content_type: &'static str,
    cache_control: &'static str,
    etag: String,
    identity: Bytes,
    gzip: Bytes,
    brotli: Bytes,
}

impl Asset {
    pub fn new(content_type: &'static str, cache_control: &'static str, bytes: &[u8]) -> Asset {
        use base64::Engine as _;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(bytes);
        let etag = format!(
            "\"{}\"",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)[..22]
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).expect("in-memory write");
        let gzip = Bytes::from(gz.finish().expect("in-memory write"));
        let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 11, 22);
        br.write_all(bytes).expect("in-memory write");
        let brotli = Bytes::from(br.into_inner());
        Asset {
            content_type,
            cache_control,
            etag,
            identity: Bytes::copy_from_slice(bytes),
            gzip,
            brotli,
        }
    }

    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The response to a GET (or HEAD) of this asset.
    pub fn respond(&self, req_headers: &HeaderMap, head: bool) -> Response<ProxyBody> {
        let builder = Response::builder()
            .header(header::ETAG, &self.etag)
            .header(header::CACHE_CONTROL, self.cache_control)
            .header(header::VARY, "Accept-Encoding");
        let matches = req_headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                let t = t.trim();
                t == "*" || t.trim_start_matches("W/") == self.etag
            });
        if matches {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(body::empty())
                .expect("static response");
        }
        let accept = req_headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let (coding, bytes) = if codec::accepts(accept, Coding::Brotli) {
            (Some("br"), &self.brotli)
        } else if codec::accepts(accept, Coding::Gzip) {
            (Some("gzip"), &self.gzip)
        } else {
            (None, &self.identity)
        };
        let mut builder = builder
            .header(header::CONTENT_TYPE, self.content_type)
            .header(header::CONTENT_LENGTH, bytes.len());
        if let Some(coding) = coding {
            builder = builder.header(header::CONTENT_ENCODING, coding);
        }
        let body = if head {
            body::empty()
        } else {
            body::full(bytes.clone())
        };
        builder.body(body).expect("static response")
    }
}

/// The browser script, minified at build time (see `src/client/`).
const CLIENT_SCRIPT: &str = include_str!("../client/s.min.js");

/// The client script (`{prefix}/s.js`): `config` (what the script needs to
/// know of the settings) in front of the static script. The ETag changes
/// with the config, so browsers pick up a reload.
pub fn client_script(config: &serde_json::Value) -> Asset {
    let text = format!("window.__tagproxy={config};\n{CLIENT_SCRIPT}");
    Asset::new(
        "application/javascript; charset=utf-8",
        "public, max-age=300",
        text.as_bytes(),
    )
}

/// The consent script (`{prefix}/c.js`, see `src/client/consent.js`), which
/// the client script loads when consent is enabled.
pub fn consent_script() -> Asset {
    Asset::new(
        "application/javascript; charset=utf-8",
        "public, max-age=300",
        include_str!("../client/c.min.js").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §4: the client script stays under 8 KB minified and 4 KB
    /// gzipped (KB = 1024 bytes), without the config `client_script` puts in
    /// front of it.
    #[test]
    fn the_client_script_keeps_to_its_size_budget() {
        let min = CLIENT_SCRIPT.len();
        let gz = Asset::new("application/javascript", "", CLIENT_SCRIPT.as_bytes())
            .gzip
            .len();
        println!("s.min.js: {min} bytes, {gz} gzipped (budget 8192 / 4096)");
        assert!(min < 8 * 1024, "s.min.js is {min} bytes");
        assert!(gz < 4 * 1024, "s.min.js is {gz} bytes gzipped");
    }

    /// The README gives the script's real size (issue 13: it was stale).
    #[test]
    fn the_readme_states_the_client_script_size() {
        let readme = include_str!("../../README.md");
        let thousands = |n: usize| {
            let s = n.to_string();
            match s.len() {
                4.. => format!("{},{}", &s[..s.len() - 3], &s[s.len() - 3..]),
                _ => s,
            }
        };
        let min = CLIENT_SCRIPT.len();
        let gz = Asset::new("application/javascript", "", CLIENT_SCRIPT.as_bytes())
            .gzip
            .len();
        let want = format!("{} bytes, {} gzipped", thousands(min), thousands(gz));
        assert!(readme.contains(&want), "README should say {want:?}");
        let consent = include_str!("../client/c.min.js").len();
        let want = format!("({} bytes minified)", thousands(consent));
        assert!(readme.contains(&want), "README should say {want:?}");
    }
}
