//! Credentials for private origins: Basic auth (`--user`), netrc files
//! (`--netrc`, `--netrc-file`) and user headers (`--header`), and the rule
//! that keeps them from leaking to another host on a redirect.
//!
//! # Model
//!
//! The headers a source adds to its requests are built once, when the
//! source is created, for the host of its URL: user headers override the
//! `Authorization` derived from `--user` (which overrides netrc), as in
//! curl. Every value is marked sensitive, so `Debug` of a request or a
//! header map prints `Sensitive` instead of the secret.
//!
//! A request to another origin (scheme, host or port differ from the
//! source's URL: a cross-host redirect, or the remembered target of one)
//! carries neither `Authorization` nor `Cookie` — curl's rule since 7.83
//! (CVE-2022-27776). The other user headers still go along.
//!
//! Nothing here is ever written to the store, logged, or put in an error
//! message: errors name the netrc file and the line, never a token.

use std::fmt;

use base64::Engine;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// `--user USER[:PASSWORD]`: HTTP Basic credentials. A missing password is
/// empty (curl's `-u user:`); blockcache never prompts.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub user: String,
    /// The password (empty when none was given).
    pub password: String,
}

impl BasicAuth {
    /// Parses `USER[:PASSWORD]` (the first `:` splits).
    pub fn parse(spec: &str) -> BasicAuth {
        let (user, password) = spec.split_once(':').unwrap_or((spec, ""));
        BasicAuth {
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// The `Authorization: Basic …` value, marked sensitive.
    pub fn header_value(&self) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.user, self.password));
        let mut v = HeaderValue::from_str(&format!("Basic {token}"))
            .expect("base64 is a valid header value");
        v.set_sensitive(true);
        v
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Splits credentials out of `scheme://user:password@host/...`: returns
/// the URL without them (what is requested, keyed, shown) and the
/// percent-decoded credentials. A URL without userinfo is returned as is.
pub(crate) fn split_userinfo(url: &str) -> (String, Option<BasicAuth>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_len].rfind('@') else {
        return (url.to_owned(), None);
    };
    let mut auth = BasicAuth::parse(&rest[..at]);
    auth.user = percent_decode(&auth.user);
    auth.password = percent_decode(&auth.password);
    let stripped = format!("{}{}", &url[..scheme_end], &rest[at + 1..]);
    (stripped, Some(auth))
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `machine` (or `default`) entry of a netrc file.
#[derive(Clone, PartialEq, Eq)]
struct NetrcEntry {
    /// `None` for `default`.
    machine: Option<String>,
    login: Option<String>,
    password: Option<String>,
}

/// A parsed netrc file, read with curl's rules: whitespace-separated
/// tokens (double-quoted ones may hold spaces and `\"`, `\\`, `\n`, `\r`,
/// `\t`), lines starting with `#` are comments, `machine NAME` starts an
/// entry, `default` an entry matching any host, `login` / `password` set its
/// credentials, `account` is ignored, and `macdef NAME` skips the macro body
/// up to the next empty line. The first `machine` equal to the host (ASCII
/// case-insensitive) wins; `default` applies when none matches.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    entries: Vec<NetrcEntry>,
}

impl fmt::Debug for Netrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let machines: Vec<&str> = self
            .entries
            .iter()
            .map(|e| e.machine.as_deref().unwrap_or("default"))
            .collect();
        f.debug_struct("Netrc")
            .field("machines", &machines)
            .finish_non_exhaustive()
    }
}

/// Why a netrc file does not parse. Names the line, never its secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct NetrcError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

impl Netrc {
    /// Parses the text of a netrc file.
    pub fn parse(text: &str) -> Result<Netrc, NetrcError> {
        let mut entries: Vec<NetrcEntry> = Vec::new();
        // The keyword waiting for its value, and the line it was on.
        let mut pending: Option<(&'static str, usize)> = None;
        let mut in_macdef = false;
        for (i, line) in text.lines().enumerate() {
            let lineno = i + 1;
            if in_macdef {
                // A macro body ends at the first empty line.
                in_macdef = !line.trim().is_empty();
                continue;
            }
            if line.trim_start().starts_with('#') {
                continue;
            }
            let err = |reason: String| NetrcError {
                line: lineno,
                reason,
            };
            for token in tokens(line).map_err(|r| err(r.to_owned()))? {
                if let Some((keyword, _)) = pending.take() {
                    match keyword {
                        "machine" => entries.push(NetrcEntry {
                            machine: Some(token),
                            login: None,
                            password: None,
                        }),
                        "login" | "password" => {
                            let Some(entry) = entries.last_mut() else {
                                return Err(err(format!("`{keyword}` before any `machine`")));
                            };
                            if keyword == "login" {
                                entry.login = Some(token);
                            } else {
                                entry.password = Some(token);
                            }
                        }
                        "macdef" => {
                            // The body starts on the next line.
                            in_macdef = true;
                            break;
                        }
                        _ => {} // account: not used by HTTP
                    }
                    continue;
                }
                match token.as_str() {
                    "machine" => pending = Some(("machine", lineno)),
                    "login" => pending = Some(("login", lineno)),
                    "password" => pending = Some(("password", lineno)),
                    "account" => pending = Some(("account", lineno)),
                    "macdef" => pending = Some(("macdef", lineno)),
                    "default" => entries.push(NetrcEntry {
                        machine: None,
                        login: None,
                        password: None,
                    }),
                    _ => {
                        // The token itself may be a secret: do not echo it.
                        return Err(err(format!(
                            "unexpected token of {} characters (expected machine, default, login, password, account or macdef)",
                            token.chars().count()
                        )));
                    }
                }
            }
        }
        if let Some((keyword, line)) = pending {
            return Err(NetrcError {
                line,
                reason: format!("`{keyword}` without a value"),
            });
        }
        Ok(Netrc { entries })
    }

    /// Credentials for `host`: the first matching `machine`, else `default`.
    pub fn lookup(&self, host: &str) -> Option<BasicAuth> {
        let entry = self
            .entries
            .iter()
            .find(|e| {
                e.machine
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(host))
            })
            .or_else(|| self.entries.iter().find(|e| e.machine.is_none()))?;
        if entry.login.is_none() && entry.password.is_none() {
            return None;
        }
        Some(BasicAuth {
            user: entry.login.clone().unwrap_or_default(),
            password: entry.password.clone().unwrap_or_default(),
        })
    }
}

