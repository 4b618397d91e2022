//! `http_allow`, `http_deny` and `http_auth` entries, and what they say about one request.
//!
//! An entry is written `METHOD HOST[:PORT][/PATH]`, each part a glob where `*` stands for any run
//! of characters (`/` and `.` included):
//! - METHOD is an HTTP method (`GET`, `POST`, `*`), matched without regard to case;
//! - HOST is a host name (`api.example.com`, `*.example.com`, `*`) or an IP address (`10.1.2.3`,
//!   `[::1]`), matched without regard to case against the request's `Host`;
//! - PORT is the one port the rule covers; without it, 80 and 443;
//! - PATH is matched against the request's path, without its query string; without it, any path.
//!
//! `http_auth` entries add what to send: `... bearer NAME` (an `Authorization: Bearer` header) or
//! `... header HEADER-NAME NAME`, where NAME is one of the policy's `credentials`.
//!
//! Paths are compared after normalisation, because a server reads `/a/../admin` and `/%61dmin` as
//! `/admin`: dot segments are removed, and the path is also decoded (percent escapes) and
//! normalised again. A deny rule that matches either form denies; an allow rule must match both.

use std::net::IpAddr;

use crate::error::PolicyError;

/// A glob where `*` stands for any run of characters; everything else stands for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: String,
    fold_case: bool,
}

impl Glob {
    /// A pattern; `fold_case` makes it match without regard to ASCII case.
    pub(crate) fn new(pattern: &str, fold_case: bool) -> Glob {
        Glob {
            pattern: if fold_case {
                pattern.to_ascii_lowercase()
            } else {
                pattern.to_string()
            },
            fold_case,
        }
    }

    /// Whether `text` is one of the texts the pattern stands for.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.pattern.as_bytes(), text.as_bytes());
        let eq = |a: u8, b: u8| {
            if self.fold_case {
                a == b.to_ascii_lowercase()
            } else {
                a == b
            }
        };
        // Greedy match with one backtrack point (the last `*`): linear in practice, quadratic at
        // worst, and a request's path is bounded by the HTTP parser's head limit.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && eq(p[pi], t[ti]) {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == b'*')
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// Which hosts an HTTP rule names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpHost {
    /// One host name (lowercase, no trailing dot): resolved on the host like a `net_allow` name.
    Name(String),
    /// One address (IPv4-mapped IPv6 addresses in their IPv4 form).
    Addr(IpAddr),
    /// A pattern of names (`*`, `*.example.com`).
    Glob(Glob),
}

impl HttpHost {
    /// Whether the host of a request (lowercase, no port, IPv6 without brackets) is one of these.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            HttpHost::Name(n) => n == host,
            HttpHost::Addr(a) => host
                .parse::<IpAddr>()
                .is_ok_and(|h| crate::net::rules::canonical(h) == *a),
            HttpHost::Glob(g) => g.matches(host),
        }
    }
}

/// The ports an HTTP rule covers when it names none.
pub(crate) const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// One `http_allow` or `http_deny` entry (or the request part of an `http_auth` one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpRule {
    method: Glob,
    pub(crate) host: HttpHost,
    /// The one port the rule names, or `None` for [`DEFAULT_PORTS`].
    port: Option<u16>,
    path: Glob,
    /// The entry as written, for messages.
    text: String,
}

/// A request as the rules see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The method, as sent.
    pub(crate) method: &'a str,
    /// The host from `Host` (or the URI): lowercase, without the port, IPv6 without brackets.
    pub(crate) host: &'a str,
    /// The port the sandbox connected to.
    pub(crate) port: u16,
    /// The path, without the query string, as sent.
    pub(crate) path: &'a str,
}

impl HttpRule {
    /// Whether the rule covers connections to `port`.
    pub(crate) fn covers_port(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        }
    }

    /// Whether the rule matches the request when its path reads as `path`.
    fn matches_with(&self, r: &Request<'_>, path: &str) -> bool {
        self.covers_port(r.port)
            && self.method.matches(r.method)
            && self.host.matches(r.host)
            && self.path.matches(path)
    }

    /// The entry as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// How an `http_auth` entry presents its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthScheme {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `<name>: <secret>`.
    Header(http::HeaderName),
}

/// One `http_auth` entry: the requests it applies to, and which credential to add how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthRule {
    pub(crate) rule: HttpRule,
    pub(crate) scheme: AuthScheme,
    /// The name of one of the policy's `credentials`.
    pub(crate) credential: String,
}

/// Whether an allowed request goes on, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward it.
    Allow,
    /// Answer 403 with this reason; the upstream never sees the request.
    Deny(String),
}

/// The HTTP rules of a policy.
#[derive(Debug, Clone, Default)]
pub(crate) struct HttpRules {
    pub(crate) allow: Vec<HttpRule>,
    pub(crate) deny: Vec<HttpRule>,
    pub(crate) auth: Vec<AuthRule>,
}

