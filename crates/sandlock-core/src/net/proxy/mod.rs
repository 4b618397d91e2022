//! The HTTP proxy behind `http_allow`, `http_deny` and `http_auth`.
//!
//! What it owns: the rules ([`rules`]), the credentials it adds ([`credentials`]), the TLS
//! interception ([`tls`]), the trust bundle it has the view show ([`bundle`]) and the forwarding
//! itself ([`serve`]).
//!
//! **How connections reach it.** Transparently: the sandbox connects to a host as usual, and the
//! supervisor's connect emulation (`supervisor/connect.rs`), which decides every TCP connect,
//! asks [`Proxy::routes`] whether the destination is one the HTTP rules govern. If so, it connects
//! a socket of its own to the proxy's loopback listener instead of the destination, tells the
//! proxy which destination that socket stands for (by the socket's local port, registered before
//! it connects), and installs the socket in the sandbox. The sandbox holds a real TCP socket; no
//! `HTTP_PROXY` cooperation is needed. The listener serves nothing else: a connection whose source
//! port was not registered is closed at once.
//!
//! **Where it runs.** In one thread per [`crate::Sandbox`] whose policy has HTTP rules, started
//! when the sandbox is made, running a single-threaded tokio runtime (plus tokio's blocking pool
//! for name lookups). The supervisor's event loop stays single-threaded and only hands sockets
//! over; nothing of the proxy is in the spawn path. The thread ends when the sandbox and the last
//! of its runs are gone.
//!
//! **What it does with a connection.** It looks at the first byte: a TLS handshake is answered with
//! a certificate for the name the client asked for, issued by the sandbox's own authority
//! ([`tls::Authority`]), and the HTTP inside is read; anything else is read as HTTP. Each request
//! is checked against the rules ([`rules::HttpRules::decide`]): a refused one gets `403 Forbidden`
//! and never reaches the upstream; an allowed one gets its credential header, if an `http_auth`
//! entry applies, and is forwarded to the host its `Host` names (resolved on the host, never to a
//! `net_deny` address), over TLS verified against the host's trust store when the sandbox spoke
//! TLS.

pub(crate) mod bundle;
pub(crate) mod credentials;
pub(crate) mod rules;
mod serve;
pub(crate) mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::NetPolicy;
use super::rules::canonical;
use crate::error::{Error, PolicyError, SandboxError, Stage};
use crate::policy::Policy;
use crate::sys;
use rules::{HttpHost, HttpRules};

/// The certificate authority of the sandbox's proxy (`None` when the policy has no HTTP rules,
/// and then no field that only the proxy uses). Made before the proxy starts: the filesystem
/// view, planned first, shows its certificate ([`bundle`]).
pub(crate) fn authority(
    policy: &Policy,
    rules: &HttpRules,
) -> Result<Option<tls::Authority>, Error> {
    if !rules.any() {
        let unused = [
            ("http_auth", !policy.http_auth.is_empty()),
            ("credentials", !policy.credentials.is_empty()),
            ("http_ca_out", policy.http_ca_out.is_some()),
            (bundle::FIELD, policy.http_inject_ca.is_some()),
            ("http_upstream_ca", policy.http_upstream_ca.is_some()),
        ];
        if let Some((field, _)) = unused.iter().find(|(_, set)| *set) {
            return Err(PolicyError::new(
                *field,
                "",
                "only the HTTP proxy uses this, and there is none without http_allow or http_deny \
                 rules",
            )
            .into());
        }
        return Ok(None);
    }
    let authority = tls::Authority::new().map_err(|e| SandboxError::new(Stage::Proxy, None, e))?;
    Ok(Some(authority))
}

/// The file `http_inject_ca` has the view show: the bundle it names with `authority` added.
pub(crate) fn injected_bundle(
    policy: &Policy,
    authority: Option<&tls::Authority>,
) -> Result<Option<crate::fsview::spec::FileMount>, Error> {
    let (Some(path), Some(authority)) = (&policy.http_inject_ca, authority) else {
        return Ok(None);
    };
    Ok(Some(crate::fsview::spec::FileMount {
        field: bundle::FIELD,
        virts: bundle::paths(path),
        contents: bundle::injected(path, authority.ca_pem())?,
    }))
}