/// Splits one netrc line into tokens, unquoting `"…"` tokens.
fn tokens(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        let mut tok = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted token"),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => tok.push('\n'),
                        Some('r') => tok.push('\r'),
                        Some('t') => tok.push('\t'),
                        Some(c) => tok.push(c),
                        None => return Err("unterminated quoted token"),
                    },
                    Some(c) => tok.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                tok.push(c);
                chars.next();
            }
        }
        out.push(tok);
    }
}

/// Scheme, host and port (default port filled in) of `uri`.
fn origin_of(uri: &Uri) -> (String, String, u16) {
    let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    (
        scheme,
        uri.host().unwrap_or_default().to_ascii_lowercase(),
        uri.port_u16().unwrap_or(default_port),
    )
}

/// Whether `a` and `b` share scheme, host and port.
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    origin_of(a) == origin_of(b)
}

/// The headers every request of a source for `url` carries: the
/// `Authorization` of `basic` (else of the netrc entry for the host), then
/// the user headers (a user header replaces a built-in one of the same name;
/// repeated user headers are all sent). All values are marked sensitive.
pub(crate) fn origin_headers(
    url: &Uri,
    user_headers: &[(HeaderName, HeaderValue)],
    basic: Option<&BasicAuth>,
    netrc: Option<&Netrc>,
) -> HeaderMap {
    let mut map = HeaderMap::new();
    let netrc_auth = || netrc.and_then(|n| n.lookup(url.host().unwrap_or_default()));
    if let Some(auth) = basic.cloned().or_else(netrc_auth) {
        map.insert(AUTHORIZATION, auth.header_value());
    }
    for (name, _) in user_headers {
        map.remove(name);
    }
    for (name, value) in user_headers {
        let mut value = value.clone();
        value.set_sensitive(true);
        map.append(name.clone(), value);
    }
    map
}

