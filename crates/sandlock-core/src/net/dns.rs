//! The sandbox's resolver: DNS over TCP, answered by the supervisor for the allowed names only.
//!
//! UDP stays refused inside a sandbox, so nothing can leave through DNS queries. When a policy names
//! hosts, the sandbox's environment gets `RES_OPTIONS=use-vc`, which makes the C library ask its
//! nameserver over TCP; the supervisor answers any TCP connect to port 53 (unless a rule allows that
//! address and port for real) by installing one end of a socket pair in place of the sandbox's
//! socket, and reads the queries from the other end. An allowed name gets the addresses the
//! supervisor resolved on the host (with their remaining TTL); any other name gets `NXDOMAIN`, and
//! is never sent anywhere. Programs that read `/etc/hosts` themselves still see it as it is.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

use std::sync::Arc;

use super::names::Names;

/// What the resolver makes of one message.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The answer to send back.
    Answer(Vec<u8>),
    /// The name is allowed but not resolved yet (a name a pattern admits, asked for the first
    /// time): ask again shortly.
    Pending,
    /// Not a query.
    Malformed,
}

/// The answer to one DNS query message.
pub(crate) fn answer(wire: &[u8], names: &Arc<Names>) -> Reply {
    let Ok(q) = Message::from_vec(wire) else {
        return Reply::Malformed;
    };
    if q.message_type() != MessageType::Query {
        return Reply::Malformed;
    }
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .add_queries(q.queries().to_vec());
    let code = match (q.op_code(), q.queries()) {
        (OpCode::Query, [query]) => {
            let name = query
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            if names.allowed(&name) {
                let Some(a) = names.lookup_nowait(&name) else {
                    return Reply::Pending;
                };
                for ip in &a.addrs {
                    let data = match (query.query_type(), ip) {
                        (RecordType::A, std::net::IpAddr::V4(v4)) => RData::A(A(*v4)),
                        (RecordType::AAAA, std::net::IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    r.add_answer(Record::from_rdata(query.name().clone(), a.ttl, data));
                }
                if a.addrs.is_empty() {
                    ResponseCode::ServFail
                } else {
                    ResponseCode::NoError
                }
            } else {
                ResponseCode::NXDomain
            }
        }
        (OpCode::Query, _) => ResponseCode::FormErr,
        _ => ResponseCode::NotImp,
    };
    r.set_response_code(code);
    match r.to_vec() {
        Ok(v) => Reply::Answer(v),
        Err(_) => Reply::Malformed,
    }
}

/// One TCP DNS conversation with the sandbox (queries and answers, each after a two-byte length).
pub(crate) struct Session {
    sock: std::os::unix::net::UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// The first query in `inbuf` waits for its name to be resolved.
    waiting: bool,
}

/// Most bytes a session buffers from the sandbox before an answer is written (a query is at most
/// 64 KiB; a sandbox that floods without reading loses its session).
const MAX_BUFFERED: usize = 256 * 1024;

impl Session {
    /// A session on our end of the socket pair (non-blocking).
    pub(crate) fn new(ours: OwnedFd) -> Session {
        let sock = std::os::unix::net::UnixStream::from(ours);
        Session {
            sock,
            inbuf: Vec::new(),
            out: Vec::new(),
            waiting: false,
        }
    }

    /// The descriptor to watch.
    pub(crate) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Whether answers wait to be written (then watch for writability too).
    pub(crate) fn pending(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether a query waits for a name being resolved (then call [`Session::on_ready`] again
    /// shortly, even if the sandbox sends nothing).
    pub(crate) fn waiting(&self) -> bool {
        self.waiting
    }

    /// Reads what the sandbox sent, answers every complete query, writes what it can. `false` when
    /// the conversation is over (the sandbox closed its end, or broke the protocol).
    pub(crate) fn on_ready(&mut self, names: &Arc<Names>) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
            if self.inbuf.len() > MAX_BUFFERED {
                return false;
            }
        }
        self.waiting = false;
        while self.inbuf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([self.inbuf[0], self.inbuf[1]]));
            if self.inbuf.len() < 2 + len {
                break;
            }
            let reply = match answer(&self.inbuf[2..2 + len], names) {
                Reply::Answer(r) => r,
                Reply::Pending => {
                    // Answers go out in order: this one, and those after it, wait.
                    self.waiting = true;
                    break;
                }
                Reply::Malformed => return false,
            };
            self.inbuf.drain(..2 + len);
            let Ok(rlen) = u16::try_from(reply.len()) else {
                return false;
            };
            self.out.extend_from_slice(&rlen.to_be_bytes());
            self.out.extend_from_slice(&reply);
        }
        self.flush()
    }

    fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.len() < MAX_BUFFERED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn ask(names: &Arc<Names>, name: &str, t: RecordType) -> Message {
        let mut q = Message::new();
        q.set_id(7)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let Reply::Answer(a) = answer(&q.to_vec().unwrap(), names) else {
            panic!("no answer");
        };
        Message::from_vec(&a).unwrap()
    }

    #[test]
    fn allowed_names_are_answered_and_others_do_not_exist() {
        let names = Arc::new(Names::new(vec!["localhost".into()], Vec::new()));
        names.resolve_all();
        let r = ask(&names, "localhost.", RecordType::A);
        assert_eq!((r.id(), r.response_code()), (7, ResponseCode::NoError));
        assert!(
            r.answers()
                .iter()
                .any(|a| matches!(a.data(), RData::A(a) if a.0.is_loopback()))
        );
        let r = ask(&names, "exfil-data.example.com.", RecordType::A);
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert!(r.answers().is_empty());
        let r = ask(&names, "LOCALHOST.", RecordType::MX);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty());
    }

    #[test]
    fn a_session_answers_length_prefixed_queries() {
        let names = Arc::new(Names::new(vec!["localhost".into()], Vec::new()));
        names.resolve_all();
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut s = Session::new(OwnedFd::from(ours));
        let mut q = Message::new();
        q.set_id(9)
            .set_message_type(MessageType::Query)
            .add_query(Query::query(
                Name::from_ascii("localhost.").unwrap(),
                RecordType::A,
            ));
        let wire = q.to_vec().unwrap();
        theirs
            .write_all(&(wire.len() as u16).to_be_bytes())
            .unwrap();
        theirs.write_all(&wire).unwrap();
        assert!(s.on_ready(&names));
        let mut len = [0u8; 2];
        theirs.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        theirs.read_exact(&mut reply).unwrap();
        assert_eq!(Message::from_vec(&reply).unwrap().id(), 9);
        drop(theirs);
        assert!(!s.on_ready(&names));
    }

    #[test]
    fn a_name_a_pattern_admits_is_answered_once_resolved_and_the_session_waits_meanwhile() {
        let names = Arc::new(Names::new(
            Vec::new(),
            vec![crate::net::proxy::rules::Glob::new("local*", true)],
        ));
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut s = Session::new(OwnedFd::from(ours));
        let mut q = Message::new();
        q.set_id(11)
            .set_message_type(MessageType::Query)
            .add_query(Query::query(
                Name::from_ascii("localhost.").unwrap(),
                RecordType::A,
            ));
        let wire = q.to_vec().unwrap();
        theirs
            .write_all(&(wire.len() as u16).to_be_bytes())
            .unwrap();
        theirs.write_all(&wire).unwrap();
        assert!(s.on_ready(&names));
        assert!(
            s.waiting(),
            "never resolved: the first look only starts the lookup"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.waiting() {
            assert!(std::time::Instant::now() < deadline, "never answered");
            std::thread::sleep(std::time::Duration::from_millis(5));
            assert!(s.on_ready(&names));
        }
        let mut len = [0u8; 2];
        theirs.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        theirs.read_exact(&mut reply).unwrap();
        let r = Message::from_vec(&reply).unwrap();
        assert_eq!((r.id(), r.response_code()), (11, ResponseCode::NoError));
        assert!(!r.answers().is_empty());
        // A name the pattern does not admit is refused at once, and never looked up.
        assert_eq!(
            ask(&names, "elsewhere.example.", RecordType::A).response_code(),
            ResponseCode::NXDomain
        );
    }
}
