//! Network confinement: TCP by port through Landlock, every other family refused by seccomp, IPC
//! scoped. Each attempt is made against a real listener on loopback, beside a control.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::time::Duration;

use super::support::*;

/// A listener on loopback that records whether anything connected.
fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn accepted(l: &TcpListener) -> Option<String> {
    let (mut s, _) = l.accept().ok()?;
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

fn connect_code(host: &str, port: u16) -> String {
    format!(
        "import socket\ns = socket.create_connection(({host:?}, {port}), timeout=3)\ns.sendall(b'hello')\ns.close()\nprint('connected')"
    )
}

#[test]
fn tcp_connect_is_denied_by_default() {
    let ws = Ws::new();
    let (l, port) = listener();
    let o = py(&policy(&ws), &connect_code("127.0.0.1", port));
    refused(&o);
    assert!(
        err(&o).contains("PermissionError") || err(&o).contains("Errno 13"),
        "{}",
        err(&o)
    );
    assert_eq!(accepted(&l), None, "nothing may reach the listener");
}

#[test]
fn tcp_connect_to_an_allowed_port_succeeds() {
    let ws = Ws::new();
    let (l, port) = listener();
    let mut p = policy(&ws);
    p.net_allow.push(format!(":{port}"));
    let o = py(&p, &connect_code("127.0.0.1", port));
    ok(&o);
    assert_eq!(accepted(&l).as_deref(), Some("hello"));
}

#[test]
fn connect_on_a_descriptor_that_is_not_open_fails_with_ebadf() {
    // TCP connects are decided from the address alone (the descriptor's kind is not looked up),
    // yet a number that holds nothing still fails as the kernel would have it, and no socket is
    // installed there.
    let ws = Ws::new();
    let (l, port) = listener();
    let code = format!(
        r#"
import ctypes, errno, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
sa = struct.pack('<HH4s8x', socket.AF_INET, socket.htons({port}), socket.inet_aton('127.0.0.1'))
r = libc.connect(900, sa, len(sa))
try:
    os.fstat(900); held = 'a socket is there'
except OSError as e:
    held = errno.errorcode[e.errno]
print(r, errno.errorcode[ctypes.get_errno()] if r else 'ok', held)
"#
    );
    let mut p = policy(&ws);
    p.net_allow.push(format!(":{port}"));
    let o = py(&p, &code);
    ok(&o);
    assert_eq!(out(&o), "-1 EBADF EBADF");
    assert_eq!(accepted(&l), None);
    // Control: the kernel answers the same outside a sandbox.
    assert_eq!(host_py(&code), "-1 EBADF EBADF");
}

#[test]
fn a_second_connect_is_answered_as_the_kernel_answers_it_and_connects_nothing() {
    // The idiom of APR (ab) and hiredis (redis-cli): connect without blocking, wait until
    // writable, connect again to learn how the first ended.
    let ws = Ws::new();
    let (l, port) = listener();
    let code = format!(
        r#"
import errno, select, socket
s = socket.socket(); s.setblocking(False)
print(errno.errorcode.get(s.connect_ex(('127.0.0.1', {port})), 'ok'))
select.select([], [s], [], 5)
for _ in range(2):
    print(errno.errorcode.get(s.connect_ex(('127.0.0.1', {port})), 'ok'))
s.setblocking(True); s.sendall(b'one'); s.close()
b = socket.create_connection(('127.0.0.1', {port}))
print(errno.errorcode.get(b.connect_ex(('127.0.0.1', {port})), 'ok'))
b.close()
"#
    );
    let mut p = policy(&ws);
    p.net_allow.push(format!(":{port}"));
    let o = py(&p, &code);
    ok(&o);
    assert_eq!(out(&o), "EINPROGRESS\nok\nEISCONN\nEISCONN", "{}", err(&o));
    assert_eq!(accepted(&l).as_deref(), Some("one"));
    assert_eq!(accepted(&l).as_deref(), Some(""), "the blocking one");
    assert!(l.accept().is_err(), "a connection too many was made");
    // Control: the kernel's own answers, outside a sandbox.
    assert_eq!(host_py(&code), "EINPROGRESS\nok\nEISCONN\nEISCONN");
}

#[test]
fn tcp_connect_to_another_port_is_denied_when_one_is_allowed() {
    let ws = Ws::new();
    let (l, port) = listener();
    let mut p = policy(&ws);
    p.net_allow
        .push(format!(":{}", if port == 65535 { 1 } else { port + 1 }));
    refused(&py(&p, &connect_code("127.0.0.1", port)));
    assert_eq!(accepted(&l), None);
}

#[test]
fn ipv6_and_ipv4_mapped_addresses_follow_the_same_port_rules() {
    let ws = Ws::new();
    let l6 = match TcpListener::bind("[::]:0") {
        Ok(l) => l,
        Err(e) => {
            skip(
                "ipv6_and_ipv4_mapped_addresses",
                &format!("no IPv6 on this host ({e})"),
            );
            return;
        }
    };
    l6.set_nonblocking(true).unwrap();
    let port = l6.local_addr().unwrap().port();
    let p = policy(&ws);
    refused(&py(&p, &connect_code("::1", port)));
    refused(&py(&p, &connect_code("::ffff:127.0.0.1", port)));
    assert_eq!(accepted(&l6), None);
    let mut allowed = policy(&ws);
    allowed.net_allow.push(format!(":{port}"));
    ok(&py(&allowed, &connect_code("::1", port)));
    assert_eq!(accepted(&l6).as_deref(), Some("hello"));
}

#[test]
fn udp_raw_and_packet_sockets_are_refused_even_with_tcp_allowed() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.net_allow.push(":53".into());
    let code = r#"
import socket, errno
res = []
for fam, ty, proto in [(socket.AF_INET, socket.SOCK_DGRAM, 0), (socket.AF_INET6, socket.SOCK_DGRAM, 0),
                       (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), (socket.AF_PACKET, socket.SOCK_RAW, 0),
                       (socket.AF_NETLINK, socket.SOCK_RAW, 0), (socket.AF_INET, socket.SOCK_STREAM, 0)]:
    try:
        socket.socket(fam, ty, proto).close()
        res.append('ok')
    except OSError as e:
        res.append(errno.errorcode[e.errno])
print(' '.join(res))
"#;
    let o = py(&p, code);
    ok(&o);
    assert_eq!(out(&o), "EACCES EACCES EACCES EACCES EACCES ok");
}

