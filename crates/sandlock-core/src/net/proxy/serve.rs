//! The proxy's event loop: accepting the connections the supervisor registered, reading HTTP (in
//! TLS or not) with hyper, deciding each request, and forwarding the allowed ones.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedReceiver;

use super::credentials::Credentials;
use super::rules::{self, AuthScheme, HttpRules, Verdict};
use super::tls::Authority;
use super::{Message, Registration, RunLog};
use crate::net::NetPolicy;

/// How long a registration waits for its connection (the supervisor connects right after; this
/// only covers a proxy thread starved of CPU).
const REGISTRATION_TTL: Duration = Duration::from_secs(10);
/// Most connections a sandbox has open through the proxy at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 512;
/// How long the proxy tries to reach an upstream address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to say whether it speaks TLS.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle upstream connections kept per host, port and protocol.
const IDLE_PER_UPSTREAM: usize = 4;
/// Most idle upstream connections kept by a sandbox's proxy in all (host patterns make the hosts
/// themselves unbounded).
const IDLE_IN_ALL: usize = 32;
/// How long an idle upstream connection is kept: no longer than the shortest common server
/// default (gunicorn 2 s; Apache, Node and uvicorn 5 s; nginx 75 s), so that one is rarely taken
/// just as its server closes it. Its point is a client that makes requests one after the other.
const IDLE_FOR: Duration = Duration::from_secs(2);

/// What every connection of a sandbox shares.
pub(crate) struct State {
    pub(crate) rules: HttpRules,
    pub(crate) credentials: Credentials,
    pub(crate) authority: Authority,
    /// How to verify upstream servers, or why that cannot be done (then HTTPS requests fail).
    pub(crate) upstream_tls: Result<Arc<rustls::ClientConfig>, String>,
    pub(crate) net: NetPolicy,
    /// Upstream connections that the sandbox's finished connections leave for its next ones.
    pub(crate) idle: IdlePool,
}

/// Which upstream an idle connection leads to: host, port, and whether it speaks TLS.
type PoolKey = (String, u16, bool);
/// Idle connections to one upstream, each with the moment it became idle, most recent last.
type IdleList = Vec<(SendRequest<Body>, std::time::Instant)>;

/// Idle upstream connections, for a sandbox whose client opens a new connection for each request
/// (Python's `requests` without a session, `curl` per call): its next request then skips the
/// upstream's TCP and TLS handshakes, which for a server across the internet are round trips.
/// Connections are only shared between connections of one sandbox (each has its own proxy state);
/// a request carries its own credential header, nothing of a connection's.
#[derive(Default)]
pub(crate) struct IdlePool {
    idle: std::sync::Mutex<HashMap<PoolKey, IdleList>>,
}