impl HttpRules {
    /// Parses the policy's three lists; every error names its field and entry.
    pub(crate) fn parse(
        allow: &[String],
        deny: &[String],
        auth: &[String],
    ) -> Result<HttpRules, PolicyError> {
        let list = |items: &[String], field: &str| -> Result<Vec<HttpRule>, PolicyError> {
            items
                .iter()
                .enumerate()
                .map(|(i, s)| parse_rule(&format!("{field}[{i}]"), s))
                .collect()
        };
        let rules = HttpRules {
            allow: list(allow, "http_allow")?,
            deny: list(deny, "http_deny")?,
            auth: auth
                .iter()
                .enumerate()
                .map(|(i, s)| parse_auth(&format!("http_auth[{i}]"), s))
                .collect::<Result<_, _>>()?,
        };
        if !rules.auth.is_empty() && rules.allow.is_empty() && rules.deny.is_empty() {
            return Err(PolicyError::new(
                "http_auth",
                auth.join(", "),
                "a credential is only added to requests the HTTP rules let through: add \
                 http_allow (or http_deny) rules for these requests",
            ));
        }
        Ok(rules)
    }

    /// Whether the policy has HTTP rules (and so a proxy).
    pub(crate) fn any(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// The rules that decide which connections go to the proxy.
    pub(crate) fn routing(&self) -> impl Iterator<Item = &HttpRule> {
        self.allow.iter().chain(&self.deny)
    }

    /// Whether the request may go on: no `http_deny` rule matches it, and an `http_allow` rule
    /// does (or there are only deny rules).
    pub(crate) fn decide(&self, r: &Request<'_>) -> Verdict {
        let forms = path_forms(r.path);
        let shown = || format!("{} {}:{}{}", r.method, r.host, r.port, r.path);
        if let Some((i, rule)) = self
            .deny
            .iter()
            .enumerate()
            .find(|(_, rule)| forms.iter().any(|p| rule.matches_with(r, p)))
        {
            return Verdict::Deny(format!(
                "{} matches http_deny[{i}] {:?}",
                shown(),
                rule.text
            ));
        }
        if self.allow.is_empty() {
            // Deny rules alone: every request to a host they name, but theirs.
            return if self
                .deny
                .iter()
                .any(|rule| rule.covers_port(r.port) && rule.host.matches(r.host))
            {
                Verdict::Allow
            } else {
                Verdict::Deny(format!("no HTTP rule names {}:{}", r.host, r.port))
            };
        }
        if self
            .allow
            .iter()
            .any(|rule| forms.iter().all(|p| rule.matches_with(r, p)))
        {
            Verdict::Allow
        } else {
            Verdict::Deny(format!("no http_allow rule matches {}", shown()))
        }
    }

    /// The first `http_auth` entry that applies to the request, and its index.
    pub(crate) fn auth_for(&self, r: &Request<'_>) -> Option<(usize, &AuthRule)> {
        let forms = path_forms(r.path);
        self.auth
            .iter()
            .enumerate()
            .find(|(_, a)| forms.iter().all(|p| a.rule.matches_with(r, p)))
    }
}

/// The path as the rules compare it: with dot segments removed, and the same after decoding
/// percent escapes (the two are equal for most paths).
fn path_forms(path: &str) -> Vec<String> {
    let plain = remove_dot_segments(path);
    let decoded = remove_dot_segments(&percent_decode(path));
    if decoded == plain {
        vec![plain]
    } else {
        vec![plain, decoded]
    }
}

/// RFC 3986 section 5.2.4, on a path that starts with `/` (others are returned as they are).
fn remove_dot_segments(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Decodes every `%XX` escape; anything else (a stray `%`) stays as it is.
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

fn parse_host(h: &str) -> Result<(HttpHost, Option<u16>), String> {
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{p:?} is not a port number (1-65535)"))
    };
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| "a '[' without its ']'".to_string())?;
        let p = match after {
            "" => None,
            a => Some(port(
                a.strip_prefix(':')
                    .ok_or_else(|| format!("{a:?} after ']' is not :PORT"))?,
            )?),
        };
        let ip: IpAddr = inside
            .parse()
            .map_err(|_| format!("{inside:?} is not an IPv6 address"))?;
        return Ok((HttpHost::Addr(crate::net::rules::canonical(ip)), p));
    } else {
        match h.rsplit_once(':') {
            Some((host, p)) => (host, Some(port(p)?)),
            None => (h, None),
        }
    };
    if host.is_empty() {
        return Err("no host: write a host name, a pattern such as *.example.com, or *".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((HttpHost::Addr(crate::net::rules::canonical(ip)), port));
    }
    if host.contains('*') {
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._*".contains(&b))
        {
            return Err(format!("{host:?} is not a host name pattern"));
        }
        return Ok((HttpHost::Glob(Glob::new(host, true)), port));
    }
    let name = crate::net::rules::parse_name(
        host,
        "a host name, a pattern such as *.example.com, or an IP address",
    )?;
    Ok((HttpHost::Name(name), port))
}

