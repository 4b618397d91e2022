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
/// How long an idle upstream connection is kept: shorter than the idle timeout of common servers
/// (nginx 75 s, many HTTP APIs 60 s), so that one is rarely taken just as its server closes it.
const IDLE_FOR: Duration = Duration::from_secs(15);

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
type IdleList = Vec<(SendRequest<Incoming>, std::time::Instant)>;

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
    fn take(&self, key: &PoolKey) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some((sender, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps `sender` if it is idle (its last response read to the end), dropping the
    /// connections that have been idle too long or that their server closed.
    fn put(&self, key: PoolKey, sender: SendRequest<Incoming>) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain(|_, list| {
            list.retain(|(s, since)| since.elapsed() < IDLE_FOR && !s.is_closed());
            !list.is_empty()
        });
        if !sender.is_ready() {
            return;
        }
        let list = idle.entry(key).or_default();
        if list.len() == IDLE_PER_UPSTREAM {
            list.remove(0);
        }
        list.push((sender, std::time::Instant::now()));
    }
}

/// What became of a request sent on an upstream connection.
enum Sent {
    Answered(Response<Incoming>),
    /// The connection was closed before it took the request, which comes back unsent.
    Returned(Request<Incoming>),
    Failed(hyper::Error),
}

async fn send(sender: &mut SendRequest<Incoming>, req: Request<Incoming>) -> Sent {
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
    sender: SendRequest<Incoming>,
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
    /// A WebSocket handshake, properly asked: `Upgrade: websocket` and `upgrade` among the
    /// `Connection` options (RFC 9110 7.8).
    WebSocket,
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
    if websocket {
        Upgrade::WebSocket
    } else {
        Upgrade::Refused("the HTTP proxy carries protocol upgrades to WebSocket only")
    }
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
            Upgrade::No => false,
            Upgrade::WebSocket => true,
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
        let downstream = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if websocket {
            keep_upgrade(&mut parts.headers);
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
        if let Some(down) = downstream {
            return Ok(self
                .tunnel(&host, Request::from_parts(parts, body), down)
                .await
                .unwrap_or_else(|f| answer(f.status, &f.why)));
        }
        match self.forward(&host, Request::from_parts(parts, body)).await {
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
        req: Request<Incoming>,
        downstream: hyper::upgrade::OnUpgrade,
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
    /// A kept or pooled connection found closed before it took the request gets the request on
    /// a new one instead. `Ok(None)` when a kept or pooled connection failed after taking it.
    async fn forward(
        &self,
        host: &str,
        req: Request<Incoming>,
    ) -> Result<Option<Response<Incoming>>, Failure> {
        let mut slot = self.upstream.lock().await;
        let kept = match slot.take() {
            Some(u) if u.host == host && !u.sender.is_closed() => Some(u.sender),
            other => {
                if let Some(u) = other {
                    self.state.idle.put(self.pool_key(&u.host), u.sender);
                }
                self.state.idle.take(&self.pool_key(host))
            }
        };
        let was_kept = kept.is_some();
        let mut sender = match kept {
            Some(s) => s,
            None => self.dial(host, false).await?,
        };
        let sent = match send(&mut sender, req).await {
            Sent::Returned(req) if was_kept => {
                sender = self.dial(host, false).await?;
                send(&mut sender, req).await
            }
            Sent::Failed(_) if was_kept => return Ok(None),
            sent => sent,
        };
        match sent {
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
    async fn dial(&self, host: &str, upgrades: bool) -> Result<SendRequest<Incoming>, Failure> {
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
    /// The sandbox closed this connection: its upstream connection, if idle, serves the next.
    fn drop(&mut self) {
        if let Some(u) = self.upstream.get_mut().take() {
            self.state.idle.put(self.pool_key(&u.host), u.sender);
        }
    }
}

async fn handshake<I>(io: I, upgrades: bool) -> Result<SendRequest<Incoming>, hyper::Error>
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
        let u = |h: &[(&str, &str)]| upgrade_of(&request(h));
        assert_eq!(u(&[]), Upgrade::No);
        assert_eq!(
            u(&[("upgrade", "websocket"), ("connection", "Upgrade")]),
            Upgrade::WebSocket
        );
        // Among other options, in any case, in a second Connection header.
        assert_eq!(
            u(&[
                ("upgrade", "WebSocket"),
                ("connection", "keep-alive"),
                ("connection", "close, UPGRADE"),
            ]),
            Upgrade::WebSocket
        );
        // Refused: no Connection option, another option, another protocol (h2c would carry
        // requests past the rules), several protocols, an empty one.
        for h in [
            &[("upgrade", "websocket")][..],
            &[("upgrade", "websocket"), ("connection", "keep-alive")],
            &[
                ("upgrade", "h2c"),
                ("connection", "Upgrade, HTTP2-Settings"),
            ],
            &[("upgrade", "websocket, h2c"), ("connection", "upgrade")],
            &[
                ("upgrade", "websocket"),
                ("upgrade", "h2c"),
                ("connection", "upgrade"),
            ],
            &[("upgrade", " "), ("connection", "upgrade")],
        ] {
            assert!(matches!(u(h), Upgrade::Refused(_)), "{h:?}");
        }
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
}
