//! Outgoing URLs as templates, with each value encoded for its position.
//!
//! At load the template is split into its **target** (scheme, host, port:
//! everything up to the first `/`, `?` or `#` after `://`) and the rest. The
//! target is fixed by the config: it may hold literal text and `{{ $variables
//! }}` (operator config, resolved at load and written as they are), never a
//! value from an event, so no visitor can choose where tagproxy connects.
//! In the rest every value is percent-encoded for where it stands (path
//! segment, query, fragment): all but RFC 3986's unreserved characters, so a
//! value cannot add a path segment, a parameter or a fragment. `| raw`
//! inserts a value as it is.

use super::template::{write_value, Context, Path, Piece, Root, Template, Variables};

/// Where in a URL a value stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Path,
    Query,
    Fragment,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Text(String),
    Value { path: Path, raw: bool, at: Position },
}

/// A compiled outgoing URL.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlTemplate {
    /// `scheme://host[:port]`, fixed at load.
    target: String,
    /// The target's origin; `None` when it could not be checked at load (a
    /// secret `check` runs without).
    origin: Option<url::Origin>,
    rest: Vec<Seg>,
}

/// Why a URL template is refused at load; `source` is the placeholder at
/// fault, as written, for `check` to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    pub message: String,
    pub source: Option<String>,
}

impl UrlTemplate {
    /// Splits `t` into target and the rest, resolving variables in the
    /// target. Errors: an event value in the target; a target that is not an
    /// absolute `http(s)` URL with a host.
    pub fn compile(t: &Template, variables: &Variables) -> Result<UrlTemplate, UrlError> {
        let mut head = String::new();
        let mut unchecked = false;
        let mut done = false;
        let mut rest = Vec::new();
        let mut pos = Position::Path;
        for piece in t.pieces() {
            if done {
                match piece {
                    Piece::Text(s) => push_text(&mut rest, s, &mut pos),
                    Piece::Value { path, raw, .. } => rest.push(Seg::Value {
                        path: path.clone(),
                        raw,
                        at: pos,
                    }),
                }
                continue;
            }
            match piece {
                Piece::Text(s) => head.push_str(s),
                Piece::Value { path, source, .. } => match &path.root {
                    Root::Variable(name) => {
                        // Unknown variables are reported by `check_path`.
                        if let Some(v) = variables.get(name) {
                            if v.secret && v.value.as_str().is_some_and(str::is_empty) {
                                unchecked = true;
                            }
                            write_value(&mut head, &v.value);
                        }
                    }
                    _ => {
                        return Err(UrlError {
                            message: format!(
                                "`{source}` is in the scheme, host or port of the URL: those come from the tool file, never from an event (a `{{{{ $variable }}}}` may be there)"
                            ),
                            source: Some(source.to_string()),
                        })
                    }
                },
            }
            if let Some(end) = target_end(&head) {
                let tail = head.split_off(end);
                done = true;
                push_text(&mut rest, &tail, &mut pos);
            }
        }
        let origin = if unchecked {
            None
        } else {
            Some(origin_of(&head).map_err(|message| UrlError {
                message,
                source: None,
            })?)
        };
        Ok(UrlTemplate {
            target: head,
            origin,
            rest,
        })
    }

    /// The origin every rendering has, when known at load.
    pub fn origin(&self) -> Option<&url::Origin> {
        self.origin.as_ref()
    }

    /// The URL for one event.
    pub fn render(&self, ctx: &Context<'_>) -> String {
        let mut out = self.target.clone();
        let mut value = String::new();
        for seg in &self.rest {
            match seg {
                Seg::Text(s) => out.push_str(s),
                Seg::Value { path, raw, .. } => {
                    let Some(v) = path.resolve(ctx) else { continue };
                    value.clear();
                    write_value(&mut value, v);
                    if *raw {
                        out.push_str(&value);
                    } else {
                        encode_component(&value, &mut out);
                    }
                }
            }
        }
        out
    }

    /// The position of each value, in order (tests, docs).
    pub fn positions(&self) -> Vec<Position> {
        self.rest
            .iter()
            .filter_map(|s| match s {
                Seg::Value { at, .. } => Some(*at),
                Seg::Text(_) => None,
            })
            .collect()
    }
}

/// The origin of an absolute `http(s)` URL with a host, or why not.
pub fn origin_of(target: &str) -> Result<url::Origin, String> {
    match url::Url::parse(target) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u.origin()),
        _ => Err(format!(
            "{target:?} must start with an absolute http:// or https:// URL with a host"
        )),
    }
}

/// Where the target of `head` ends, once it does: the first `/`, `?` or
/// `#` after `://`.
fn target_end(head: &str) -> Option<usize> {
    let start = head.find("://")? + 3;
    head[start..].find(['/', '?', '#']).map(|i| start + i)
}

/// Appends literal text, following the position it moves to.
fn push_text(rest: &mut Vec<Seg>, s: &str, pos: &mut Position) {
    for c in s.chars() {
        match (c, *pos) {
            ('?', Position::Path) => *pos = Position::Query,
            ('#', _) => *pos = Position::Fragment,
            _ => {}
        }
    }
    match rest.last_mut() {
        Some(Seg::Text(t)) => t.push_str(s),
        _ if s.is_empty() => {}
        _ => rest.push(Seg::Text(s.to_string())),
    }
}