impl IdlePool {
    /// The most recently idle connection to `key` that can take a request now.
    fn take(&self, key: &PoolKey) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some((sender, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender` if it is idle (its last response read to the end), within
    /// [`IDLE_PER_UPSTREAM`] and [`IDLE_IN_ALL`] (the oldest go first).
    fn put(&self, key: PoolKey, sender: SendRequest<Body>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        prune(&mut idle);
        if !sender.is_ready() {
            return;
        }
        let list = idle.entry(key).or_default();
        if list.len() == IDLE_PER_UPSTREAM {
            list.remove(0);
        }
        list.push((sender, std::time::Instant::now()));
        while idle.values().map(Vec::len).sum::<usize>() > IDLE_IN_ALL {
            let oldest = idle
                .iter()
                .filter_map(|(k, l)| l.first().map(|(_, since)| (since, k)))
                .min()
                .map(|(_, k)| k.clone());
            match oldest.and_then(|k| idle.get_mut(&k)) {
                Some(list) => {
                    list.remove(0);
                }
                None => break,
            }
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Drops the connections idle for longer than [`IDLE_FOR`] or closed by their server.
    fn prune(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            prune(&mut idle);
        }
    }
}

fn prune(idle: &mut HashMap<PoolKey, IdleList>) {
    idle.retain(|_, list| {
        list.retain(|(s, since)| since.elapsed() < IDLE_FOR && !s.is_closed());
        !list.is_empty()
    });
}

/// Where the upstream connection a request goes on comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    /// This sandbox connection's own, from its earlier requests.
    Own,
    /// Left idle by one of the sandbox's earlier connections.
    Idle,
    /// Made for this request.
    New,
}

/// A copy of `req` to send again on a new connection, if a connection that was kept open fails
/// under it: only for a request that is safe to repeat (GET, HEAD, OPTIONS) and has no body.
fn repeatable(req: &Request<Body>) -> Option<Request<Body>> {
    use hyper::body::Body as _;
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(
        http_body_util::Empty::<Bytes>::new()
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// What became of a request sent on an upstream connection.
enum Sent {
    Answered(Response<Incoming>),
    /// The connection was closed before it took the request, which comes back unsent.
    Returned(Request<Body>),
    Failed(hyper::Error),
}

async fn send(sender: &mut SendRequest<Body>, req: Request<Body>) -> Sent {
    if sender.ready().await.is_err() {
        return Sent::Returned(req);
    }
    match sender.try_send_request(req).await {
        Ok(res) => Sent::Answered(res),
        Err(mut e) => match e.take_message() {
            Some(req) => Sent::Returned(req),
            None => Sent::Failed(e.into_error()),
        },
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// Accepts connections until the last handle to the proxy is gone.
pub(crate) async fn run(
    listener: std::net::TcpListener,
    mut rx: UnboundedReceiver<Message>,
    state: Arc<State>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut waiting: HashMap<u16, Registration> = HashMap::new();
    let note = |waiting: &mut HashMap<u16, Registration>, m: Message| match m {
        Message::Expect(r) => {
            waiting.insert(r.port, r);
        }
        Message::Forget(port) => {
            waiting.remove(&port);
        }
    };
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => note(&mut waiting, m),
                None => return,
            },
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                // The registration was sent before the supervisor connected: it is in the queue.
                while let Ok(m) = rx.try_recv() {
                    note(&mut waiting, m);
                }
                waiting.retain(|_, r| r.at.elapsed() < REGISTRATION_TTL);
                let reg = waiting
                    .remove(&peer.port())
                    .filter(|_| peer.ip().is_loopback());
                // Not a connection the supervisor made for a sandbox, or one too many.
                let (Some(reg), Ok(slot)) = (reg, Arc::clone(&slots).try_acquire_owned()) else {
                    continue;
                };
                let state = Arc::clone(&state);
                // The slot is held for as long as the connection lives, through an upgrade too.
                tokio::spawn(connection(stream, reg, state, slot));
            }
        }
    }
}

/// One connection from the sandbox: TLS or plain HTTP, then requests until it closes.
async fn connection(
    stream: TcpStream,
    reg: Registration,
    state: Arc<State>,
    slot: OwnedSemaphorePermit,
) {
    let slot = Arc::new(slot);
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let tls = match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
        // A TLS record of type handshake.
        Ok(Ok(1)) => first[0] == 0x16,
        _ => return,
    };
    let ctx = |sni| {
        Arc::new(Conn {
            state: Arc::clone(&state),
            dest: reg.dest,
            tls,
            sni,
            log: Arc::clone(&reg.log),
            upstream: tokio::sync::Mutex::new(None),
            slot: Arc::clone(&slot),
        })
    };
    if !tls {
        serve_http(TokioIo::new(stream), ctx(None)).await;
        return;
    }
    let acceptor =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let Ok(start) = acceptor.await else {
        return;
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    // Without a name (a client that connected to an address), the certificate names the address.
    let cert_host = sni.clone().unwrap_or_else(|| reg.dest.ip().to_string());
    let Ok(config) = state.authority.server_config(&cert_host) else {
        return;
    };
    // A client that does not trust the sandbox's authority gives up here.
    let Ok(tls_stream) = start.into_stream(config).await else {
        return;
    };
    serve_http(TokioIo::new(tls_stream), ctx(sni)).await;
}

async fn serve_http<I>(io: I, ctx: Arc<Conn>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { ctx.handle(req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

/// One sandbox connection and the upstream connection it uses.
struct Conn {
    state: Arc<State>,
    /// Where the sandbox meant to connect (its port is the port requests go to).
    dest: SocketAddr,
    tls: bool,
    /// The name the client asked for in its TLS handshake.
    sni: Option<String>,
    log: Arc<RunLog>,
    upstream: tokio::sync::Mutex<Option<Upstream>>,
    /// This connection's place among the sandbox's `MAX_CONNECTIONS`; a tunnel keeps a handle.
    slot: Arc<OwnedSemaphorePermit>,
}

struct Upstream {
    host: String,
    sender: SendRequest<Body>,
}

/// Why a request was not forwarded.
struct Failure {
    status: StatusCode,
    why: String,
}

fn failure(status: StatusCode, why: impl Into<String>) -> Failure {
    Failure {
        status,
        why: why.into(),
    }
}

/// The proxy's own answer: `status`, and a line saying why.
fn answer(status: StatusCode, why: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("sandlock: {why}\n")))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers that describe one hop, not the message: the proxy's two connections frame and keep
/// alive on their own.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// What a request's `Upgrade` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum Upgrade {
    /// No `Upgrade` header: an ordinary request.
    No,
    /// A WebSocket handshake, properly asked: an HTTP/1.1 GET with `Upgrade: websocket`,
    /// `upgrade` among the `Connection` options (RFC 9110 7.8) and a `Sec-WebSocket-Key`
    /// (RFC 6455 4.1), whose value this holds.
    WebSocket(HeaderValue),
    /// Anything else: another protocol, several, or no `Connection: upgrade`.
    Refused(&'static str),
}

/// What `req` asks to upgrade to. Only WebSocket is carried: any other protocol would let the
/// sandbox speak past the rules once the upstream switched, such as HTTP/2 in clear text (`h2c`),
/// where every later request on the connection reaches the upstream without being decided.
fn upgrade_of<B>(req: &Request<B>) -> Upgrade {
    let mut values = req.headers().get_all(header::UPGRADE).iter();
    let Some(first) = values.next() else {
        return Upgrade::No;
    };
    let asked = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|o| o.trim().eq_ignore_ascii_case("upgrade"));
    if !asked {
        return Upgrade::Refused("an Upgrade header without `upgrade` in Connection");
    }
    let websocket = values.next().is_none()
        && first
            .to_str()
            .is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return Upgrade::Refused("the HTTP proxy carries protocol upgrades to WebSocket only");
    }
    if req.method() != Method::GET || req.version() != http::Version::HTTP_11 {
        return Upgrade::Refused("a WebSocket upgrade is an HTTP/1.1 GET");
    }
    match req.headers().get("sec-websocket-key") {
        Some(key) if !key.as_bytes().trim_ascii().is_empty() => Upgrade::WebSocket(key.clone()),
        _ => Upgrade::Refused("a WebSocket upgrade without Sec-WebSocket-Key"),
    }
}

/// The `Sec-WebSocket-Accept` a server that really switches answers to `key` (RFC 6455 4.2.2):
/// an upstream that answers `101` otherwise has not taken the handshake, and what the sandbox
/// sends next might reach it as requests nobody decided.
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim_ascii());
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// Puts back the two hop-by-hop headers a WebSocket upgrade needs on the next hop.
fn keep_upgrade(h: &mut HeaderMap) {
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// The host a request is for (from its URI, else `Host`, else the TLS name): lowercase, without
/// port or trailing dot, an IPv6 address without brackets. `None` if there is none, or it is not
/// a host.
fn request_host(req: &Request<Incoming>, sni: Option<&str>) -> Option<String> {
    let from_header = || {
        req.headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<http::uri::Authority>()
            .ok()
            .map(|a| a.host().to_string())
    };
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(from_header)
        .or_else(|| sni.map(str::to_string))?;
    let host = raw
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ok = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
    ok.then_some(host)
}

impl Conn {
    /// Decides one request and answers it; an error closes the sandbox's connection.
    async fn handle(&self, mut req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
        if req.method() == Method::CONNECT {
            return Ok(answer(
                StatusCode::NOT_IMPLEMENTED,
                "the HTTP proxy does not carry CONNECT: connect to the host itself, the proxy \
                 is transparent",
            ));
        }
        let websocket = match upgrade_of(&req) {
            Upgrade::No => None,
            Upgrade::WebSocket(key) => Some(key),
            Upgrade::Refused(why) => return Ok(answer(StatusCode::NOT_IMPLEMENTED, why)),
        };
        let Some(host) = request_host(&req, self.sni.as_deref()) else {
            return Ok(answer(
                StatusCode::BAD_REQUEST,
                "the request names no host (no Host header)",
            ));
        };
        let port = self.dest.port();
        let r = rules::Request {
            method: req.method().as_str(),
            host: &host,
            port,
            path: req.uri().path(),
        };
        if let Verdict::Deny(why) = self.state.rules.decide(&r) {
            return Ok(answer(
                StatusCode::FORBIDDEN,
                &format!("request refused by the policy: {why}"),
            ));
        }
        let auth = self.state.rules.auth_for(&r).map(|(i, a)| (i, a.clone()));
        // Taken before the request goes upstream: the sandbox's side of an upgrade.
        let downstream = websocket.as_ref().map(|key| {
            (
                hyper::upgrade::on(&mut req),
                websocket_accept(key.as_bytes()),
            )
        });
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if downstream.is_some() {
            keep_upgrade(&mut parts.headers);
        }
        // A request in absolute form (`GET http://host/path`) was decided by the host it names,
        // so that is the host the upstream is told: a different `Host` header would otherwise
        // reach another site behind a front end shared by both (RFC 9112 3.2.2).
        if let Some(a) = parts.uri.authority() {
            let named = match a.port() {
                Some(port) => format!("{}:{port}", a.host()),
                None => a.host().to_string(),
            };
            match HeaderValue::from_str(&named) {
                Ok(v) => {
                    parts.headers.insert(header::HOST, v);
                }
                Err(_) => return Ok(answer(StatusCode::BAD_REQUEST, "a malformed host")),
            }
        }
        // The upstream connection is the proxy's own hop: it speaks HTTP/1.1 there (and keeps the
        // connection alive) whatever the sandbox spoke, as a proxy sends its own version.
        parts.version = http::Version::HTTP_11;
        if let Some((i, a)) = auth {
            let Some(secret) = self.state.credentials.get(&a.credential) else {
                return Ok(answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("http_auth[{i}] names a credential the proxy does not hold"),
                ));
            };
            let (name, value) = match &a.scheme {
                AuthScheme::Bearer => (header::AUTHORIZATION, secret.header("Bearer ")),
                AuthScheme::Header(h) => (h.clone(), secret.header("")),
            };
            let Some(value) = value else {
                return Ok(answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("credential {} cannot go in a header", a.credential),
                ));
            };
            parts.headers.insert(name, value);
            if !self.tls {
                self.log.warn(format!(
                    "http_auth[{i}] sent credential {} to {host}:{port} over plain HTTP: anyone \
                     on the way can read it (use https)",
                    a.credential
                ));
            }
        }
        if let Some((down, accept)) = downstream {
            return Ok(self
                .tunnel(
                    &host,
                    Request::from_parts(parts, body.boxed()),
                    down,
                    &accept,
                )
                .await
                .unwrap_or_else(|f| answer(f.status, &f.why)));
        }
        match self
            .forward(&host, Request::from_parts(parts, body.boxed()))
            .await
        {
            Ok(Some(mut res)) => {
                strip_hop_by_hop(res.headers_mut());
                Ok(res.map(BodyExt::boxed))
            }
            // The kept-alive upstream connection went away under the request: close the
            // sandbox's connection too, as the server's closing would have, so that its client
            // retries on a new one.
            Ok(None) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                format!("{host} closed a kept-alive connection"),
            )),
            Err(f) => Ok(answer(f.status, &f.why)),
        }
    }

    /// Forwards an upgrade request (a WebSocket handshake) on a connection of its own to `host`.
    /// If the upstream switches protocols, its `101` goes back to the sandbox and the two
    /// connections are joined byte for byte until either side closes: the rules decided the
    /// request that opened the tunnel, and what flows through it afterwards is not HTTP.
    async fn tunnel(
        &self,
        host: &str,
        req: Request<Body>,
        downstream: hyper::upgrade::OnUpgrade,
        accept: &str,
    ) -> Result<Response<Body>, Failure> {
        let mut sender = self.dial(host, true).await?;
        if let Err(e) = sender.ready().await {
            return Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} closed the connection: {e}"),
            ));
        }
        let mut res = sender.send_request(req).await.map_err(|e| {
            failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} did not answer: {e}"),
            )
        })?;
        let switched = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        let to_websocket = res
            .headers()
            .get(header::UPGRADE)
            .and_then(|p| p.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("websocket"));
        let accepted = res
            .headers()
            .get("sec-websocket-accept")
            .is_some_and(|a| a.as_bytes().trim_ascii() == accept.as_bytes());
        strip_hop_by_hop(res.headers_mut());
        if !switched {
            // Refused by the upstream: its answer is an ordinary response.
            return Ok(res.map(BodyExt::boxed));
        }
        if !to_websocket {
            return Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} switched to a protocol other than the WebSocket asked for"),
            ));
        }
        if !accepted {
            return Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} answered 101 without accepting the WebSocket key"),
            ));
        }
        keep_upgrade(res.headers_mut());
        let upstream = hyper::upgrade::on(&mut res);
        let slot = Arc::clone(&self.slot);
        tokio::spawn(async move {
            let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
                return;
            };
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            drop(slot);
        });
        Ok(res.map(BodyExt::boxed))
    }

    /// Which pooled upstream connections can carry this connection's requests for `host`.
    fn pool_key(&self, host: &str) -> PoolKey {
        (host.to_string(), self.dest.port(), self.tls)
    }

    /// Sends the request to `host` on this connection's upstream connection from an earlier
    /// request, else on an idle one the sandbox's earlier connections left, else on a new one.
    /// When a connection that is not new fails under the request: found closed before it took
    /// the request, or closed after taking a request that is safe to send again (GET, HEAD or
    /// OPTIONS, without a body), the request goes on a new connection. Otherwise `Ok(None)` if
    /// it was this connection's own (the sandbox's connection is then closed, as the server's
    /// closing would have), a 502 if it was an idle one.
    async fn forward(
        &self,
        host: &str,
        req: Request<Body>,
    ) -> Result<Option<Response<Incoming>>, Failure> {
        let mut slot = self.upstream.lock().await;
        let (mut sender, from) = match slot.take() {
            Some(u) if u.host == host && !u.sender.is_closed() => (u.sender, From::Own),
            other => {
                if let Some(u) = other {
                    self.state.idle.put(self.pool_key(&u.host), u.sender);
                }
                match self.state.idle.take(&self.pool_key(host)) {
                    Some(s) => (s, From::Idle),
                    None => (self.dial(host, false).await?, From::New),
                }
            }
        };
        let method = req.method().clone();
        let again = if from == From::New {
            None
        } else {
            repeatable(&req)
        };
        let sent = match (send(&mut sender, req).await, from) {
            (sent, From::New) | (sent @ Sent::Answered(_), _) => sent,
            (Sent::Returned(req), _) => {
                sender = self.dial(host, false).await?;
                send(&mut sender, req).await
            }
            (Sent::Failed(e), _) => match again {
                Some(req) => {
                    sender = self.dial(host, false).await?;
                    send(&mut sender, req).await
                }
                None if from == From::Own => return Ok(None),
                None => {
                    return Err(failure(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "{host} closed an idle connection as it took the request ({e}); a \
                             {method} request is not sent twice"
                        ),
                    ));
                }
            },
        };
        match sent {
            Sent::Answered(res) if res.status() == StatusCode::SWITCHING_PROTOCOLS => Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} switched protocols for a request that did not ask to"),
            )),
            Sent::Answered(res) => {
                *slot = Some(Upstream {
                    host: host.to_string(),
                    sender,
                });
                Ok(Some(res))
            }
            Sent::Returned(_) => Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} closed the connection"),
            )),
            Sent::Failed(e) => Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} did not answer: {e}"),
            )),
        }
    }

    /// A new connection to `host` on the port the sandbox connected to, in TLS if the sandbox
    /// spoke TLS; able to switch protocols if `upgrades`.
    async fn dial(&self, host: &str, upgrades: bool) -> Result<SendRequest<Body>, Failure> {
        let port = self.dest.port();
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let names = Arc::clone(self.state.net.names());
                let name = host.to_string();
                tokio::task::spawn_blocking(move || names.lookup(&name).addrs)
                    .await
                    .unwrap_or_default()
            }
        };
        if addrs.is_empty() {
            return Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("{host} does not resolve on the host"),
            ));
        }
        let reachable: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| !self.state.net.denies(*ip, port))
            .collect();
        if reachable.is_empty() {
            return Err(failure(
                StatusCode::FORBIDDEN,
                format!("every address of {host} is covered by net_deny"),
            ));
        }
        let mut last = String::new();
        let mut stream = None;
        for ip in reachable {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port))).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last = format!("{ip}:{port}: {e}"),
                Err(_) => last = format!("{ip}:{port}: no answer in {CONNECT_TIMEOUT:?}"),
            }
        }
        let Some(stream) = stream else {
            return Err(failure(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach {host}: {last}"),
            ));
        };
        let _ = stream.set_nodelay(true);
        let bad_gateway = |what: String| failure(StatusCode::BAD_GATEWAY, what);
        if !self.tls {
            return handshake(TokioIo::new(stream), upgrades)
                .await
                .map_err(|e| bad_gateway(format!("HTTP with {host}:{port}: {e}")));
        }
        let config = self
            .state
            .upstream_tls
            .clone()
            .map_err(|e| bad_gateway(format!("cannot verify {host}: {e}")))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| bad_gateway(format!("{host} is not a TLS server name: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| bad_gateway(format!("TLS with {host}:{port} failed: {e}")))?;
        handshake(TokioIo::new(tls), upgrades)
            .await
            .map_err(|e| bad_gateway(format!("HTTP with {host}:{port}: {e}")))
    }
}