#[test]
fn dns_over_udp_is_refused() {
    let ws = Ws::new();
    let code = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('127.0.0.1', 53))";
    let o = py(&policy(&ws), code);
    refused(&o);
    assert!(err(&o).contains("PermissionError"), "{}", err(&o));
}

#[test]
fn tcp_bind_is_denied_by_default_and_allowed_by_rule() {
    let ws = Ws::new();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let code = format!(
        "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\nprint('bound')"
    );
    refused(&py(&policy(&ws), &code));
    let mut p = policy(&ws);
    p.net_allow_bind.push(port.to_string());
    let o = py(&p, &code);
    ok(&o);
    assert_eq!(out(&o), "bound");
}

#[test]
fn host_abstract_unix_socket_is_unreachable() {
    let ws = Ws::new();
    let name = format!("sandlock-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let code = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0{name}')\nprint('connected')"
    );
    let o = py(&policy(&ws), &code);
    refused(&o);
    // Control: the same code reaches it from outside the sandbox.
    assert_eq!(host_py(&code), "connected");
}

#[test]
fn a_host_abstract_datagram_socket_gets_nothing_from_sendto() {
    let ws = Ws::new();
    let name = format!("sandlock-dgram-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let server = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    server.set_nonblocking(true).unwrap();
    // Every way a sandbox could address a datagram: a datagram socket (refused at creation), and
    // sendto/sendmsg with an address on the stream and seqpacket sockets it may have (the kernel
    // refuses or ignores the address).
    let code = format!(
        r#"
import socket, errno
def t(f):
    try:
        f(); return 'sent'
    except OSError as e:
        return errno.errorcode[e.errno]
a = '\0{name}'
print(t(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'x', a)))
print(t(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).sendto(b'x', a)))
print(t(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).sendmsg([b'x'], [], 0, a)))
print(t(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).sendto(b'x', a)))
"#
    );
    for (name, k) in kernels(6) {
        let o = py_on(k, &policy(&ws), &code);
        ok(&o);
        assert!(!out(&o).contains("sent"), "{name}: {}", out(&o));
        let mut buf = [0u8; 8];
        assert!(
            server.recv(&mut buf).is_err(),
            "{name}: the host socket got a datagram"
        );
    }
    // Control: unconfined, the datagram arrives.
    assert!(host_py(&code).starts_with("sent"));
    let mut buf = [0u8; 8];
    assert!(server.recv(&mut buf).is_ok());
}