/// Adds `origin_headers` to the headers of a request for `target`,
/// replacing values of the same names set before (e.g. `User-Agent`), and
/// leaving out `Authorization` and `Cookie` when `target` is not on the
/// origin of `source`.
pub(crate) fn add_origin_headers(
    request: &mut HeaderMap,
    origin_headers: &HeaderMap,
    source: &Uri,
    target: &Uri,
) {
    let cross_origin = !same_origin(source, target);
    for name in origin_headers.keys() {
        request.remove(name);
    }
    for (name, value) in origin_headers {
        if cross_origin && (name == AUTHORIZATION || name == COOKIE) {
            continue;
        }
        // `iter` yields a name once per value: append keeps repeats.
        request.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETRC: &str = r#"
# a comment line, ignored
machine example.com login alice password "s3cr et\"x"
machine other.org
  login bob
  password hunter2
macdef init
machine evil.example login mallory password nope

default login anon password guest
"#;

    #[test]
    fn netrc_follows_curl_rules() {
        let n = Netrc::parse(NETRC).unwrap();
        assert_eq!(
            n.lookup("EXAMPLE.com"),
            Some(BasicAuth {
                user: "alice".into(),
                password: "s3cr et\"x".into()
            })
        );
        assert_eq!(n.lookup("other.org").unwrap().password, "hunter2");
        // The macdef body is skipped: its `machine` line is not an entry.
        assert_eq!(n.lookup("evil.example").unwrap().user, "anon");
        assert_eq!(n.lookup("unknown.net").unwrap().password, "guest");
        let no_default = Netrc::parse("machine a login x password y").unwrap();
        assert_eq!(no_default.lookup("b"), None);
        assert_eq!(no_default.lookup("a").unwrap().user, "x");
    }

    #[test]
    fn first_matching_machine_wins_and_one_line_form_works() {
        let n =
            Netrc::parse("machine h login first password one\nmachine h login second password two")
                .unwrap();
        assert_eq!(n.lookup("h").unwrap().user, "first");
        let n = Netrc::parse("default login d password p machine h login m password q").unwrap();
        assert_eq!(
            n.lookup("h").unwrap().user,
            "m",
            "machine beats an earlier default"
        );
    }

    #[test]
    fn netrc_errors_name_the_line_not_the_secret() {
        let e = Netrc::parse("machine h\n  login u passwd topsecret").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(!e.to_string().contains("topsecret"), "{e}");
        assert!(!e.to_string().contains("passwd"), "{e}");
        let e = Netrc::parse("machine h login u password").unwrap_err();
        assert!(e.reason.contains("password"), "{e}");
        let e = Netrc::parse("login u").unwrap_err();
        assert!(e.reason.contains("before any"), "{e}");
        let e = Netrc::parse("machine h password \"open").unwrap_err();
        assert!(e.reason.contains("unterminated"), "{e}");
    }

    #[test]
    fn basic_auth_parses_like_curl() {
        assert_eq!(
            BasicAuth::parse("u:p:q"),
            BasicAuth {
                user: "u".into(),
                password: "p:q".into()
            }
        );
        assert_eq!(BasicAuth::parse("u").password, "");
        let v = BasicAuth::parse("Aladdin:open sesame").header_value();
        assert_eq!(v, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(v.is_sensitive());
        assert!(!format!("{:?}", BasicAuth::parse("u:pw")).contains("pw"));
    }

    #[test]
    fn config_debug_shows_no_secret() {
        let cfg = crate::HttpSourceConfig {
            headers: vec![(
                HeaderName::from_static("x-api-key"),
                HeaderValue::from_static("k3y-not-marked-sensitive"),
            )],
            basic_auth: Some(BasicAuth::parse("u:pa55word")),
            netrc: Some(std::sync::Arc::new(
                Netrc::parse("machine h login l password n3trcpw").unwrap(),
            )),
            ..Default::default()
        };
        let shown = format!("{cfg:?}");
        for secret in ["k3y-not-marked-sensitive", "pa55word", "n3trcpw"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("x-api-key"), "{shown}");
    }

    #[test]
    fn userinfo_is_split_out_of_urls() {
        let (url, auth) = split_userinfo("https://al%40ce:p%3Aw%zz@h:8/x?a=b@c");
        assert_eq!(url, "https://h:8/x?a=b@c");
        assert_eq!(
            auth,
            Some(BasicAuth {
                user: "al@ce".into(),
                password: "p:w%zz".into()
            })
        );
        let (url, auth) = split_userinfo("http://h/x?u=a@b");
        assert_eq!((url.as_str(), auth), ("http://h/x?u=a@b", None));
        assert_eq!(split_userinfo("http://u@h/").1.unwrap().password, "");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert!(same_origin(&u("http://H:80/a"), &u("http://h/b?x")));
        assert!(same_origin(&u("https://h/a"), &u("https://h:443/b")));
        assert!(!same_origin(&u("http://h/a"), &u("https://h/a")));
        assert!(!same_origin(&u("http://h:8080/a"), &u("http://h:8081/a")));
        assert!(!same_origin(&u("http://h/a"), &u("http://h.evil/a")));
    }

    #[test]
    fn user_headers_override_and_cross_origin_drops_credentials() {
        let src: Uri = "http://h/x".parse().unwrap();
        let netrc = Netrc::parse("machine h login n password np").unwrap();
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        let user = vec![
            (AUTHORIZATION, hv("Bearer s3kr1t")),
            (COOKIE, hv("a=1")),
            (HeaderName::from_static("x-token"), hv("t1")),
            (HeaderName::from_static("x-token"), hv("t2")),
        ];
        // netrc alone.
        let m = origin_headers(&src, &[], None, Some(&netrc));
        assert_eq!(m[AUTHORIZATION], BasicAuth::parse("n:np").header_value());
        // --user beats netrc; --header beats --user.
        let m = origin_headers(&src, &[], Some(&BasicAuth::parse("u:p")), Some(&netrc));
        assert_eq!(m[AUTHORIZATION], BasicAuth::parse("u:p").header_value());
        let m = origin_headers(&src, &user, Some(&BasicAuth::parse("u:p")), Some(&netrc));
        assert_eq!(m.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(m[AUTHORIZATION], "Bearer s3kr1t");
        assert!(m.values().all(HeaderValue::is_sensitive));
        assert!(!format!("{m:?}").contains("s3kr1t"), "{m:?}");

        let mut same = HeaderMap::new();
        add_origin_headers(&mut same, &m, &src, &"http://h:80/y?q".parse().unwrap());
        assert_eq!(same[AUTHORIZATION], "Bearer s3kr1t");
        assert_eq!(same[COOKIE], "a=1");
        assert_eq!(same.get_all("x-token").iter().count(), 2);

        let mut other = HeaderMap::new();
        add_origin_headers(
            &mut other,
            &m,
            &src,
            &"http://cdn.example/y".parse().unwrap(),
        );
        assert!(other.get(AUTHORIZATION).is_none());
        assert!(other.get(COOKIE).is_none());
        assert_eq!(other.get_all("x-token").iter().count(), 2);
    }
}