/// The proxy of a policy with HTTP rules, started with `authority` (see [`authority`]).
/// `readable` are the canonical paths the sandbox may read or write beneath (no credential file
/// may lie there); `notify` says whether the supervisor decides connects at all (the proxy depends
/// on it).
pub(crate) fn for_policy(
    policy: &Policy,
    rules: HttpRules,
    authority: tls::Authority,
    net: &NetPolicy,
    readable: &[PathBuf],
    notify: bool,
) -> Result<Arc<Proxy>, Error> {
    if !notify {
        return Err(SandboxError::new(
            Stage::Unsupported,
            None,
            "http_allow and http_deny need seccomp user notification (Linux 5.9 or newer, not \
             refused by the runtime's seccomp profile), which routes connections to the proxy",
        )
        .into());
    }
    let credentials = credentials::load(
        &policy.credentials,
        &rules,
        &credentials::Reach {
            pass_env: &policy.pass_env,
            paths: readable,
        },
    )?;
    let proxy = Proxy::start(Config {
        rules,
        credentials,
        authority,
        upstream_ca: policy.http_upstream_ca.clone(),
        net: net.clone(),
    })?;
    if let Some(out) = &policy.http_ca_out {
        std::fs::write(out, proxy.ca_pem()).map_err(|e| {
            PolicyError::new(
                "http_ca_out",
                out.display().to_string(),
                format!("cannot write the CA certificate there: {e}"),
            )
        })?;
    }
    Ok(proxy)
}

/// What the proxy needs from the policy.
pub(crate) struct Config {
    pub(crate) rules: HttpRules,
    pub(crate) credentials: credentials::Credentials,
    /// The sandbox's certificate authority, which signs the certificates the proxy answers with.
    pub(crate) authority: tls::Authority,
    /// A PEM bundle to verify upstream servers with instead of the host's trust store.
    pub(crate) upstream_ca: Option<PathBuf>,
    pub(crate) net: NetPolicy,
}

/// Things a run's requests gave rise to that its outcome should report (a credential sent in
/// cleartext). Each run has its own.
#[derive(Debug, Default)]
pub(crate) struct RunLog {
    warnings: Mutex<Vec<String>>,
}

impl RunLog {
    /// Records `w`, once.
    pub(crate) fn warn(&self, w: String) {
        if let Ok(mut v) = self.warnings.lock() {
            if !v.contains(&w) {
                v.push(w);
            }
        }
    }

    /// What was recorded, in order.
    pub(crate) fn take(&self) -> Vec<String> {
        self.warnings
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// A connection the supervisor made for the sandbox, announced before it reaches the listener.
pub(crate) struct Registration {
    /// The local port of the supervisor's socket (the peer port the listener will see).
    port: u16,
    /// Where the sandbox meant to connect.
    dest: SocketAddr,
    log: Arc<RunLog>,
    at: Instant,
}

/// What the supervisor tells the proxy.
pub(crate) enum Message {
    /// A connection is on its way.
    Expect(Registration),
    /// The connection from this port will not come: forget it before the port is reused by
    /// someone else.
    Forget(u16),
}

/// The running proxy of one sandbox, as the supervisor sees it.
pub(crate) struct Proxy {
    listen: SocketAddr,
    tx: mpsc::UnboundedSender<Message>,
    routing: Vec<rules::HttpRule>,
    names: Arc<super::names::Names>,
    ca_pem: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({})", self.listen)
    }
}

impl Proxy {
    /// Starts the proxy thread: binds its listener and loads the upstream trust store.
    pub(crate) fn start(config: Config) -> Result<Arc<Proxy>, SandboxError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| {
            SandboxError::io(
                Stage::Proxy,
                &e,
                "cannot listen on 127.0.0.1 for the HTTP proxy (is the loopback interface up?)",
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| SandboxError::io(Stage::Proxy, &e, "cannot set up the proxy listener"))?;
        let listen = listener
            .local_addr()
            .map_err(|e| SandboxError::io(Stage::Proxy, &e, "cannot set up the proxy listener"))?;
        let authority = config.authority;
        let upstream_tls = tls::client_config(config.upstream_ca.as_deref());
        if let (Some(path), Err(e)) = (&config.upstream_ca, &upstream_tls) {
            return Err(SandboxError::new(
                Stage::Proxy,
                None,
                format!("http_upstream_ca ({}): {e}", path.display()),
            ));
        }
        let ca_pem = authority.ca_pem().to_string();
        let routing: Vec<rules::HttpRule> = config.rules.routing().cloned().collect();
        let names = Arc::clone(config.net.names());
        let state = Arc::new(serve::State {
            rules: config.rules,
            credentials: config.credentials,
            authority,
            upstream_tls,
            net: config.net,
            idle: serve::IdlePool::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .thread_name("sandlock-proxy-lookup")
            // Name lookups only; more at once would only mean more threads waiting on the network.
            .max_blocking_threads(4)
            .build()
            .map_err(|e| SandboxError::io(Stage::Proxy, &e, "cannot start the proxy's runtime"))?;
        std::thread::Builder::new()
            .name("sandlock-proxy".into())
            .spawn(move || runtime.block_on(serve::run(listener, rx, state)))
            .map_err(|e| SandboxError::io(Stage::Proxy, &e, "cannot start the proxy thread"))?;
        Ok(Arc::new(Proxy {
            listen,
            tx,
            routing,
            names,
            ca_pem,
        }))
    }

    /// The certificate the sandbox must trust for HTTPS through the proxy (PEM).
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Whether a connect to `ip:port` goes to the proxy: the port is one the HTTP rules cover, and
    /// the address is one of a host a rule names (a name's resolved addresses, an address, the
    /// addresses the sandbox was given for a name a pattern admits), or, where a rule's host is a
    /// pattern, any address the network rules do not allow directly. Never waits.
    pub(crate) fn routes(&self, ip: IpAddr, port: u16, net: &NetPolicy) -> bool {
        let ip = canonical(ip);
        let mut pattern = false;
        for r in self.routing.iter().filter(|r| r.covers_port(port)) {
            let named = match &r.host {
                HttpHost::Name(n) => self.names.resolves_to(n, ip),
                HttpHost::Addr(a) => *a == ip,
                HttpHost::Glob(_) => {
                    pattern = true;
                    self.names.admitted_resolves_to(ip)
                }
            };
            if named {
                return true;
            }
        }
        pattern && !net.permits(ip, port)
    }

    /// Connects a socket of the supervisor's to the proxy on behalf of a sandbox connect to `dest`
    /// (`family` is the sandbox's socket family, which ours keeps). Returns the socket, non-blocking,
    /// and whether the connect is still in progress.
    pub(crate) fn connect(
        &self,
        family: libc::c_int,
        dest: SocketAddr,
        log: &Arc<RunLog>,
    ) -> Result<(OwnedFd, bool), i32> {
        let sock = new_socket(family)?;
        // Bound first, so that the proxy learns the port before the connection can arrive.
        let (local, to) = if family == libc::AF_INET6 {
            let mapped = |p| SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), p);
            (mapped(0), mapped(self.listen.port()))
        } else {
            (SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0), self.listen)
        };
        sys::bind_inet(&sock, local).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let port = sys::local_port(&sock).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        self.tx
            .send(Message::Expect(Registration {
                port,
                dest,
                log: Arc::clone(log),
                at: Instant::now(),
            }))
            // The proxy thread is gone (it failed); nothing can serve this connection.
            .map_err(|_| libc::ECONNREFUSED)?;
        match sys::connect_inet(&sock, to) {
            Ok(()) => Ok((sock, false)),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((sock, true)),
            Err(e) => {
                self.forget(port);
                Err(e.raw_os_error().unwrap_or(libc::ECONNREFUSED))
            }
        }
    }