#[test]
fn abstract_unix_sockets_inside_the_sandbox_work() {
    let ws = Ws::new();
    let code = r#"
import socket, os
name = '\0sandlock-inner-%d' % os.getpid()
srv = socket.socket(socket.AF_UNIX); srv.bind(name); srv.listen()
c = socket.socket(socket.AF_UNIX); c.connect(name)
a, _ = srv.accept(); c.sendall(b'ping'); print(a.recv(4).decode())
"#;
    let o = py(&policy(&ws), code);
    ok(&o);
    assert_eq!(out(&o), "ping");
}

#[test]
fn loopback_control_the_listener_is_reachable_from_the_host() {
    let (l, port) = listener();
    TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(l.accept().is_ok());
}

fn unix_server(path: &std::path::Path) -> std::os::unix::net::UnixListener {
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

fn unix_connect_code(path: &str) -> String {
    format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path:?})\ns.sendall(b'hi')\nprint('connected')"
    )
}

#[test]
fn host_pathname_unix_socket_outside_the_policy_is_unreachable() {
    let (ws, host) = (Ws::new(), Ws::new());
    let sock = host.join("service.sock");
    let l = unix_server(&sock);
    let o = py(&policy(&ws), &unix_connect_code(&host.s("service.sock")));
    refused(&o);
    assert!(err(&o).contains("PermissionError"), "{}", err(&o));
    assert!(
        l.accept().is_err(),
        "the host service must not see a client"
    );
    // Control: the same code reaches it from outside the sandbox.
    assert_eq!(
        host_py(&unix_connect_code(&host.s("service.sock"))),
        "connected"
    );
}

#[test]
fn symlink_to_a_host_socket_does_not_help() {
    let (ws, host) = (Ws::new(), Ws::new());
    let _l = unix_server(&host.join("service.sock"));
    std::os::unix::fs::symlink(host.join("service.sock"), ws.join("link.sock")).unwrap();
    refused(&py(&policy(&ws), &unix_connect_code(&ws.s("link.sock"))));
}

#[test]
fn host_socket_inside_a_policy_path_is_reachable() {
    let ws = Ws::new();
    let l = unix_server(&ws.join("service.sock"));
    let o = py(&policy(&ws), &unix_connect_code(&ws.s("service.sock")));
    ok(&o);
    assert!(l.accept().is_ok());
}

#[test]
fn unix_servers_inside_the_sandbox_work() {
    let ws = Ws::new();
    let code = r#"
import os, socket
os.chdir(os.environ['HOME'])
for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
    name = 'srv-%d.sock' % kind
    srv = socket.socket(socket.AF_UNIX, kind); srv.bind(name); srv.listen()
    c = socket.socket(socket.AF_UNIX, kind); c.connect(name)   # relative path, from the cwd
    a, _ = srv.accept(); c.sendall(b'ping'); print(a.recv(4).decode())
"#;
    let o = py(&policy(&ws), code);
    ok(&o);
    assert_eq!(out(&o), "ping\nping");
}

#[test]
fn multiprocessing_manager_works_inside_the_sandbox() {
    let ws = Ws::new();
    let code = r#"
import multiprocessing as mp
if __name__ == '__main__':
    with mp.Manager() as m:
        d = m.dict(); d['x'] = 42; print(d['x'])
"#;
    let o = py(&policy(&ws), code);
    ok(&o);
    assert_eq!(out(&o), "42");
}

#[test]
fn unix_datagram_sockets_are_refused() {
    let ws = Ws::new();
    let code = "import socket, errno\ntry:\n    socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])";
    let o = py(&policy(&ws), code);
    ok(&o);
    assert_eq!(out(&o), "EACCES");
    assert_eq!(host_py(code), "ok");
}

#[test]
fn tcp_listen_without_bind_is_refused_when_only_connect_is_allowed() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.net_allow.push(":9".into());
    let code = "import socket, errno\ns = socket.socket()\ntry:\n    s.listen(); print('listening on', s.getsockname()[1])\nexcept OSError as e:\n    print(errno.errorcode[e.errno])";
    let o = py(&p, code);
    ok(&o);
    assert_eq!(out(&o), "EACCES");
    // Control: with a bind rule, an explicitly bound socket listens.
    let mut b = policy(&ws);
    b.net_allow_bind.push("0".into());
    let o = py(
        &b,
        "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint('ok')",
    );
    ok(&o);
}

