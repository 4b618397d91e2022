//! The HTTP proxy (`http_allow`, `http_deny`, `http_auth`): real upstream servers on
//! `allowed.test` (127.0.0.2) and `other.test` (127.0.0.3) record every request they receive, so
//! that a refused request is proven never to have left, beside the allowed one that arrives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandlock_core::{Command, Policy, Sandbox};

use super::support::*;

/// One request an upstream received: the request line, the headers (names lowercase), and which
/// of the upstream's connections it came on (numbered from 0 in the order they were accepted).
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    conn: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A test HTTP server (TLS when given a configuration) that records what it receives and answers
/// every request with 200 and `<name> says hi`, except one asking for `Upgrade: websocket`: that
/// gets `101 Switching Protocols` with the key's accept value (a wrong one for a path starting
/// with `/ws/badaccept`), and from then on every byte that comes is sent back in upper case, until
/// the client closes.
struct Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    fn start(ip: &str, port: u16, name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
        let listener = TcpListener::bind((ip, port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        Upstream::serve(listener, name, tls)
    }

    /// Serves on `listener` (nonblocking), as [`Upstream::start`] does.
    fn serve(
        listener: TcpListener,
        name: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Upstream {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, name) = (Arc::clone(&seen), Arc::clone(&stop), name.to_string());
        std::thread::spawn(move || {
            let mut accepted = 0;
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (s, name, tls) = (Arc::clone(&s), name.clone(), tls.clone());
                        let conn = accepted;
                        accepted += 1;
                        std::thread::spawn(move || serve_one(c, &s, &name, tls, conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Upstream { port, seen, stop }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.line).collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `Sec-WebSocket-Accept` value for `key` (RFC 6455 4.2.2).
fn accept_for(key: &str) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

fn serve_one(
    c: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    name: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
    conn: usize,
) {
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match tls {
        Some(config) => {
            let Ok(tls_conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            exchange(rustls::StreamOwned::new(tls_conn, c), seen, name, conn);
        }
        None => exchange(c, seen, name, conn),
    }
}

/// Reads requests until the client closes, records each, answers each. After answering a request
/// for a path that starts with `/bye`, it closes the connection (without saying so in the
/// answer), as a server whose idle timeout has passed does. After one for `/close-next`, it
/// records the next request on the connection and closes it without an answer, as a server
/// whose idle timeout passed just as that request came.
fn exchange<S: Read + Write>(stream: S, seen: &Mutex<Vec<Seen>>, name: &str, conn: usize) {
    let mut r = BufReader::new(stream);
    let mut close_next = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let upgrade = headers
            .iter()
            .any(|(k, v)| k == "upgrade" && v.eq_ignore_ascii_case("websocket"));
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let bye = path.starts_with("/bye");
        seen.lock().unwrap().push(Seen {
            line: line.trim_end().to_string(),
            headers,
            conn,
        });
        if close_next {
            return;
        }
        close_next = path == "/close-next";
        if upgrade {
            let accept = if path.starts_with("/ws/badaccept") {
                "wrong".to_string()
            } else {
                let last = seen.lock().unwrap().last().cloned().unwrap();
                accept_for(last.header("sec-websocket-key").unwrap_or_default())
            };
            let s = r.get_mut();
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
                 sec-websocket-accept: {accept}\r\n\r\n"
            );
            if s.write_all(head.as_bytes()).is_err() || s.flush().is_err() {
                return;
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let s = r.get_mut();
                if s.write_all(&buf[..n].to_ascii_uppercase()).is_err() || s.flush().is_err() {
                    return;
                }
            }
        }
        let text = format!("{name} says hi");
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{text}",
            text.len()
        );
        let s = r.get_mut();
        if s.write_all(reply.as_bytes()).is_err() || s.flush().is_err() || bye {
            return;
        }
    }
}

/// Python that makes each request `(method, url)` with urllib (the CA file, if any, trusted) and
/// prints `STATUS BODY` per line. Its sockets are blocking (no timeout), so that the connect waits
/// in the supervisor; an alarm bounds the whole.
fn requests(reqs: &[(&str, String)], cafile: Option<&str>) -> String {
    let list: Vec<String> = reqs
        .iter()
        .map(|(m, u)| format!("({m:?}, {u:?})"))
        .collect();
    format!(
        r#"
import signal, ssl, urllib.request, urllib.error
signal.alarm(60)
ctx = ssl.create_default_context(cafile={cafile})
for method, url in [{list}]:
    req = urllib.request.Request(url, method=method, data=b'x' if method in ('POST', 'PUT') else None)
    try:
        r = urllib.request.urlopen(req, context=ctx)
        print(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code, e.read().decode().strip())
    except Exception as e:
        print('error', type(e).__name__, e)
"#,
        cafile = cafile.map_or("None".to_string(), |c| format!("{c:?}")),
        list = list.join(", ")
    )
}

fn lines(o: &sandlock_core::Outcome) -> Vec<String> {
    out(o).lines().map(str::to_string).collect()
}

#[test]
fn the_acl_forwards_allowed_requests_and_refuses_others_before_the_upstream_sees_them() {
    if !test_names_present("HTTP ACL") {
        return;
    }
    let up = Upstream::start(ALLOWED.1, 0, "allowed", None);
    let p = up.port;
    let base = format!("http://{}:{p}", ALLOWED.0);
    for (kname, k) in kernels(4) {
        let ws = Ws::new();
        let mut pol = policy(&ws);
        pol.http_allow = vec![
            format!("GET {}:{p}/public/*", ALLOWED.0),
            format!("POST {}:{p}/submit", ALLOWED.0),
        ];
        pol.http_deny = vec![format!("* {}:{p}/public/secret*", ALLOWED.0)];
        let before = up.seen().len();
        let o = py_on(
            k,
            &pol,
            &requests(
                &[
                    ("GET", format!("{base}/public/a.txt")),
                    ("POST", format!("{base}/public/a.txt")),
                    ("GET", format!("{base}/private")),
                    ("GET", format!("{base}/public/secret.txt")),
                    ("GET", format!("{base}/public/../private")),
                    ("GET", format!("{base}/public/%2e%2e/private")),
                    ("POST", format!("{base}/submit")),
                ],
                None,
            ),
        );
        ok(&o);
        let l = lines(&o);
        assert_eq!(l[0], "200 allowed says hi", "{kname}: {l:?} {}", err(&o));
        for (i, what) in [
            (1, "POST"),
            (2, "GET"),
            (3, "http_deny[0]"),
            (4, "GET"),
            (5, "GET"),
        ] {
            assert!(
                l[i].starts_with("403 sandlock: request refused by the policy")
                    && l[i].contains(what),
                "{kname}: request {i}: {}",
                l[i]
            );
        }
        assert_eq!(l[6], "200 allowed says hi", "{kname}");
        let got: Vec<String> = up.lines().into_iter().skip(before).collect();
        assert_eq!(
            got,
            ["GET /public/a.txt HTTP/1.1", "POST /submit HTTP/1.1"],
            "{kname}: the upstream must see the allowed requests and nothing else"
        );
    }
    // Control: unconfined, the upstream takes every one of these requests.
    let o = host_py(&requests(
        &[
            ("POST", format!("{base}/public/a.txt")),
            ("GET", format!("{base}/private")),
        ],
        None,
    ));
    assert_eq!(o, "200 allowed says hi\n200 allowed says hi");
}

#[test]
fn only_the_hosts_the_rules_name_are_reachable_whatever_the_host_header_says() {
    if !test_names_present("HTTP hosts") {
        return;
    }
    let (p, a, o) = listeners_on_both();
    let allowed = Upstream::serve(a, "allowed", None);
    let other = Upstream::serve(o, "other", None);
    let ws = Ws::new();
    let mut pol = policy(&ws);
    pol.http_allow = vec![format!("* {}:{p}", ALLOWED.0)];
    let code = format!(
        r#"
import socket
for host, addr in [({other:?}, {other_ip:?}), ({other:?}, {allowed_ip:?})]:
    try:
        s = socket.create_connection((addr, {p}), timeout=5)
        s.sendall(b'GET /x HTTP/1.1\r\nHost: ' + host.encode() + b'\r\nConnection: close\r\n\r\n')
        print(s.recv(200).decode().splitlines()[0])
    except OSError as e:
        print('refused', e.errno)
"#,
        other = OTHER.0,
        other_ip = OTHER.1,
        allowed_ip = ALLOWED.1,
    );
    let o = py(&pol, &code);
    ok(&o);
    // A host no rule names cannot be connected to; a request for it on a connection to a host a
    // rule names (domain fronting) is refused by the proxy.
    assert_eq!(
        lines(&o),
        ["refused 13", "HTTP/1.1 403 Forbidden"],
        "{}",
        err(&o)
    );
    assert!(other.seen().is_empty() && allowed.seen().is_empty());
    // Control: the rule's own host is served.
    let o = py(
        &pol,
        &requests(&[("GET", format!("http://{}:{p}/x", ALLOWED.0))], None),
    );
    assert_eq!(out(&o), "200 allowed says hi");
    assert_eq!(allowed.lines(), ["GET /x HTTP/1.1"]);
    // A request in absolute form is decided by the host it names, and the upstream is told that
    // host, whatever `Host` the sandbox sent beside it.
    let code = format!(
        r#"
import socket
s = socket.create_connection(({allowed:?}, {p}), timeout=5)
s.sendall(b'GET http://{allowed}:{p}/abs HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n')
print(s.recv(200).decode().splitlines()[0])
"#,
        allowed = ALLOWED.0,
        other = OTHER.0,
    );
    let o = py(&pol, &code);
    assert_eq!(out(&o), "HTTP/1.1 200 OK", "{}", err(&o));
    let last = allowed.seen().pop().unwrap();
    assert_eq!(
        last.header("host"),
        Some(format!("{}:{p}", ALLOWED.0).as_str()),
        "{last:?}"
    );
    assert!(other.seen().is_empty());
}

/// A CA and a server certificate for `allowed.test` and 127.0.0.2, as a test's own PKI.
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![ALLOWED.0.to_string(), ALLOWED.1.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        #[allow(deprecated)]
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

/// An HTTPS upstream on `allowed.test` with the test's own CA, and a policy whose HTTP rules allow
/// `GET allowed.test:PORT<path>`, that writes the sandbox's CA to `sandbox-ca.pem` in the
/// workspace and verifies the upstream against the test's CA (kept in a directory of the host's).
struct Tls {
    up: Upstream,
    ws: Ws,
    /// Holds `upstream-ca.pem`, outside the sandbox.
    _host: Ws,
    pol: Policy,
    ca_pem: String,
}

impl Tls {
    fn new(name: &str, path: &str) -> Tls {
        let (ca_pem, server) = test_pki();
        let up = Upstream::start(ALLOWED.1, 0, name, Some(server));
        let (ws, host) = (Ws::new(), Ws::new());
        std::fs::write(host.join("upstream-ca.pem"), &ca_pem).unwrap();
        let mut pol = policy(&ws);
        pol.http_allow = vec![format!("GET {}:{}{path}", ALLOWED.0, up.port)];
        pol.http_ca_out = Some(ws.join("sandbox-ca.pem"));
        pol.http_upstream_ca = Some(host.join("upstream-ca.pem"));
        Tls {
            up,
            ws,
            _host: host,
            pol,
            ca_pem,
        }
    }

    /// Where the sandbox finds the CA the proxy signs with.
    fn ours(&self) -> String {
        self.ws.s("sandbox-ca.pem")
    }
}

#[test]
fn https_is_intercepted_and_the_upstream_is_verified_against_the_trust_store() {
    if !test_names_present("HTTPS interception") {
        return;
    }
    let t = Tls::new("tls", "/ok/*");
    let (up, ws, ca_pem, ours) = (&t.up, &t.ws, &t.ca_pem, t.ours());
    let mut pol = t.pol.clone();
    let p = up.port;
    let url = |path: &str| format!("https://{}:{p}{path}", ALLOWED.0);
    let o = py(
        &pol,
        &requests(
            &[
                ("GET", url("/ok/1")),
                ("GET", url("/no/2")),
                ("POST", url("/ok/3")),
            ],
            Some(&ours),
        ),
    );
    ok(&o);
    let l = lines(&o);
    assert_eq!(l[0], "200 tls says hi", "{l:?} {}", err(&o));
    assert!(
        l[1].starts_with("403 sandlock:") && l[2].starts_with("403 sandlock:"),
        "{l:?}"
    );
    assert_eq!(up.lines(), ["GET /ok/1 HTTP/1.1"]);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);

    // The certificate the sandbox sees is the proxy's: a client that trusts only the upstream's
    // own CA refuses it.
    std::fs::write(ws.join("upstream-ca.pem"), ca_pem).unwrap();
    let o = py(
        &pol,
        &requests(&[("GET", url("/ok/4"))], Some(&ws.s("upstream-ca.pem"))),
    );
    assert!(
        out(&o).contains("CERTIFICATE_VERIFY_FAILED"),
        "{} {}",
        out(&o),
        err(&o)
    );
    // And the proxy verifies the upstream: against the host's trust store, which does not hold
    // the test's CA, the upstream is refused before any request is sent.
    pol.http_upstream_ca = None;
    let o = py(&pol, &requests(&[("GET", url("/ok/5"))], Some(&ours)));
    assert!(out(&o).starts_with("502 sandlock:"), "{}", out(&o));
    assert_eq!(up.lines(), ["GET /ok/1 HTTP/1.1"]);
}

/// Python that asks for an upgrade to `protocol` on each `(host, port, path, protocol)` (in TLS
/// trusting `cafile` if given) and prints one line per attempt: the status line, and after a
/// `101` what comes back for two messages and whether the upstream then closes when the client
/// does.
fn upgrades(reqs: &[(&str, u16, &str, &str)], cafile: Option<&str>) -> String {
    let list: Vec<String> = reqs
        .iter()
        .map(|(h, p, path, proto)| format!("({h:?}, {p}, {path:?}, {proto:?})"))
        .collect();
    format!(
        r#"
import signal, socket, ssl
signal.alarm(60)
cafile = {cafile}
def exactly(s, n):
    got = b''
    while len(got) < n:
        c = s.recv(n - len(got))
        if not c:
            break
        got += c
    return got.decode()
for host, port, path, proto in [{list}]:
    s = socket.create_connection((host, port))
    if cafile:
        s = ssl.create_default_context(cafile=cafile).wrap_socket(s, server_hostname=host)
    s.sendall(f'GET {{path}} HTTP/1.1\r\nHost: {{host}}:{{port}}\r\nConnection: Upgrade\r\n'
              f'Upgrade: {{proto}}\r\nSec-WebSocket-Version: 13\r\n'
              f'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'.encode())
    head = b''
    while b'\r\n\r\n' not in head:
        c = s.recv(1)
        if not c:
            break
        head += c
    status = head.split(b'\r\n')[0].decode()
    if ' 101 ' not in status:
        print(status)
        continue
    s.sendall(b'ping')
    one = exactly(s, 4)
    s.sendall(b'second message')
    two = exactly(s, 14)
    if cafile:
        s = s.unwrap()
    s.shutdown(socket.SHUT_WR)
    print(status, one, two, 'closed' if s.recv(1) == b'' else 'open')
"#,
        cafile = cafile.map_or("None".to_string(), |c| format!("{c:?}")),
        list = list.join(", ")
    )
}

#[test]
fn a_websocket_upgrade_is_decided_by_the_rules_then_tunnelled() {
    if !test_names_present("HTTP upgrades") {
        return;
    }
    let up = Upstream::start(ALLOWED.1, 0, "ws", None);
    let p = up.port;
    let (ws, vault) = (Ws::new(), Ws::new());
    let (secret, file) = secret_file(&vault);
    let mut pol = policy(&ws);
    pol.http_allow = vec![format!("GET {}:{p}/ws/*", ALLOWED.0)];
    pol.credentials
        .insert("token".into(), format!("file:{}", file.display()));
    pol.http_auth = vec![format!("GET {}:{p}/ws/* bearer token", ALLOWED.0)];
    let code = upgrades(
        &[
            (ALLOWED.0, p, "/ws/chat", "websocket"),
            (ALLOWED.0, p, "/private", "websocket"),
            (ALLOWED.0, p, "/ws/again", "websocket"),
            // HTTP/2 in clear text would carry later requests past the rules.
            (ALLOWED.0, p, "/ws/h2", "h2c"),
            // An upstream that answers 101 without taking the handshake is not tunnelled to.
            (ALLOWED.0, p, "/ws/badaccept", "websocket"),
        ],
        None,
    );
    let o = py(&pol, &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "HTTP/1.1 101 Switching Protocols PING SECOND MESSAGE closed",
            "HTTP/1.1 403 Forbidden",
            "HTTP/1.1 101 Switching Protocols PING SECOND MESSAGE closed",
            "HTTP/1.1 501 Not Implemented",
            "HTTP/1.1 502 Bad Gateway",
        ],
        "{}",
        err(&o)
    );
    // The refused upgrades never left; the allowed ones arrived asking to upgrade, with the
    // credential the proxy adds.
    let seen = up.seen();
    assert_eq!(
        up.lines(),
        [
            "GET /ws/chat HTTP/1.1",
            "GET /ws/again HTTP/1.1",
            "GET /ws/badaccept HTTP/1.1"
        ]
    );
    for s in &seen {
        assert_eq!(s.header("upgrade"), Some("websocket"), "{s:?}");
        assert_eq!(
            s.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("upgrade"),
            "{s:?}"
        );
        assert_eq!(s.header("sec-websocket-version"), Some("13"), "{s:?}");
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {secret}").as_str())
        );
    }
    // Control: unconfined, the upstream takes the upgrade the rules refuse.
    let o = host_py(&upgrades(&[(ALLOWED.0, p, "/private", "websocket")], None));
    assert_eq!(
        o,
        "HTTP/1.1 101 Switching Protocols PING SECOND MESSAGE closed"
    );
}

#[test]
fn a_websocket_upgrade_over_tls_is_intercepted_and_tunnelled() {
    if !test_names_present("HTTPS upgrades") {
        return;
    }
    let t = Tls::new("wss", "/ws/*");
    let p = t.up.port;
    let code = upgrades(
        &[
            (ALLOWED.0, p, "/ws/live", "websocket"),
            (ALLOWED.0, p, "/other", "websocket"),
        ],
        Some(&t.ours()),
    );
    let o = py(&t.pol, &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [
            "HTTP/1.1 101 Switching Protocols PING SECOND MESSAGE closed",
            "HTTP/1.1 403 Forbidden",
        ],
        "{}",
        err(&o)
    );
    assert_eq!(t.up.lines(), ["GET /ws/live HTTP/1.1"]);
}

#[test]
fn a_new_client_connection_reuses_an_idle_upstream_connection() {
    if !test_names_present("upstream connection reuse") {
        return;
    }
    let up = Upstream::start(ALLOWED.1, 0, "pooled", None);
    let p = up.port;
    let ws = Ws::new();
    let mut pol = policy(&ws);
    pol.http_allow = vec![format!("GET {}:{p}/*", ALLOWED.0)];
    let url = |path: &str| format!("http://{}:{p}{path}", ALLOWED.0);
    // urllib opens a new connection for every request (and asks to close it after).
    let o = py(
        &pol,
        &requests(
            &[
                ("GET", url("/one")),
                ("GET", url("/two")),
                ("GET", url("/bye/three")),
                ("GET", url("/four")),
                ("GET", url("/five")),
            ],
            None,
        ),
    );
    ok(&o);
    assert_eq!(lines(&o), ["200 pooled says hi"; 5], "{}", err(&o));
    let seen = up.seen();
    let conns: Vec<usize> = seen.iter().map(|s| s.conn).collect();
    // The first three went on one upstream connection; the server closed it after the third,
    // so the fourth went on a new one (no error reached the sandbox), which the fifth reused.
    assert_eq!(
        up.lines(),
        [
            "GET /one HTTP/1.1",
            "GET /two HTTP/1.1",
            "GET /bye/three HTTP/1.1",
            "GET /four HTTP/1.1",
            "GET /five HTTP/1.1"
        ]
    );
    assert!(
        conns[0] == conns[1]
            && conns[1] == conns[2]
            && conns[2] != conns[3]
            && conns[3] == conns[4],
        "upstream connections per request: {conns:?}"
    );
    // Control: bare, the same client makes one upstream connection per request.
    let before = up.seen().len();
    host_py(&requests(&[("GET", url("/a")), ("GET", url("/b"))], None));
    let bare: Vec<usize> = up.seen().iter().skip(before).map(|s| s.conn).collect();
    assert!(bare.len() == 2 && bare[0] != bare[1], "{bare:?}");
}

#[test]
fn a_request_on_an_idle_connection_its_server_drops_goes_again_only_if_safe() {
    if !test_names_present("upstream connection retry") {
        return;
    }
    let up = Upstream::start(ALLOWED.1, 0, "retry", None);
    let p = up.port;
    let ws = Ws::new();
    let mut pol = policy(&ws);
    pol.http_allow = vec![
        format!("GET {}:{p}/*", ALLOWED.0),
        format!("POST {}:{p}/*", ALLOWED.0),
    ];
    let url = |path: &str| format!("http://{}:{p}{path}", ALLOWED.0);
    // After `/close-next`, the upstream takes the next request on that connection and closes it
    // unanswered: a GET then goes again on a new connection, a POST (with a body) does not.
    let o = py(
        &pol,
        &requests(
            &[
                ("GET", url("/close-next")),
                ("GET", url("/after")),
                ("GET", url("/close-next")),
                ("POST", url("/post-after")),
            ],
            None,
        ),
    );
    ok(&o);
    let l = lines(&o);
    assert_eq!(l[..3], ["200 retry says hi"; 3], "{l:?} {}", err(&o));
    assert!(
        l[3].starts_with("502 sandlock:") && l[3].contains("a POST request is not sent twice"),
        "{l:?}"
    );
    let seen: Vec<(String, usize)> = up.seen().into_iter().map(|s| (s.line, s.conn)).collect();
    let line = |m: &str, path: &str| format!("{m} {path} HTTP/1.1");
    assert_eq!(
        seen,
        [
            (line("GET", "/close-next"), 0),
            (line("GET", "/after"), 0),
            (line("GET", "/after"), 1),
            (line("GET", "/close-next"), 1),
            (line("POST", "/post-after"), 1),
        ]
    );
}

#[test]
fn a_new_tls_client_connection_reuses_an_idle_verified_upstream_connection() {
    if !test_names_present("upstream TLS connection reuse") {
        return;
    }
    let t = Tls::new("tls", "/*");
    let p = t.up.port;
    let url = |path: &str| format!("https://{}:{p}{path}", ALLOWED.0);
    let o = py(
        &t.pol,
        &requests(
            &[("GET", url("/1")), ("GET", url("/2")), ("GET", url("/3"))],
            Some(&t.ours()),
        ),
    );
    ok(&o);
    assert_eq!(lines(&o), ["200 tls says hi"; 3], "{}", err(&o));
    let conns: Vec<usize> = t.up.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns.len(), 3);
    assert!(conns.iter().all(|c| *c == conns[0]), "{conns:?}");
}

/// A credential file outside every path of the sandbox, holding a secret made for this test.
fn secret_file(dir: &Ws) -> (String, std::path::PathBuf) {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    let secret: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let secret = format!("sl-secret-{secret}");
    let path = dir.join("token");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    (secret, path)
}

/// Python that looks for a secret everywhere the sandbox can look (see the script).
const HUNT: &str = include_str!("hunt_secret.py");

#[test]
fn a_credential_reaches_the_upstream_and_is_nowhere_in_the_sandbox() {
    if !test_names_present("credential injection") {
        return;
    }
    let up = Upstream::start(ALLOWED.1, 0, "api", None);
    let p = up.port;
    let (ws, vault) = (Ws::new(), Ws::new());
    let (secret, file) = secret_file(&vault);
    let digest = sha256_hex(secret.as_bytes());
    let mut pol = policy(&ws);
    pol.fs_readable.push("/proc".into());
    pol.http_allow = vec![format!("* {}:{p}/api/*", ALLOWED.0)];
    pol.credentials
        .insert("token".into(), format!("file:{}", file.display()));
    pol.http_auth = vec![
        format!("POST {}:{p}/api/keyed/* header X-Api-Key token", ALLOWED.0),
        format!("* {}:{p}/api/* bearer token", ALLOWED.0),
    ];
    let code = format!(
        "{}\n{}",
        requests(
            &[
                ("GET", format!("http://{}:{p}/api/one", ALLOWED.0)),
                ("POST", format!("http://{}:{p}/api/keyed/two", ALLOWED.0)),
            ],
            None,
        ),
        HUNT
    );
    let o = Sandbox::new(pol.clone())
        .unwrap()
        .run(Command::new([
            "python3",
            "-c",
            &code,
            &digest,
            file.to_str().unwrap(),
            ws.path().to_str().unwrap(),
        ]))
        .unwrap();
    ok(&o);
    assert_eq!(
        lines(&o),
        ["200 api says hi", "200 api says hi", "nowhere"],
        "{}",
        err(&o)
    );
    let seen = up.seen();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    assert_eq!(seen[1].header("x-api-key"), Some(secret.as_str()));
    assert_eq!(seen[1].header("authorization"), None);
    // Sent over plain HTTP: the outcome says so, once per rule and host.
    assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
    assert!(
        o.warnings.iter().all(|w| w.contains("over plain HTTP")
            && w.contains("credential token")
            && !w.contains(&secret)),
        "{:?}",
        o.warnings
    );
    // Control: the hunt finds the secret where it is, when the sandbox is given it.
    let mut given = policy(&ws);
    given.env.insert("LEAKED".into(), secret.clone());
    given.fs_readable.push("/proc".into());
    let o = Sandbox::new(given)
        .unwrap()
        .run(Command::new([
            "python3",
            "-c",
            HUNT,
            &digest,
            file.to_str().unwrap(),
            ws.path().to_str().unwrap(),
        ]))
        .unwrap();
    assert_eq!(out(&o), "env memory proc-environ", "{}", err(&o));
}

fn sha256_hex(data: &[u8]) -> String {
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib, sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())",
        ])
        .arg(std::str::from_utf8(data).unwrap())
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn a_host_pattern_admits_names_through_the_supervisors_resolver() {
    if !test_names_present("HTTP host patterns") {
        return;
    }
    let up = Upstream::start(ALLOWED.1, 0, "allowed", None);
    let p = up.port;
    // Without /etc/hosts in the policy, names resolve only through the supervisor, which answers
    // the names the pattern admits (resolved on the host when first asked) and no other.
    let ws = Ws::new();
    let mut pol = Policy {
        fs_readable: [
            "/usr",
            "/lib",
            "/lib64",
            "/bin",
            "/etc/ld.so.cache",
            "/etc/resolv.conf",
            "/etc/nsswitch.conf",
            "/etc/ssl",
        ]
        .iter()
        .filter(|p| std::path::Path::new(p).exists())
        .map(std::path::PathBuf::from)
        .collect(),
        fs_writable: vec![ws.path().into()],
        ..Policy::default()
    };
    pol.http_allow = vec![format!("GET *.test:{p}/*")];
    let code = format!(
        "import socket\nfor n in ({:?}, 'elsewhere.example'):\n    try:\n        print(socket.gethostbyname(n))\n    except OSError:\n        print('unresolved')\n{}",
        ALLOWED.0,
        requests(
            &[("GET", format!("http://{}:{p}/via-pattern", ALLOWED.0))],
            None
        )
    );
    let o = py(&pol, &code);
    ok(&o);
    assert_eq!(
        lines(&o),
        [ALLOWED.1, "unresolved", "200 allowed says hi"],
        "{}",
        err(&o)
    );
    assert_eq!(up.lines(), ["GET /via-pattern HTTP/1.1"]);
}