/// Percent-encodes `s` for any single URL component (path segment, query
/// key or value, fragment): every byte but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), so `/ ? # & = + %` and spaces never act as
/// delimiters. Spaces become `%20`, which form and URL decoders both read
/// as a space.
pub fn encode_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// `s`, percent-encoded as [`encode_component`] does.
pub fn encoded(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    encode_component(s, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::super::template::Variable;
    use super::*;
    use serde_json::{json, Value};

    fn vars() -> Variables {
        let mut v = Variables::new();
        v.insert(
            "base".into(),
            Variable {
                value: json!("https://hooks.example:8443/api/v1"),
                secret: false,
            },
        );
        v.insert(
            "key".into(),
            Variable {
                value: json!("a+b/c="),
                secret: true,
            },
        );
        v
    }

    fn render(url: &str, client: Value) -> Result<String, UrlError> {
        let variables = vars();
        let t = UrlTemplate::compile(&Template::parse(url).unwrap(), &variables)?;
        let system = json!({});
        Ok(t.render(&Context {
            client: &client,
            system: &system,
            variables: &variables,
        }))
    }

    #[test]
    fn values_are_encoded_for_their_position() {
        assert_eq!(
            render(
                "http://hooks.example/hook?q={{ client.q }}",
                json!({"q": "a&admin=1#frag"})
            )
            .unwrap(),
            "http://hooks.example/hook?q=a%26admin%3D1%23frag"
        );
        assert_eq!(
            render(
                "http://h.example/u/{{ client.id }}/x?{{ client.k }}={{ client.v }}#{{ client.f }}",
                json!({"id": "../a/b?c", "k": "k=1", "v": "é +%", "f": "#x"})
            )
            .unwrap(),
            "http://h.example/u/..%2Fa%2Fb%3Fc/x?k%3D1=%C3%A9%20%2B%25#%23x"
        );
        assert_eq!(
            render("http://h.example/p?n={{ client.n }}", json!({"n": 12.5})).unwrap(),
            "http://h.example/p?n=12.5"
        );
    }

    #[test]
    fn raw_inserts_as_is() {
        assert_eq!(
            render(
                "http://h.example/{{ client.p | raw }}?{{ client.q | raw }}",
                json!({"p": "a/b", "q": "x=1&y=2"})
            )
            .unwrap(),
            "http://h.example/a/b?x=1&y=2"
        );
    }

    #[test]
    fn variables_make_the_target_and_are_encoded_after_it() {
        assert_eq!(
            render("{{ $base }}/hook?key={{ $key }}", json!({})).unwrap(),
            "https://hooks.example:8443/api/v1/hook?key=a%2Bb%2Fc%3D"
        );
        let t = UrlTemplate::compile(&Template::parse("{{ $base }}/x").unwrap(), &vars()).unwrap();
        assert_eq!(
            t.origin().unwrap(),
            &url::Url::parse("https://hooks.example:8443/")
                .unwrap()
                .origin()
        );
    }

    #[test]
    fn the_target_never_comes_from_an_event() {
        for url in [
            "{{ client.target }}",
            "http://{{ client.host }}/x",
            "http://a.example:{{ client.port }}/",
            "http://a.example{{ client.path }}",
            "http://user:{{ system.cookies.x }}@a.example/",
            "https://a.example\\{{ client.x }}",
        ] {
            let e = render(url, json!({})).unwrap_err();
            assert!(e.message.contains("scheme, host or port"), "{url}: {e:?}");
            assert!(e.source.is_some(), "{url}");
        }
        for url in ["hooks.example/x", "ftp://a.example/", "http:///x", ""] {
            let e = render(url, json!({})).unwrap_err();
            assert!(e.message.contains("http://"), "{url}: {e:?}");
        }
    }

    #[test]
    fn positions_follow_the_literal_text() {
        let t = UrlTemplate::compile(
            &Template::parse("http://h.example/{{ client.a }}?b={{ client.b }}#{{ client.c }}")
                .unwrap(),
            &Variables::new(),
        )
        .unwrap();
        assert_eq!(
            t.positions(),
            vec![Position::Path, Position::Query, Position::Fragment]
        );
    }

    /// The target's origin is known at load unless it holds a secret that
    /// was empty there (`check` runs without secrets); a plain variable or
    /// a secret with a value leaves it known.
    #[test]
    fn the_origin_is_unknown_only_for_an_empty_secret() {
        let mut variables = vars();
        let origin = |url: &str, variables: &Variables| {
            UrlTemplate::compile(&Template::parse(url).unwrap(), variables)
                .unwrap()
                .origin()
                .map(|o| o.ascii_serialization())
        };
        assert_eq!(
            origin("{{ $base }}/x", &variables).as_deref(),
            Some("https://hooks.example:8443")
        );
        variables.insert(
            "host".into(),
            Variable {
                value: json!("https://secret.example"),
                secret: true,
            },
        );
        assert_eq!(
            origin("{{ $host }}/x", &variables).as_deref(),
            Some("https://secret.example")
        );
        variables.insert(
            "host".into(),
            Variable {
                value: json!(""),
                secret: true,
            },
        );
        assert_eq!(origin("{{ $host }}/x", &variables), None);
    }
}
