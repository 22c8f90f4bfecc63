//! A steady DNS load for the redirector case: a few clients, each on its own UDP socket,
//! asking one A question in a closed loop with a fresh id each time. An answer must carry the
//! same id and question, NOERROR and at least one record; one that carries another id or
//! question counts as a wrong body. Records are the HTTP load's, so the figures are the same.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::load::{Kind, Outcome, Outcomes, Record};

/// A DNS query for `name`, type A, class IN, id `id`, recursion not desired.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(32 + name.len());
    packet.extend_from_slice(&id.to_be_bytes());
    // Flags 0; one question; no answer, authority or additional records.
    packet.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]);
    packet
}

/// How `reply` answers `sent`.
pub fn judge(sent: &[u8], reply: &[u8]) -> Outcome {
    if reply.len() < sent.len() {
        return Outcome::Failed(format!("a {}-byte reply", reply.len()));
    }
    if reply[..2] != sent[..2] || reply[12..sent.len()] != sent[12..] {
        return Outcome::WrongBody(format!(
            "reply id {:02x}{:02x} or question differs",
            reply[0], reply[1]
        ));
    }
    let rcode = reply[3] & 0x0f;
    let answers = u16::from_be_bytes([reply[6], reply[7]]);
    if reply[2] & 0x80 == 0 || rcode != 0 || answers == 0 {
        return Outcome::Failed(format!("rcode {rcode}, {answers} answers"));
    }
    Outcome::Answered
}

/// A running DNS load.
pub struct DnsLoad {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    workers: JoinSet<()>,
    /// When it started.
    pub started: Instant,
}

impl DnsLoad {
    /// `clients` clients asking `server` for `name`, each query given up after `timeout`.
    pub fn start(server: SocketAddr, name: &str, clients: usize, timeout: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let next_id = Arc::new(AtomicU64::new(1));
        let mut workers = JoinSet::new();
        for _ in 0..clients {
            let (stop, records, next_id) = (stop.clone(), records.clone(), next_id.clone());
            let name = name.to_owned();
            workers.spawn(async move {
                let socket = UdpSocket::bind("127.0.0.1:0").await.expect("a UDP socket");
                let mut buffer = vec![0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    let sent = query(id as u16, &name);
                    let started = Instant::now();
                    let exchange = async {
                        socket.send_to(&sent, server).await?;
                        loop {
                            let (n, from) = socket.recv_from(&mut buffer).await?;
                            // A late reply to an earlier query of this socket is not this
                            // query's answer: wait on.
                            if from == server && buffer[..2] == sent[..2] {
                                return Ok::<_, std::io::Error>(buffer[..n].to_vec());
                            }
                        }
                    };
                    let outcome = match tokio::time::timeout(timeout, exchange).await {
                        Ok(Ok(reply)) => judge(&sent, &reply),
                        Ok(Err(e)) => Outcome::Failed(format!("{e}")),
                        Err(_) => Outcome::Failed(format!("no reply in {timeout:?}")),
                    };
                    if outcome != Outcome::Answered {
                        // A refused send returns at once: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    records.lock().expect("records lock").push(Record {
                        id,
                        kind: Kind::Idempotent,
                        target: 0,
                        started,
                        finished: Instant::now(),
                        outcome,
                        served_by: None,
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        Self {
            stop,
            records,
            workers,
            started: Instant::now(),
        }
    }

    /// When the first query sent after `since` was answered, waiting up to `limit`.
    pub async fn wait_answered_since(&self, since: Instant, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let first = self
                .records
                .lock()
                .expect("records lock")
                .iter()
                .filter(|r| r.started >= since && r.outcome == Outcome::Answered)
                .map(|r| r.finished)
                .min();
            if first.is_some() || Instant::now() >= deadline {
                return first;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the clients and returns every record.
    pub async fn stop(mut self) -> Outcomes {
        self.stop.store(true, Ordering::SeqCst);
        while self.workers.join_next().await.is_some() {}
        let records = std::mem::take(&mut *self.records.lock().expect("records lock"));
        Outcomes {
            records,
            started: self.started,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_must_match_id_and_question() {
        let sent = query(0x1234, "shop.example.com");
        let mut reply = sent.clone();
        reply[2] = 0x84; // QR, AA
        reply[7] = 1; // one answer
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 192, 0, 2, 1]);
        assert_eq!(judge(&sent, &reply), Outcome::Answered);
        let other = query(0x1235, "shop.example.com");
        assert!(matches!(judge(&other, &reply), Outcome::WrongBody(_)));
        let mut servfail = reply.clone();
        servfail[3] = 2;
        assert!(matches!(judge(&sent, &servfail), Outcome::Failed(_)));
    }
}
