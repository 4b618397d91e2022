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

/// The answer to one DNS query message, or `None` for bytes that are not a query.
pub(crate) fn answer(wire: &[u8], names: &Arc<Names>) -> Option<Vec<u8>> {
    let q = Message::from_vec(wire).ok()?;
    if q.message_type() != MessageType::Query {
        return None;
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
                let a = names.lookup(&name);
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
    r.to_vec().ok()
}

/// One TCP DNS conversation with the sandbox (queries and answers, each after a two-byte length).
pub(crate) struct Session {
    sock: std::os::unix::net::UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
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
        while self.inbuf.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([self.inbuf[0], self.inbuf[1]]));
            if self.inbuf.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = self.inbuf.drain(..2 + len).skip(2).collect();
            let Some(reply) = answer(&msg, names) else {
                return false;
            };
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
        Message::from_vec(&answer(&q.to_vec().unwrap(), names).unwrap()).unwrap()
    }

    #[test]
    fn allowed_names_are_answered_and_others_do_not_exist() {
        let names = Arc::new(Names::new(vec!["localhost".into()]));
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
        let names = Arc::new(Names::new(vec!["localhost".into()]));
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
}
