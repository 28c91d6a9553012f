//! Listening sockets the supervisor holds for a program and hands to every replica, with
//! systemd's socket-activation protocol (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`; the
//! sockets are descriptors 3, 4, …). All replicas accept on one port and the kernel spreads the
//! connections; the socket stays open across restarts and scale changes, so a restart or a
//! scale-in refuses no connection attempt (they wait in the backlog).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// First descriptor number of the passed sockets (as systemd's `SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;
/// Most sockets one program may be handed.
pub const MAX: usize = crate::config::values::MAX_SOCKETS;

/// A program's bound sockets, or why they could not be bound (then its instances do not
/// start and say so).
#[derive(Debug)]
pub struct Sockets {
    bound: Result<Vec<OwnedFd>, String>,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets { bound: Ok(Vec::new()) }
    }
}

impl Sockets {
    /// Binds and listens on each address (`SO_REUSEADDR`, backlog 1024).
    pub fn bind(addrs: &[SocketAddr]) -> Sockets {
        let bound = addrs
            .iter()
            .map(|a| {
                let l = std::net::TcpListener::bind(a).map_err(|e| format!("cannot listen on {a}: {e}"))?;
                let fd = OwnedFd::from(l);
                // SAFETY: listen on a socket we own; a larger backlog than std's 128.
                unsafe { libc::listen(fd.as_raw_fd(), 1024) };
                Ok(fd)
            })
            .collect();
        Sockets { bound }
    }

    /// The descriptors to pass, or the binding error.
    pub fn fds(&self) -> Result<Vec<RawFd>, String> {
        self.bound.as_ref().map(|v| v.iter().map(AsRawFd::as_raw_fd).collect()).map_err(Clone::clone)
    }

    /// `LISTEN_FDS` and `LISTEN_FDNAMES` (each socket named after the program) for `n` sockets.
    pub fn environment(name: &str, n: usize) -> Vec<(String, String)> {
        if n == 0 {
            return Vec::new();
        }
        vec![("LISTEN_FDS".into(), n.to_string()), ("LISTEN_FDNAMES".into(), vec![name; n].join(":"))]
    }
}

/// Putting the sockets at descriptors 3, 4, … in a child between fork and exec, in two steps
/// so that placing one never closes another (or a descriptor the child still needs): [`lift`]
/// copies each above that range (close-on-exec), [`place`] copies them down. Async-signal-safe
/// (no allocation); false, with errno set, on failure.
///
/// # Safety
/// Only between fork and exec, in the child.
pub unsafe fn lift(fds: &[RawFd], moved: &mut [RawFd; MAX]) -> bool {
    let above = FIRST_FD + fds.len().min(MAX) as RawFd;
    for (i, fd) in fds.iter().take(MAX).enumerate() {
        moved[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
        if moved[i] < 0 {
            return false;
        }
    }
    true
}

/// See [`lift`].
///
/// # Safety
/// Only between fork and exec, in the child, after [`lift`].
pub unsafe fn place(moved: &[RawFd]) -> bool {
    moved.iter().take(MAX).enumerate().all(|(i, fd)| libc::dup2(*fd, FIRST_FD + i as RawFd) >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_bound_once_and_a_busy_address_is_a_clear_error() {
        let s = Sockets::bind(&["127.0.0.1:0".parse().unwrap()]);
        let fds = s.fds().unwrap();
        assert_eq!(fds.len(), 1);
        // SAFETY: reading the address of our own socket.
        let port = unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            libc::getsockname(fds[0], (&mut addr as *mut libc::sockaddr_in).cast(), &mut len);
            u16::from_be(addr.sin_port)
        };
        let again = Sockets::bind(&[format!("127.0.0.1:{port}").parse().unwrap()]);
        let e = again.fds().unwrap_err();
        assert!(e.starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")), "{e}");
        assert_eq!(Sockets::environment("web", 2)[1], ("LISTEN_FDNAMES".to_string(), "web:web".to_string()));
    }
}
