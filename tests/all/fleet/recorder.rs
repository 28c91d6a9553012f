//! The shared backend of a fleet test: a loopback HTTP service holding each group's replica
//! count and recording every change with the agent and the decision that asked for it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// One `scale` call as the service saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub t_ms: i64,
    pub node: String,
    pub replicas: u64,
    pub decision: String,
}

#[derive(Default)]
struct Books {
    replicas: BTreeMap<String, u64>,
    calls: Vec<Call>,
}

pub struct Recorder {
    pub addr: SocketAddr,
    books: Arc<Mutex<Books>>,
    initial: u64,
}

impl Recorder {
    /// Every group starts with `initial` replicas.
    pub fn start(initial: u64) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let books: Arc<Mutex<Books>> = Default::default();
        let b = books.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let b = b.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &b, initial);
                });
            }
        });
        Recorder { addr, books, initial }
    }

    pub fn replicas(&self, group: &str) -> u64 {
        self.books.lock().unwrap().replicas.get(group).copied().unwrap_or(self.initial)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.books.lock().unwrap().calls.clone()
    }
}

fn serve(stream: std::net::TcpStream, books: &Mutex<Books>, initial: u64) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let group = path.trim_start_matches('/').to_string();
    let replicas = {
        let mut b = books.lock().unwrap();
        if method == "POST" {
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let replicas = doc["replicas"].as_u64().unwrap_or(0);
            b.replicas.insert(group.clone(), replicas);
            b.calls.push(Call {
                t_ms: agent::timefmt::now_ms(),
                node: doc["node"].as_str().unwrap_or("").to_string(),
                replicas,
                decision: doc["decision"].as_str().unwrap_or("").to_string(),
            });
        }
        b.replicas.get(&group).copied().unwrap_or(initial)
    };
    let answer = format!("{{\"replicas\": {replicas}}}");
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )
}
