//! An instance's stdout and stderr, line by line: into a bounded in-memory ring (what `agent
//! logs` shows and follows), into the agent's log (tagged with the process name and replica)
//! and, if configured, into a per-instance file rotated by size.

use crate::config::LogFiles;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

/// Longer lines are cut (a program must not make the agent buffer without bound).
const MAX_LINE: usize = 16 * 1024;
/// What the ring of one instance keeps: the last lines, up to both bounds.
pub const RING_LINES: usize = 1000;
pub const RING_BYTES: usize = 256 * 1024;

/// One line of output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    pub at_ms: i64,
    pub stream: &'static str,
    pub text: String,
}

/// The recent output of one instance (kept across its restarts), and its live followers.
pub struct Output {
    ring: Mutex<(VecDeque<Arc<Line>>, usize)>,
    live: broadcast::Sender<Arc<Line>>,
}

impl Output {
    pub fn new() -> Arc<Output> {
        Arc::new(Output { ring: Mutex::new((VecDeque::new(), 0)), live: broadcast::channel(1024).0 })
    }

    fn push(&self, stream: &'static str, text: String) {
        let line = Arc::new(Line { at_ms: crate::timefmt::now_ms(), stream, text });
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.1 += line.text.len();
        ring.0.push_back(line.clone());
        while ring.0.len() > RING_LINES || ring.1 > RING_BYTES {
            let Some(old) = ring.0.pop_front() else { break };
            ring.1 -= old.text.len();
        }
        // Sent under the lock, so a follower's tail and its live lines neither overlap nor gap.
        let _ = self.live.send(line);
    }

    /// The last `n` lines, and a receiver of every line after them.
    pub fn follow(&self, n: usize) -> (Vec<Arc<Line>>, broadcast::Receiver<Arc<Line>>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let skip = ring.0.len().saturating_sub(n);
        (ring.0.iter().skip(skip).cloned().collect(), self.live.subscribe())
    }
}

/// A size-rotated log file shared by an instance's two streams.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<std::fs::File>,
    written: u64,
}

impl RotatingFile {
    pub fn open(cfg: &LogFiles, name: &str, replica: u32) -> std::io::Result<RotatingFile> {
        std::fs::create_dir_all(&cfg.dir)?;
        let path = cfg.dir.join(format!("{name}-{replica}.log"));
        let file = open_log(&path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile { path, max_bytes: cfg.max_bytes, keep: cfg.keep, file: Some(file), written })
    }

    pub fn write_line(&mut self, line: &[u8]) {
        if self.written + line.len() as u64 + 1 > self.max_bytes && self.written > 0 {
            self.rotate();
        }
        if let Some(f) = &mut self.file {
            if f.write_all(line).and_then(|_| f.write_all(b"\n")).is_ok() {
                self.written += line.len() as u64 + 1;
            }
        }
    }

