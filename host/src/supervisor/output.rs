//! An instance's stdout and stderr, line by line, into the agent's log (tagged with the process
//! name and replica) and, if configured, into a per-instance file rotated by size.

use crate::config::LogFiles;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longer lines are cut (a program must not make the agent buffer without bound).
const MAX_LINE: usize = 16 * 1024;

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
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
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
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).ok();
        self.written = 0;
    }
}

/// Reads `stream` to its end, one line at a time.
pub async fn forward(
    stream: impl AsyncRead + Unpin,
    process: Arc<str>,
    replica: u32,
    which: &'static str,
    file: Option<Arc<Mutex<RotatingFile>>>,
) {
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
            tracing::info!(target: "process", process = %process, replica, stream = which, "{text}");
            if let Some(f) = &file {
                f.lock().unwrap_or_else(|p| p.into_inner()).write_line(&line);
            }
        }
        if done {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
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
        forward(&input[..], "p".into(), 1, "stdout", Some(file)).await;
        let text = std::fs::read_to_string(dir.path().join("p-1.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(&lines[1..], ["second", "no newline at the end"]);
    }
}
