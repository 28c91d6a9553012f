//! A fault-injecting HTTP proxy of our own, between a cloud plugin and the real service (Nova,
//! moto's AWS APIs): it forwards every request unchanged unless a rule says otherwise — answer
//! 5xx or 429 with `Retry-After` itself, answer with the service's own error body (an AWS
//! throttling or validation error), drop the connection (before or after the service has
//! carried the request out), answer slowly, or reject tokens as expired. Rules match the method
//! and the path, or (AWS's query protocol: every call a `POST /`) the action in the body. It logs
//! every request, so a test can count the API calls an evaluation makes.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After: secs` when given) without forwarding.
    Status(u16, Option<u32>),
    /// Close the connection without forwarding.
    Drop,
    /// Forward, let Nova act, then close without passing the answer on.
    DropAfterForward,
    /// Wait this long, then forward.
    Delay(Duration),
    /// Answer 200 with this JSON body without forwarding (e.g. an older cloud's version document).
    Reply(String),
    /// Answer with this status and XML body without forwarding (an AWS error), and
    /// `Retry-After: secs` when given.
    Xml(u16, String, Option<u32>),
}

struct Rule {
    method: String,
    path_contains: String,
    exact: bool,
    /// Also required in the request body (`Action=SetDesiredCapacity&`).
    body_contains: Option<String>,
    fault: Fault,
    times: usize,
}

#[derive(Default)]
struct Plan {
    rules: Vec<Rule>,
    expired_tokens: HashSet<String>,
    seen_tokens: HashSet<String>,
    /// (method, path, what happened)
    log: Vec<(String, String, String)>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    plan: Arc<Mutex<Plan>>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let p = plan.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let p = p.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, upstream, &p);
                });
            }
        });
        FaultProxy { addr, plan }
    }

    /// The next `times` requests whose method is `method` and whose path contains `path` get `fault`.
    pub fn inject(&self, method: &str, path: &str, fault: Fault, times: usize) {
        self.plan.lock().unwrap().rules.push(Rule {
            method: method.into(),
            path_contains: path.into(),
            exact: false,
            body_contains: None,
            fault,
            times,
        });
    }

    /// The next `times` calls of AWS query-protocol action `action` get `fault`.
    pub fn inject_action(&self, action: &str, fault: Fault, times: usize) {
        self.plan.lock().unwrap().rules.push(Rule {
            method: "POST".into(),
            path_contains: "/".into(),
            exact: false,
            body_contains: Some(format!("Action={action}&")),
            fault,
            times,
        });
    }

    /// As [`FaultProxy::inject`], for requests whose path is exactly `path`.
    pub fn inject_exact(&self, method: &str, path: &str, fault: Fault, times: usize) {
        self.plan.lock().unwrap().rules.push(Rule {
            method: method.into(),
            path_contains: path.into(),
            exact: true,
            body_contains: None,
            fault,
            times,
        });
    }

    /// Whether every injected fault has been used.
    pub fn spent(&self) -> bool {
        self.plan.lock().unwrap().rules.iter().all(|r| r.times == 0)
    }

    /// From now on, every token seen so far is answered with 401, as Nova does for an expired one.
    pub fn expire_tokens(&self) {
        let mut plan = self.plan.lock().unwrap();
        let seen: Vec<String> = plan.seen_tokens.iter().cloned().collect();
        plan.expired_tokens.extend(seen);
    }

    /// Every request so far: (method, path, outcome); for a query-protocol call the path is
    /// followed by its action (`/ DescribeAutoScalingGroups`).
    pub fn log(&self) -> Vec<(String, String, String)> {
        self.plan.lock().unwrap().log.clone()
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, plan: &Mutex<Plan>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let (head, body) = read_message(&mut reader)?;
    let mut client = client;
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, path) =
        (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let token = header(&head, "x-auth-token");
    let fault = {
        let mut p = plan.lock().unwrap();
        if let Some(t) = &token {
            p.seen_tokens.insert(t.clone());
        }
        if token.as_ref().is_some_and(|t| p.expired_tokens.contains(t)) {
            p.log.push((method.clone(), path.clone(), "401 expired token".into()));
            drop(p);
            let body = r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;
            return respond(&mut client, 401, None, body);
        }
        let text = String::from_utf8_lossy(&body);
        let rule = p.rules.iter_mut().find(|r| {
            r.times > 0
                && r.method == method
                && if r.exact { path == r.path_contains } else { path.contains(&r.path_contains) }
                && r.body_contains.as_ref().is_none_or(|b| text.contains(b.as_str()))
        });
        let fault = rule.map(|r| {
            r.times -= 1;
            r.fault.clone()
        });
        let outcome =
            fault.as_ref().map_or("forwarded".to_string(), |f| format!("{f:?}").chars().take(60).collect());
        let action = text.strip_prefix("Action=").and_then(|a| a.split('&').next());
        let logged = action.map_or(path.clone(), |a| format!("{path} {a}"));
        p.log.push((method.clone(), logged, outcome));
        fault
    };
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            let body =
                format!(r#"{{"computeFault": {{"code": {code}, "message": "injected by the test proxy"}}}}"#);
            return respond(&mut client, code, retry_after, &body);
        }
        Some(Fault::Reply(body)) => return respond(&mut client, 200, None, &body),
        Some(Fault::Xml(code, body, retry_after)) => {
            return respond_typed(&mut client, code, retry_after, "text/xml", &body)
        }
        Some(Fault::Drop) => return Ok(()),
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        _ => {}
    }
    let mut up = TcpStream::connect(upstream)?;
    // One request per upstream connection: the answer's end is then unambiguous.
    let head: String = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
        + "\r\nConnection: close\r\n\r\n";
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    if let Some(Fault::DropAfterForward) = fault {
        return Ok(());
    }
    client.write_all(&answer)
}

/// Reads a request head and its `Content-Length` body.
fn read_message(reader: &mut BufReader<TcpStream>) -> std::io::Result<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Passed on as it came: chunk lines and data, up to and including the last chunk.
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            body.extend_from_slice(size_line.as_bytes());
            let size =
                usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                return Ok((head, body));
            }
        }
    }
    let length: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((head, body))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn respond(client: &mut TcpStream, code: u16, retry_after: Option<u32>, body: &str) -> std::io::Result<()> {
    respond_typed(client, code, retry_after, "application/json", body)
}

fn respond_typed(
    client: &mut TcpStream,
    code: u16,
    retry_after: Option<u32>,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let extra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
    write!(
        client,
        "HTTP/1.1 {code} Injected\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