    /// `x.log` → `x.log.1` → … → `x.log.KEEP` (dropped).
    fn rotate(&mut self) {
        self.file = None;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        if self.keep > 0 {
            let _ = std::fs::rename(&self.path, numbered(1));
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        self.file = open_log(&self.path).ok();
        self.written = 0;
    }
}

/// Where an instance's lines go.
#[derive(Clone)]
pub struct Sinks {
    pub process: Arc<str>,
    pub replica: u32,
    /// Copy each line into the agent's log at this level (`log_output`), or not.
    pub log: Option<tracing::Level>,
    pub ring: Arc<Output>,
    pub file: Option<Arc<Mutex<RotatingFile>>>,
}

/// A program's line in the agent's log, tagged with where it came from.
fn log_line(level: tracing::Level, process: &str, replica: u32, stream: &str, text: &str) {
    use tracing::Level;
    match level {
        Level::ERROR => {
            tracing::error!(target: "process", process = %process, replica, stream = %stream, "{text}")
        }
        Level::WARN => {
            tracing::warn!(target: "process", process = %process, replica, stream = %stream, "{text}")
        }
        Level::INFO => {
            tracing::info!(target: "process", process = %process, replica, stream = %stream, "{text}")
        }
        Level::DEBUG => {
            tracing::debug!(target: "process", process = %process, replica, stream = %stream, "{text}")
        }
        Level::TRACE => {
            tracing::trace!(target: "process", process = %process, replica, stream = %stream, "{text}")
        }
    }
}

/// Reads `stream` to its end, one line at a time.
pub async fn forward(stream: impl AsyncRead + Unpin, which: &'static str, sinks: Sinks) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Read up to a newline, but never hold more than MAX_LINE of one line.
        let done = loop {
            let buf = match reader.fill_buf().await {
                Ok(b) => b,
                Err(_) => break true,
            };
            if buf.is_empty() {
                break true;
            }
            let (take, newline) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&buf[..take.min(room)]);
            reader.consume(take);
            if newline {
                break false;
            }
        };
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if !line.is_empty() || !done {
            let text = String::from_utf8_lossy(&line);
            if let Some(level) = sinks.log {
                log_line(level, &sinks.process, sinks.replica, which, &text);
            }
            if let Some(f) = &sinks.file {
                f.lock().unwrap_or_else(|p| p.into_inner()).write_line(&line);
            }
            sinks.ring.push(which, text.into_owned());
        }
        if done {
            break;
        }
    }
}

/// A log file opened for appending, never through a symbolic link (a link planted where the
/// agent writes as root would make it append to any file).
fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_log_file_is_never_opened_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let log = dir.path().join("web-0.log");
        std::os::unix::fs::symlink(&victim, &log).unwrap();
        let e = super::open_log(&log).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }

    use super::*;

    #[test]
    fn files_rotate_at_the_size_limit_and_keep_n() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogFiles { dir: dir.path().to_path_buf(), max_bytes: 100, keep: 2 };
        let mut f = RotatingFile::open(&cfg, "web", 0).unwrap();
        for i in 0..40 {
            f.write_line(format!("line {i:02} .........").as_bytes()); // 20 bytes with newline
        }
        let current = std::fs::read_to_string(dir.path().join("web-0.log")).unwrap();
        assert!(current.ends_with("line 39 .........\n"));
        assert!(current.len() <= 100);
        assert!(dir.path().join("web-0.log.1").exists() && dir.path().join("web-0.log.2").exists());
        assert!(!dir.path().join("web-0.log.3").exists());
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_stream_is_read_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogFiles { dir: dir.path().to_path_buf(), max_bytes: 1 << 20, keep: 1 };
        let file = Arc::new(Mutex::new(RotatingFile::open(&cfg, "p", 1).unwrap()));
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\nsecond\nno newline at the end");
        let ring = Output::new();
        let sinks =
            Sinks { process: "p".into(), replica: 1, log: None, ring: ring.clone(), file: Some(file) };
        forward(&input[..], "stdout", sinks).await;
        let text = std::fs::read_to_string(dir.path().join("p-1.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(&lines[1..], ["second", "no newline at the end"]);
        let (tail, _) = ring.follow(2);
        let tail: Vec<&str> = tail.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(tail, ["second", "no newline at the end"]);
    }

    #[test]
    fn the_ring_keeps_the_last_lines_within_both_bounds_and_followers_get_the_rest() {
        let ring = Output::new();
        for i in 0..RING_LINES + 10 {
            ring.push("stdout", format!("line {i}"));
        }
        let (tail, mut live) = ring.follow(usize::MAX);
        assert_eq!(tail.len(), RING_LINES);
        assert_eq!(tail[0].text, "line 10");
        let big = "x".repeat(RING_BYTES / 4);
        for _ in 0..8 {
            ring.push("stderr", big.clone());
        }
        let (tail, _) = ring.follow(usize::MAX);
        assert!(tail.iter().map(|l| l.text.len()).sum::<usize>() <= RING_BYTES);
        assert_eq!(tail.len(), 4);
        assert_eq!(live.try_recv().unwrap().stream, "stderr");
    }
}