/// Parses `METHOD HOST[:PORT][/PATH]` (see the module documentation).
fn parse_rule(field: &str, s: &str) -> Result<HttpRule, PolicyError> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [method, target] = parts.as_slice() else {
        return Err(PolicyError::new(
            field,
            s,
            "write METHOD HOST[:PORT][/PATH], e.g. \"GET api.example.com/v1/*\" or \"* *.example.com\"",
        ));
    };
    request_part(field, s, method, target)
}

fn request_part(field: &str, s: &str, method: &str, target: &str) -> Result<HttpRule, PolicyError> {
    let err = |reason: String| PolicyError::new(field, s, reason);
    if !method
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || b == b'*' || b == b'-' || b == b'_')
    {
        return Err(err(format!(
            "{method:?} is not an HTTP method (GET, POST, ..., or a pattern such as *)"
        )));
    }
    let (host, path) = match target.find('/') {
        Some(i) => (&target[..i], &target[i..]),
        None => (target, "/*"),
    };
    let (host, port) = parse_host(host).map_err(&err)?;
    Ok(HttpRule {
        method: Glob::new(method, true),
        host,
        port,
        path: Glob::new(path, false),
        text: s.trim().to_string(),
    })
}

/// Parses `METHOD HOST[:PORT][/PATH] bearer NAME` or `... header HEADER-NAME NAME`.
fn parse_auth(field: &str, s: &str) -> Result<AuthRule, PolicyError> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let usage = "write \"METHOD HOST[:PORT][/PATH] bearer NAME\" or \"METHOD HOST[:PORT][/PATH] \
                 header HEADER-NAME NAME\", NAME one of the credentials";
    let (scheme, credential) = match parts.as_slice() {
        [_, _, kind, name] if kind.eq_ignore_ascii_case("bearer") => (AuthScheme::Bearer, *name),
        [_, _, kind, header, name] if kind.eq_ignore_ascii_case("header") => {
            let h = http::HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                PolicyError::new(field, s, format!("{header:?} is not a header name"))
            })?;
            (AuthScheme::Header(h), *name)
        }
        _ => return Err(PolicyError::new(field, s, usage)),
    };
    Ok(AuthRule {
        rule: request_part(field, s, parts[0], parts[1])?,
        scheme,
        credential: credential.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> HttpRules {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        HttpRules::parse(&v(allow), &v(deny), &[]).unwrap()
    }

    fn req<'a>(method: &'a str, host: &'a str, port: u16, path: &'a str) -> Request<'a> {
        Request {
            method,
            host,
            port,
            path,
        }
    }

    #[test]
    fn globs_match_any_run_of_characters() {
        let g = Glob::new("/v1/*/items/*", false);
        assert!(g.matches("/v1/a/items/b"));
        assert!(g.matches("/v1/a/b/items/"));
        assert!(!g.matches("/v2/a/items/b"));
        assert!(Glob::new("*", false).matches(""));
        assert!(Glob::new("*.example.com", true).matches("API.example.com"));
        assert!(!Glob::new("*.example.com", true).matches("example.com"));
        assert!(Glob::new("a*b*c", false).matches("aXbYbZc"));
        assert!(!Glob::new("a*b*c", false).matches("aXbYbZ"));
    }

    #[test]
    fn method_host_port_and_path_must_all_match_and_deny_wins() {
        let r = rules(
            &["GET allowed.test/public/*", "POST allowed.test:8080/submit"],
            &["* */public/secret*"],
        );
        assert_eq!(
            r.decide(&req("GET", "allowed.test", 80, "/public/a")),
            Verdict::Allow
        );
        assert_eq!(
            r.decide(&req("get", "allowed.test", 443, "/public/a")),
            Verdict::Allow
        );
        assert!(matches!(
            r.decide(&req("POST", "allowed.test", 80, "/public/a")),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            r.decide(&req("GET", "other.test", 80, "/public/a")),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            r.decide(&req("GET", "allowed.test", 8080, "/public/a")),
            Verdict::Deny(_)
        ));
        assert_eq!(
            r.decide(&req("POST", "allowed.test", 8080, "/submit")),
            Verdict::Allow
        );
        let Verdict::Deny(why) = r.decide(&req("GET", "allowed.test", 80, "/public/secret.txt"))
        else {
            panic!("a deny rule must win");
        };
        assert!(why.contains("http_deny[0]"), "{why}");
    }

    #[test]
    fn deny_alone_lets_everything_else_to_its_hosts_through() {
        let r = rules(&[], &["DELETE *"]);
        assert_eq!(r.decide(&req("GET", "x.test", 80, "/")), Verdict::Allow);
        assert!(matches!(
            r.decide(&req("DELETE", "x.test", 443, "/a")),
            Verdict::Deny(_)
        ));
        // A host no rule names stays out of reach, whatever the connection was routed by.
        let r = rules(&[], &["POST api.test/*"]);
        assert_eq!(r.decide(&req("GET", "api.test", 443, "/")), Verdict::Allow);
        assert!(matches!(
            r.decide(&req("GET", "other.test", 443, "/")),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            r.decide(&req("GET", "api.test", 8080, "/")),
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn dot_segments_and_escapes_do_not_get_past_the_rules() {
        let r = rules(&["GET h.test/public/*"], &["GET h.test/public/admin*"]);
        for sneaky in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/./admin",
            "/public/%61dmin",
            "/public/x/..%2F..%2Fadmin",
        ] {
            assert!(
                matches!(
                    r.decide(&req("GET", "h.test", 80, sneaky)),
                    Verdict::Deny(_)
                ),
                "{sneaky}"
            );
        }
        assert_eq!(
            r.decide(&req("GET", "h.test", 80, "/public/a%20b")),
            Verdict::Allow
        );
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("/mid/content=5/../6"), "/mid/6");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/../../x"), "/x");
        assert_eq!(remove_dot_segments("/a/b/"), "/a/b/");
        assert_eq!(percent_decode("/%41%zz%4"), "/A%zz%4");
    }

    #[test]
    fn hosts_are_names_addresses_or_patterns() {
        let one = |s: &str| parse_rule("http_allow[0]", s).unwrap();
        assert_eq!(
            one("GET API.Example.com/x").host,
            HttpHost::Name("api.example.com".into())
        );
        assert_eq!(
            one("GET 127.0.0.2:8080/").host,
            HttpHost::Addr("127.0.0.2".parse().unwrap())
        );
        assert!(one("GET 127.0.0.2:8080/").covers_port(8080));
        assert!(!one("GET 127.0.0.2:8080/").covers_port(80));
        assert!(one("GET [::1]:81").covers_port(81));
        assert!(one("* *.example.com").covers_port(80) && one("* *.example.com").covers_port(443));
        assert!(matches!(one("* *").host, HttpHost::Glob(_)));
        assert!(one("GET [::ffff:127.0.0.2]").host.matches("127.0.0.2"));
    }

    #[test]
    fn bad_entries_name_the_field_and_what_is_wrong() {
        for (bad, says) in [
            ("GET", "METHOD HOST"),
            ("GET a b c", "METHOD HOST"),
            ("GE/T host/", "not an HTTP method"),
            ("GET exa$mple.com/", "not a host name"),
            ("GET host:0/", "not a port number"),
            ("GET host:http/", "not a port number"),
            ("GET /path", "no host"),
            ("GET [::1/", "without its ']'"),
        ] {
            let e = HttpRules::parse(&[bad.to_string()], &[], &[]).unwrap_err();
            assert_eq!(e.field, "http_allow[0]", "{bad}");
            assert!(e.reason.contains(says), "{bad:?}: {}", e.reason);
        }
        let allow = vec!["GET h.test".to_string()];
        for (bad, says) in [
            ("GET h.test/ bearer", "bearer NAME"),
            ("GET h.test/ basic gh", "bearer NAME"),
            ("GET h.test/ header Bad:Header gh", "not a header name"),
        ] {
            let e = HttpRules::parse(&allow, &[], &[bad.to_string()]).unwrap_err();
            assert_eq!(e.field, "http_auth[0]", "{bad}");
            assert!(e.reason.contains(says), "{bad:?}: {}", e.reason);
        }
        let e = HttpRules::parse(&[], &[], &["GET h.test/ bearer gh".into()]).unwrap_err();
        assert_eq!(e.field, "http_auth");
    }

    #[test]
    fn the_first_auth_rule_that_matches_applies() {
        let r = HttpRules::parse(
            &["* h.test".into()],
            &[],
            &[
                "POST h.test/v1/* header X-Api-Key key".into(),
                "* h.test bearer token".into(),
            ],
        )
        .unwrap();
        let (i, a) = r.auth_for(&req("POST", "h.test", 443, "/v1/x")).unwrap();
        assert_eq!((i, a.credential.as_str()), (0, "key"));
        let (i, a) = r.auth_for(&req("GET", "h.test", 443, "/v1/x")).unwrap();
        assert_eq!((i, a.scheme.clone()), (1, AuthScheme::Bearer));
        assert!(r.auth_for(&req("GET", "other.test", 443, "/")).is_none());
    }
}
