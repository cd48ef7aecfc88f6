//! A DNS server on 127.0.0.1 that a test controls: it answers A, AAAA and SRV
//! questions from a table the test edits while it runs, or SERVFAIL, NXDOMAIN, an
//! empty answer, a truncated one (the full answer then over TCP on the same port), or
//! silence. Written apart from ringway's own DNS code so a shared mistake cannot hide.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the server's threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// One record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
}

/// What the server answers for one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// These records (those of the type asked), and for SRV the targets' A records
    /// from the table in the additional section when `glue` is on.
    Records(Vec<Rr>),
    ServFail,
    NxDomain,
    /// NOERROR with no record.
    Empty,
    /// No answer at all.
    Silent,
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    /// Answered once, before `entries`.
    once: HashMap<String, Entry>,
    glue: bool,
    truncate: bool,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Starts on a free port of 127.0.0.1 (UDP and TCP).
    pub fn start() -> DnsServer {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let table = Arc::new(Mutex::new(Table {
            glue: true,
            ..Table::default()
        }));
        let (queries, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        udp.set_read_timeout(Some(POLL)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let t = (table.clone(), queries.clone(), stop.clone());
        let udp_thread = std::thread::spawn(move || serve_udp(udp, &t.0, &t.1, &t.2));
        let t = (table.clone(), queries.clone(), stop.clone());
        let tcp_thread = std::thread::spawn(move || serve_tcp(tcp, &t.0, &t.1, &t.2));
        DnsServer {
            addr,
            table,
            queries,
            stop,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    pub fn set(&self, name: &str, entry: Entry) {
        self.table
            .lock()
            .unwrap()
            .entries
            .insert(name.to_ascii_lowercase(), entry);
    }

    /// The next question about `name` gets `entry`; later ones the table's entry.
    pub fn set_once(&self, name: &str, entry: Entry) {
        self.table
            .lock()
            .unwrap()
            .once
            .insert(name.to_ascii_lowercase(), entry);
    }

    /// SRV answers carry their targets' addresses (default on).
    pub fn glue(&self, on: bool) {
        self.table.lock().unwrap().glue = on;
    }

    /// UDP answers come truncated, empty, with the TC bit; TCP answers are whole.
    pub fn truncate(&self, on: bool) {
        self.table.lock().unwrap().truncate = on;
    }

    /// Questions answered (or ignored) so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_udp(s: UdpSocket, table: &Mutex<Table>, queries: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        queries.fetch_add(1, Ordering::Relaxed);
        let mut t = table.lock().unwrap();
        let truncate = t.truncate;
        if let Some(answer) = answer(&buf[..n], &mut t, truncate) {
            let _ = s.send_to(&answer, from);
        }
    }
}

fn serve_tcp(l: TcpListener, table: &Mutex<Table>, queries: &AtomicU64, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut c, _)) = l.accept() else {
            std::thread::sleep(POLL);
            continue;
        };
        let _ = c.set_nonblocking(false);
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut len = [0u8; 2];
        if c.read_exact(&mut len).is_err() {
            continue;
        }
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if c.read_exact(&mut q).is_err() {
            continue;
        }
        queries.fetch_add(1, Ordering::Relaxed);
        let answer = answer(&q, &mut table.lock().unwrap(), false);
        if let Some(a) = answer {
            let mut framed = (a.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&a);
            let _ = c.write_all(&framed);
        }
    }
}

/// The question's name (lowercase, dotted) and type, and where the question ends.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    Some((labels.join("."), qtype, at + 4))
}

fn name_bytes(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

fn rr(out: &mut Vec<u8>, owner: &[u8], rtype: u16, data: &[u8]) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0]); // class IN, TTL 0
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn answer(q: &[u8], t: &mut Table, truncate: bool) -> Option<Vec<u8>> {
    let (name, qtype, qend) = question(q)?;
    let entry = match t.once.remove(&name) {
        Some(e) => e,
        None => t.entries.get(&name).cloned().unwrap_or(Entry::NxDomain),
    };
    let (rcode, records) = match entry {
        Entry::Silent => return None,
        Entry::ServFail => (2, Vec::new()),
        Entry::NxDomain => (3, Vec::new()),
        Entry::Empty => (0, Vec::new()),
        Entry::Records(r) => (0, r),
    };
    let mut answers = Vec::new();
    let mut additional = Vec::new();
    let (mut an, mut ar) = (0u16, 0u16);
    let owner = [0xc0, 12];
    for r in &records {
        match (r, qtype) {
            (Rr::A(ip), 1) => rr(&mut answers, &owner, 1, &ip.octets()),
            (Rr::Aaaa(ip), 28) => rr(&mut answers, &owner, 28, &ip.octets()),
            (
                Rr::Srv {
                    priority,
                    weight,
                    port,
                    target,
                },
                33,
            ) => {
                let mut data = Vec::new();
                for v in [priority, weight, port] {
                    data.extend_from_slice(&v.to_be_bytes());
                }
                data.extend_from_slice(&name_bytes(target));
                rr(&mut answers, &owner, 33, &data);
                if t.glue {
                    if let Some(Entry::Records(glue)) = t.entries.get(target.as_str()) {
                        for g in glue {
                            if let Rr::A(ip) = g {
                                rr(&mut additional, &name_bytes(target), 1, &ip.octets());
                                ar += 1;
                            }
                        }
                    }
                }
            }
            _ => continue,
        }
        an += 1;
    }
    let mut flags: u16 = 0x8180 | rcode;
    if truncate {
        flags |= 0x0200;
        (an, ar) = (0, 0);
        answers.clear();
        additional.clear();
    }
    let mut out = q[..2].to_vec();
    out.extend_from_slice(&flags.to_be_bytes());
    for c in [1, an, 0, ar] {
        out.extend_from_slice(&c.to_be_bytes());
    }
    out.extend_from_slice(&q[12..qend]);
    out.extend_from_slice(&answers);
    out.extend_from_slice(&additional);
    Some(out)
}

/// An SRV record of priority 0 and weight 1.
pub fn srv(target: &str, port: u16) -> Rr {
    Rr::Srv {
        priority: 0,
        weight: 1,
        port,
        target: target.into(),
    }
}