    /// Withdraws the registration of a connection that failed (`port` is its local port).
    pub(crate) fn forget(&self, port: u16) {
        let _ = self.tx.send(Message::Forget(port));
    }
}

fn new_socket(family: libc::c_int) -> Result<OwnedFd, i32> {
    // SAFETY: socket takes integers and returns a new descriptor.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(sys::errno());
    }
    // SAFETY: socket just returned this descriptor.
    Ok(unsafe { sys::owned(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    fn ask(mut s: TcpStream) -> String {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A request the rules refuse: the answer comes from the proxy itself, no upstream needed.
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n");
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got
    }

    #[test]
    fn only_connections_the_supervisor_registered_are_served() {
        let rules = HttpRules::parse(&["GET 127.0.0.1".to_string()], &[], &[]).unwrap();
        let net = NetPolicy::new(Vec::new(), Vec::new(), &rules);
        let proxy = Proxy::start(Config {
            rules,
            credentials: credentials::Credentials::default(),
            authority: tls::Authority::new().unwrap(),
            upstream_ca: None,
            net,
        })
        .unwrap();
        // Anyone else on the machine can reach the listener, and gets nothing from it.
        assert_eq!(ask(TcpStream::connect(proxy.listen).unwrap()), "");
        // A connection the supervisor made (and registered) is served.
        let log = Arc::new(RunLog::default());
        let (sock, _) = proxy
            .connect(libc::AF_INET, "127.0.0.1:80".parse().unwrap(), &log)
            .unwrap();
        let answer = ask(TcpStream::from(sock));
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
        assert!(answer.contains("no http_allow rule matches GET other.example:80/"));
        // A registration withdrawn (its connect failed) no longer lets its port in.
        let sock = new_socket(libc::AF_INET).unwrap();
        sys::bind_inet(&sock, "127.0.0.1:0".parse().unwrap()).unwrap();
        let port = sys::local_port(&sock).unwrap();
        proxy
            .tx
            .send(Message::Expect(Registration {
                port,
                dest: "127.0.0.1:80".parse().unwrap(),
                log,
                at: Instant::now(),
            }))
            .unwrap();
        proxy.forget(port);
        // The connection then comes from that very port, as a stranger that got it would.
        let _in_progress = sys::connect_inet(&sock, proxy.listen);
        assert_eq!(ask(TcpStream::from(sock)), "");
    }
}