#[test]
fn bad_http_rules_are_refused_naming_the_field() {
    let ws = Ws::new();
    let make = |f: &dyn Fn(&mut Policy)| {
        let mut p = policy(&ws);
        f(&mut p);
        match Sandbox::new(p) {
            Err(sandlock_core::Error::Policy(e)) => e,
            Err(e) => panic!("not a policy error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    };
    let e = make(&|p| p.http_allow = vec!["GET allowed.test/".into(), "FETCH".into()]);
    assert_eq!(
        (e.field.as_str(), e.value.as_str()),
        ("http_allow[1]", "FETCH")
    );
    let e = make(&|p| p.http_deny = vec!["GET bad_host$/x".into()]);
    assert_eq!(e.field, "http_deny[0]");
    let e = make(&|p| {
        p.http_allow = vec!["GET allowed.test".into()];
        p.http_auth = vec!["GET allowed.test bearer nope".into()];
    });
    assert_eq!(e.field, "http_auth[0]");
    assert!(e.reason.contains("no credential named \"nope\""), "{e}");
    let e = make(&|p| {
        p.http_allow = vec!["GET allowed.test".into()];
        p.credentials
            .insert("k".into(), "file:/nonexistent/token".into());
    });
    assert_eq!(e.field, "credentials.k");
    let e = make(&|p| {
        p.http_allow = vec!["GET allowed.test".into()];
        p.credentials
            .insert("k".into(), format!("file:{}", ws.s("t")));
        std::fs::write(ws.join("t"), "v").unwrap();
    });
    assert_eq!(e.field, "credentials.k");
    assert!(e.reason.contains("sandbox may read"), "{e}");
    let e = make(&|p| p.http_ca_out = Some(ws.join("ca.pem")));
    assert_eq!(e.field, "http_ca_out");
    // Control: the same fields, well formed, make a sandbox.
    let mut good = policy(&ws);
    good.http_allow = vec!["GET allowed.test/x/*".into()];
    good.http_ca_out = Some(ws.join("ca.pem"));
    Sandbox::new(good).unwrap();
    assert!(
        std::fs::read_to_string(ws.join("ca.pem"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
}

/// The system trust bundle, if this machine has the Debian one.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn pem_blocks(text: &str) -> usize {
    text.matches("-----BEGIN CERTIFICATE-----").count()
}

/// The per-sandbox copies of a bundle that hold `ca_pem` (in the view's tree, in the temporary
/// directory).
fn injected_copies(ca_pem: &str) -> Vec<std::path::PathBuf> {
    let tree = std::env::temp_dir();
    std::fs::read_dir(&tree)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("sandlock-view-")
        })
        .map(|e| e.path().join(SYSTEM_BUNDLE.trim_start_matches('/')))
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(ca_pem.trim())))
        .collect()
}

#[test]
fn an_injected_ca_is_trusted_without_any_variable_and_the_host_bundle_is_untouched() {
    if !test_names_present("http_inject_ca") {
        return;
    }
    let Ok(host_bytes) = std::fs::read(SYSTEM_BUNDLE) else {
        skip("http_inject_ca", &format!("{SYSTEM_BUNDLE} is missing"));
        return;
    };
    let host_mtime = std::fs::metadata(SYSTEM_BUNDLE)
        .unwrap()
        .modified()
        .unwrap();
    let (ca_pem, server) = test_pki();
    let up = Upstream::start(ALLOWED.1, 0, "tls", Some(server));
    let p = up.port;
    let (ws, host) = (Ws::new(), Ws::new());
    std::fs::write(host.join("upstream-ca.pem"), &ca_pem).unwrap();
    let mut pol = policy(&ws);
    pol.http_allow = vec![format!("GET {}:{p}/ok/*", ALLOWED.0)];
    pol.http_upstream_ca = Some(host.join("upstream-ca.pem"));
    // Where this test finds the sandbox's authority; the sandbox is not told about it.
    pol.http_ca_out = Some(host.join("sandbox-ca.pem"));
    let url = format!("https://{}:{p}/ok/1", ALLOWED.0);

    // Control: without the flag, the default trust store does not hold the sandbox's authority.
    let o = py(&pol, &requests(&[("GET", url.clone())], None));
    assert!(
        out(&o).contains("CERTIFICATE_VERIFY_FAILED"),
        "{} {}",
        out(&o),
        err(&o)
    );
    assert!(up.lines().is_empty(), "{:?}", up.lines());

    pol.http_inject_ca = Some(SYSTEM_BUNDLE.into());
    let sandbox = Sandbox::new(pol.clone()).unwrap();
    let ours = std::fs::read_to_string(host.join("sandbox-ca.pem")).unwrap();
    let run = |argv: &[&str]| {
        sandbox
            .run(Command::new(argv.iter().copied()))
            .expect("run")
    };
    // Python's ssl.create_default_context() (OpenSSL opens /usr/lib/ssl/cert.pem, a symlink to
    // the bundle) and curl (which opens the bundle by its own path), without SSL_CERT_FILE.
    let o = run(&["python3", "-c", &requests(&[("GET", url.clone())], None)]);
    ok(&o);
    assert_eq!(out(&o), "200 tls says hi", "{}", err(&o));
    if std::path::Path::new("/usr/bin/curl").exists() {
        let o = run(&["/usr/bin/curl", "-sS", "--max-time", "30", &url]);
        ok(&o);
        assert_eq!(out(&o), "tls says hi", "{}", err(&o));
    } else {
        skip("http_inject_ca with curl", "/usr/bin/curl is missing");
    }
    assert_eq!(up.lines(), ["GET /ok/1 HTTP/1.1", "GET /ok/1 HTTP/1.1"]);

    // What the sandbox reads there: the host's certificates, then the authority; a read-only
    // file, listed once, with nothing beneath it.
    let look = r#"
import os, sys
b = sys.argv[1]
text = open(b).read()
print(text.count("-----BEGIN CERTIFICATE-----"), text.rstrip().endswith(sys.argv[2].strip()))
print(open("/usr/lib/ssl/cert.pem").read() == text if os.path.exists("/usr/lib/ssl/cert.pem") else True)
print(os.stat(b).st_size == len(text.encode()), os.listdir(os.path.dirname(b)).count(os.path.basename(b)))
for how in (lambda: open(b, "a"), lambda: os.open(b + "/x", os.O_RDONLY), lambda: os.unlink(b)):
    try:
        how()
        print("allowed")
    except OSError as e:
        print(e.strerror)
"#;
    let o = run(&["python3", "-c", look, SYSTEM_BUNDLE, &ours]);
    ok(&o);
    let host_text = String::from_utf8_lossy(&host_bytes);
    assert_eq!(
        lines(&o),
        [
            format!("{} True", pem_blocks(&host_text) + 1),
            "True".to_string(),
            "True 1".to_string(),
            "Read-only file system".to_string(),
            "Not a directory".to_string(),
            "Read-only file system".to_string(),
        ],
        "{}",
        err(&o)
    );

    // The host's file is as it was; the sandbox's copy goes with the sandbox.
    assert_eq!(injected_copies(&ours).len(), 1);
    drop(sandbox);
    assert!(injected_copies(&ours).is_empty());
    assert_eq!(std::fs::read(SYSTEM_BUNDLE).unwrap(), host_bytes);
    assert_eq!(
        std::fs::metadata(SYSTEM_BUNDLE)
            .unwrap()
            .modified()
            .unwrap(),
        host_mtime
    );
}

#[test]
fn a_write_raced_onto_the_injected_bundle_never_reaches_the_host_file() {
    let ws = Ws::new();
    let Some(exe) = build_c(ws.path(), "standin_races") else {
        return;
    };
    let (ca_pem, _) = test_pki();
    let trust = Ws::new();
    let bundle = trust.join("bundle.pem");
    std::fs::write(&bundle, &ca_pem).unwrap();
    std::fs::write(ws.join("ok"), "fine").unwrap();
    let mut p = policy(&ws);
    p.fs_readable.push(trust.path().to_path_buf());
    p.http_allow = vec![format!("GET {}", ALLOWED.0)];
    p.http_inject_ca = Some(bundle.clone());
    // The buffer flips between a workspace file the kernel may write and the bundle, which the
    // supervisor serves read-only; a flip after its look reaches the host file, which Landlock
    // grants read-only.
    let o = run(
        &p,
        &[
            exe.to_str().unwrap(),
            "overwrite",
            &ws.s("ok"),
            bundle.to_str().unwrap(),
            &race_rounds(20000),
        ],
    );
    assert!(out(&o).starts_with("done"), "{} {}", out(&o), err(&o));
    assert!(!out(&o).contains("(0 writes)"), "{}", out(&o));
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), ca_pem);
    // Control: granted read-write, the same race overwrites the host's file.
    let mut rw = p.clone();
    rw.fs_readable.pop();
    rw.fs_writable.push(trust.path().to_path_buf());
    rw.http_inject_ca = None;
    rw.http_allow.clear();
    let o = run(
        &rw,
        &[
            exe.to_str().unwrap(),
            "overwrite",
            &ws.s("ok"),
            bundle.to_str().unwrap(),
            &race_rounds(20000),
        ],
    );
    assert!(out(&o).starts_with("done"), "{} {}", out(&o), err(&o));
    assert_ne!(std::fs::read_to_string(&bundle).unwrap(), ca_pem);
}