#[test]
fn unix_raw_sockets_which_the_kernel_makes_datagram_are_refused() {
    let (ws, host) = (Ws::new(), Ws::new());
    let path = host.join("dgram.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    server.set_nonblocking(true).unwrap();
    let code = format!(
        "import socket, errno\ntry:\n    s = socket.socket(socket.AF_UNIX, socket.SOCK_RAW)\n    s.sendto(b'escaped', {:?}); print('sent')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
        path.display().to_string()
    );
    let o = py(&policy(&ws), &code);
    ok(&o);
    assert_eq!(out(&o), "EACCES");
    let mut buf = [0u8; 16];
    assert!(
        server.recv(&mut buf).is_err(),
        "the host datagram socket received something"
    );
    // Control: outside the sandbox the same code reaches it.
    assert_eq!(host_py(&code), "sent");
}

#[test]
fn descriptor_swap_race_cannot_reach_a_host_unix_socket() {
    let (ws, host) = (Ws::new(), Ws::new());
    let Some(exe) = build_c(ws.path(), "fdswap_race") else {
        return;
    };
    let sock = host.join("service.sock");
    let l = unix_server(&sock);
    let o = run(
        &policy(&ws),
        &[
            exe.to_str().unwrap(),
            sock.to_str().unwrap(),
            &race_rounds(20000),
        ],
    );
    assert!(out(&o).starts_with("held for"), "{} {}", out(&o), err(&o));
    assert!(l.accept().is_err(), "the host service saw a client");
    // Control: unconfined, the same program connects at once.
    let c = std::process::Command::new(&exe)
        .arg(&sock)
        .arg("1000000")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("escaped"));
}

/// Python that tries each `(host, port)` and prints `ok` or the errno name, one per line.
fn try_connect(targets: &[(&str, u16)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(h, p)| format!("({h:?}, {p})"))
        .collect();
    format!(
        "import socket, errno\nfor h, p in [{}]:\n    try:\n        s = socket.create_connection((h, p), timeout=3); s.close(); print('ok')\n    except OSError as e:\n        print(errno.errorcode.get(e.errno, str(e)))",
        list.join(", ")
    )
}

#[test]
fn an_allowed_name_is_reachable_and_another_name_or_its_address_is_not() {
    if !test_names_present("rules by name") {
        return;
    }
    for (kname, k) in kernels(4) {
        let ws = Ws::new();
        let (port, a, o) = listeners_on_both();
        let mut p = policy(&ws);
        p.net_allow.push(format!("{}:{port}", ALLOWED.0));
        let code = try_connect(&[
            (ALLOWED.0, port),
            (ALLOWED.1, port),
            (OTHER.0, port),
            (OTHER.1, port),
            (ALLOWED.0, port + 1),
        ]);
        let r = py_on(k, &p, &code);
        ok(&r);
        assert_eq!(
            out(&r),
            "ok\nok\nEACCES\nEACCES\nEACCES",
            "{kname}: {}",
            err(&r)
        );
        assert!(
            a.accept().is_ok(),
            "{kname}: the allowed server saw nothing"
        );
        assert!(
            o.accept().is_err(),
            "{kname}: the other server saw a client"
        );
    }
    // Control: unconfined, the other name is reachable.
    let (port, _a, _o) = listeners_on_both();
    assert_eq!(host_py(&try_connect(&[(OTHER.0, port)])), "ok");
}

#[test]
fn cidr_rules_allow_inside_the_block_and_deny_rules_win() {
    let ws = Ws::new();
    let (port, inside, outside) = listeners_on_both();
    let mut p = policy(&ws);
    p.net_allow.push(format!("127.0.0.0/31:{port}"));
    p.net_allow.push(format!("127.0.0.2/32:{port}"));
    let r = py(
        &p,
        &try_connect(&[("127.0.0.2", port), ("127.0.0.3", port)]),
    );
    ok(&r);
    assert_eq!(out(&r), "ok\nEACCES", "{}", err(&r));
    assert!(inside.accept().is_ok() && outside.accept().is_err());
    // Deny alone: every destination but the denied ones.
    let mut d = policy(&ws);
    d.net_deny.push("127.0.0.3".into());
    let r = py(
        &d,
        &try_connect(&[
            ("127.0.0.2", port),
            ("127.0.0.3", port),
            ("::ffff:127.0.0.3", port),
        ]),
    );
    ok(&r);
    assert_eq!(
        out(&r).lines().take(2).collect::<Vec<_>>(),
        ["ok", "EACCES"],
        "{}",
        err(&r)
    );
    assert_ne!(
        out(&r).lines().nth(2),
        Some("ok"),
        "the IPv4-mapped form of a denied address"
    );
    assert!(outside.accept().is_err());
    // And deny wins over allow.
    let mut both = policy(&ws);
    both.net_allow.push(format!(":{port}"));
    both.net_deny.push("127.0.0.2".into());
    let r = py(
        &both,
        &try_connect(&[("127.0.0.2", port), ("127.0.0.3", port)]),
    );
    ok(&r);
    assert_eq!(out(&r), "EACCES\nok", "{}", err(&r));
}