impl Drop for Conn {
    /// The sandbox closed this connection: its upstream connection, if idle, serves the next,
    /// and is let go once it has been idle for [`IDLE_FOR`].
    fn drop(&mut self) {
        let Some(u) = self.upstream.get_mut().take() else {
            return;
        };
        self.state.idle.put(self.pool_key(&u.host), u.sender);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let state = Arc::clone(&self.state);
            runtime.spawn(async move {
                tokio::time::sleep(IDLE_FOR).await;
                state.idle.prune();
            });
        }
    }
}

async fn handshake<I>(io: I, upgrades: bool) -> Result<SendRequest<Body>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if upgrades {
            let _ = conn.with_upgrades().await;
        } else {
            let _ = conn.await;
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/ws");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_a_properly_asked_websocket_upgrade_is_carried() {
        const KEY: (&str, &str) = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        let u = |h: &[(&str, &str)]| upgrade_of(&request(h));
        let key = || Upgrade::WebSocket(HeaderValue::from_static(KEY.1));
        assert_eq!(u(&[]), Upgrade::No);
        assert_eq!(
            u(&[("upgrade", "websocket"), ("connection", "Upgrade"), KEY]),
            key()
        );
        // Among other options, in any case, in a second Connection header.
        assert_eq!(
            u(&[
                ("upgrade", "WebSocket"),
                ("connection", "keep-alive"),
                ("connection", "close, UPGRADE"),
                KEY,
            ]),
            key()
        );
        // Refused: no Connection option, another option, another protocol (h2c would carry
        // requests past the rules), several protocols, an empty one, no key.
        for h in [
            &[("upgrade", "websocket"), KEY][..],
            &[("upgrade", "websocket"), ("connection", "keep-alive"), KEY],
            &[
                ("upgrade", "h2c"),
                ("connection", "Upgrade, HTTP2-Settings"),
                KEY,
            ],
            &[
                ("upgrade", "websocket, h2c"),
                ("connection", "upgrade"),
                KEY,
            ],
            &[
                ("upgrade", "websocket"),
                ("upgrade", "h2c"),
                ("connection", "upgrade"),
                KEY,
            ],
            &[("upgrade", " "), ("connection", "upgrade"), KEY],
            &[("upgrade", "websocket"), ("connection", "upgrade")],
        ] {
            assert!(matches!(u(h), Upgrade::Refused(_)), "{h:?}");
        }
        // Not a GET, or not HTTP/1.1.
        let asked = [("upgrade", "websocket"), ("connection", "upgrade"), KEY];
        let mut post = request(&asked);
        *post.method_mut() = Method::POST;
        assert!(matches!(upgrade_of(&post), Upgrade::Refused(_)));
        let mut old = request(&asked);
        *old.version_mut() = http::Version::HTTP_10;
        assert!(matches!(upgrade_of(&old), Upgrade::Refused(_)));
    }

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_gives() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn the_upgrade_headers_survive_the_hop_by_hop_strip_only_when_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("sec-websocket-key", HeaderValue::from_static("k"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::UPGRADE).is_none() && h.get("x-hop").is_none());
        keep_upgrade(&mut h);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get("sec-websocket-key").unwrap(), "k");
    }

    #[test]
    fn the_idle_pool_is_bounded_per_upstream_and_in_all() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // The server side: accept and hold every connection.
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((c, _)) = listener.accept().await {
                    held.push(c);
                }
            });
            let pool = IdlePool::default();
            let count = |pool: &IdlePool| -> (usize, usize) {
                let idle = pool.idle.lock().unwrap();
                let most = idle.values().map(Vec::len).max().unwrap_or(0);
                (idle.values().map(Vec::len).sum(), most)
            };
            for i in 0..(IDLE_IN_ALL + 8) {
                let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
                let mut sender = handshake(io, false).await.unwrap();
                sender.ready().await.unwrap();
                // Six to each of the first hosts, then one to each of many.
                let host = if i < 12 {
                    format!("h{}", i / 6)
                } else {
                    format!("x{i}")
                };
                pool.put((host, 80, false), sender);
            }
            let (all, most) = count(&pool);
            assert_eq!(all, IDLE_IN_ALL);
            assert!(most <= IDLE_PER_UPSTREAM, "{most}");
            // The oldest went first: the first host's connections are gone.
            assert!(pool.take(&("h0".to_string(), 80, false)).is_none());
            assert!(
                pool.take(&(format!("x{}", IDLE_IN_ALL + 7), 80, false))
                    .is_some()
            );
            assert!(pool.take(&("nobody".to_string(), 80, false)).is_none());
        });
    }
}