#[test]
fn a_bad_bundle_to_inject_is_refused_naming_the_field_and_path() {
    let ws = Ws::new();
    let make = |f: &dyn Fn(&mut Policy)| {
        let mut p = policy(&ws);
        p.http_allow = vec!["GET allowed.test".into()];
        f(&mut p);
        match Sandbox::new(p) {
            Err(sandlock_core::Error::Policy(e)) => e,
            Err(e) => panic!("not a policy error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    };
    std::fs::write(ws.join("empty.pem"), "# no certificates\n").unwrap();
    for (path, why) in [
        (ws.join("missing.pem"), "no such file"),
        (ws.path().to_path_buf(), "not a regular file"),
        (ws.join("empty.pem"), "holds no PEM certificate"),
    ] {
        let e = make(&|p| p.http_inject_ca = Some(path.clone()));
        assert_eq!(
            (e.field.as_str(), e.value.as_str()),
            ("http_inject_ca", path.to_str().unwrap())
        );
        assert!(e.reason.contains(why), "{e}");
    }
    // Without HTTP rules there is no authority to inject.
    let e = make(&|p| {
        p.http_allow.clear();
        p.http_inject_ca = Some(SYSTEM_BUNDLE.into());
    });
    assert_eq!(e.field, "http_inject_ca");
    assert!(e.reason.contains("without http_allow or http_deny"), "{e}");
    // Control: a bundle with a certificate makes a sandbox.
    let (ca_pem, _) = test_pki();
    std::fs::write(ws.join("good.pem"), ca_pem).unwrap();
    let mut good = policy(&ws);
    good.http_allow = vec!["GET allowed.test".into()];
    good.http_inject_ca = Some(ws.join("good.pem"));
    Sandbox::new(good).unwrap();
}