/// Python that asks the resolver at 127.0.0.53:53 (any address on port 53 reaches the supervisor)
/// over TCP for each name, and prints the addresses or the response code.
const DNS_OVER_TCP: &str = r#"
import socket, struct, sys, os
def ask(name, qtype=1):
    q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
    q += b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\0'
    q += struct.pack('>HH', qtype, 1)
    s = socket.create_connection(('127.0.0.53', 53), timeout=5)
    s.sendall(struct.pack('>H', len(q)) + q)
    n = struct.unpack('>H', s.recv(2))[0]
    r = b''
    while len(r) < n:
        r += s.recv(n - len(r))
    rcode = r[3] & 0xf
    if rcode:
        return {3: 'NXDOMAIN', 2: 'SERVFAIL'}.get(rcode, 'rcode %d' % rcode)
    # Skip the header and the question, then read each answer: name (a pointer here), type,
    # class, TTL, length, data.
    i = len(q)
    out = []
    for _ in range(struct.unpack('>H', r[6:8])[0]):
        i += 2 if r[i] & 0xc0 else r.index(b'\0', i) + 1 - i
        t, _, _, length = struct.unpack('>HHIH', r[i:i + 10])
        if t == 1:
            out.append(socket.inet_ntoa(r[i + 10:i + 14]))
        i += 10 + length
    return ' '.join(out) or 'empty'
for name in sys.argv[1:]:
    print(ask(name))
print(os.environ.get('RES_OPTIONS'))
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print('udp ok')
except OSError as e:
    print('udp refused')
"#;

#[test]
fn dns_answers_allowed_names_and_no_query_leaves() {
    if !test_names_present("DNS for allowed names") {
        return;
    }
    for (kname, k) in kernels(4) {
        let ws = Ws::new();
        let mut p = policy(&ws);
        p.net_allow.push(format!("{}:443", ALLOWED.0));
        let code = DNS_OVER_TCP.to_string();
        let r = sandlock_core::Sandbox::with_kernel_support(p, k)
            .unwrap()
            .run(sandlock_core::Command::new([
                "python3",
                "-c",
                &code,
                ALLOWED.0,
                OTHER.0,
                "aGVsbG8gd29ybGQ.exfil.example.com",
            ]))
            .unwrap();
        ok(&r);
        assert_eq!(
            out(&r),
            format!("{}\nNXDOMAIN\nNXDOMAIN\nuse-vc\nudp refused", ALLOWED.1),
            "{kname}: {}",
            err(&r)
        );
    }
    // Control: without a name in the policy, port 53 is not answered by the supervisor (the
    // connect is refused like any other destination).
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.net_allow.push(":443".into());
    let r = sandlock_core::Sandbox::new(p)
        .unwrap()
        .run(sandlock_core::Command::new([
            "python3",
            "-c",
            DNS_OVER_TCP,
            ALLOWED.0,
        ]))
        .unwrap();
    refused(&r);
    assert!(err(&r).contains("PermissionError"), "{}", err(&r));
}

#[test]
fn the_c_library_resolves_an_allowed_name_through_the_supervisor() {
    if !test_names_present("getaddrinfo through the supervisor") {
        return;
    }
    // Without /etc/hosts in the policy, the C library has only DNS to ask: over TCP (RES_OPTIONS
    // is set), answered by the supervisor from the host's own resolution.
    let ws = Ws::new();
    let mut p = sandlock_core::Policy {
        fs_readable: [
            "/usr",
            "/lib",
            "/lib64",
            "/bin",
            "/etc/ld.so.cache",
            "/etc/resolv.conf",
            "/etc/nsswitch.conf",
        ]
        .iter()
        .filter(|p| std::path::Path::new(p).exists())
        .map(std::path::PathBuf::from)
        .collect(),
        fs_writable: vec![ws.path().into()],
        ..sandlock_core::Policy::default()
    };
    p.net_allow.push(format!("{}:80", ALLOWED.0));
    let code = format!(
        "import socket\nfor n in ({:?}, {:?}):\n    try:\n        print(socket.gethostbyname(n))\n    except OSError as e:\n        print('unresolved')",
        ALLOWED.0, OTHER.0
    );
    let r = py(&p, &code);
    ok(&r);
    assert_eq!(out(&r), format!("{}\nunresolved", ALLOWED.1), "{}", err(&r));
}
