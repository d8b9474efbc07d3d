//! Telling systemd how the receiver is doing: the sd_notify(3) protocol, so
//! its unit can be `Type=notify`. `READY=1` once every listener listens
//! (`systemctl start`/`restart` wait for it, and fail when the receiver
//! exits first, e.g. on a config error), `STOPPING=1` when it starts
//! draining, and a `STATUS=` line that `systemctl status` shows.
//!
//! The protocol is one datagram of `KEY=VALUE` lines sent to the `AF_UNIX`
//! socket named by `$NOTIFY_SOCKET`: a path, or `@name` for a name in the
//! abstract namespace (a leading NUL byte on the wire). No variable means
//! not started by systemd (a terminal, a test): nothing is sent. std's
//! `UnixDatagram` does it all: no libsystemd, no `unsafe`.
//!
//! Not here: `WATCHDOG=1`. The accept loops block in accept(2) without a
//! timeout, so a receiver with no uploads for an hour is idle, not wedged,
//! and only a loop woken on purpose could vouch for itself; a ping from
//! any other thread would prove nothing about the loops. What can stop a
//! loop (accept or thread start failing for good) already ends the process
//! for `Restart=on-failure` (see `server`).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use crate::log::{Level, Throttle};

/// The variable systemd sets for a `Type=notify` service.
pub const VAR: &str = "NOTIFY_SOCKET";

/// A failing notification is said at most once a minute: the status line
/// goes every few seconds, and one line says what is wrong.
static FAILURES: Throttle = Throttle::new(Duration::from_secs(60));

/// Where notifications go.
#[derive(Debug, PartialEq, Eq)]
pub enum Socket {
    Path(PathBuf),
    /// The name without its leading `@`.
    Abstract(Vec<u8>),
}

impl Socket {
    /// The socket `$NOTIFY_SOCKET` names: a path (starting with `/`) or an
    /// abstract name (`@name`). None for anything else (systemd 253's
    /// `vsock:` form reaches virtual machines, not services).
    pub fn parse(value: &OsStr) -> Option<Socket> {
        let bytes = value.as_bytes();
        match bytes.first()? {
            b'/' => Some(Socket::Path(PathBuf::from(value))),
            b'@' if bytes.len() > 1 => Some(Socket::Abstract(bytes[1..].to_vec())),
            _ => None,
        }
    }

    /// Sends `state` as one datagram, from a socket of its own.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let sent = match self {
            Socket::Path(path) => socket.send_to(state.as_bytes(), path)?,
            Socket::Abstract(name) => {
                socket.send_to_addr(state.as_bytes(), &SocketAddr::from_abstract_name(name)?)?
            }
        };
        // A datagram goes whole or not at all; a short count would be a bug.
        if sent == state.len() {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"))
        }
    }
}

/// Sends `state` (`KEY=VALUE` lines) to systemd when the process runs under
/// it; does nothing otherwise. A failure is logged, never returned: the
/// receiver serves either way, and the log line says why systemd did not
/// hear (a `Type=notify` start then times out).
pub fn notify(state: &str) {
    let Some(value) = std::env::var_os(VAR) else {
        return;
    };
    let result = match Socket::parse(&value) {
        Some(socket) => socket.send(state),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither a path nor an @abstract name",
        )),
    };
    if let Err(e) = result {
        FAILURES.log(Level::Warn, "notify", || {
            format!(
                "cannot notify systemd at {VAR}={}: {e}",
                value.to_string_lossy()
            )
        });
    }
}

/// `READY=1`, with a first status line.
pub fn ready(text: &str) {
    notify(&format!("READY=1\n{}", status(text)));
}

/// `STOPPING=1`: draining, with a status line saying what is left.
pub fn stopping(text: &str) {
    notify(&format!("STOPPING=1\n{}", status(text)));
}

/// `STATUS=` and the text, kept to one line (a newline would start another
/// assignment).
pub fn status(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_paths_and_abstract_names() {
        let p = |s: &str| Socket::parse(OsStr::new(s));
        assert_eq!(
            p("/run/systemd/notify"),
            Some(Socket::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            p("@sd-notify/1"),
            Some(Socket::Abstract(b"sd-notify/1".to_vec()))
        );
        for bad in ["", "@", "relative/path", "vsock:2:1234"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_stays_one_line() {
        assert_eq!(status("a\nb\r\nc"), "STATUS=a b  c");
    }

    fn receive(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = std::env::temp_dir().join(format!("cis490-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let socket = Socket::parse(path.as_os_str()).unwrap();
        socket.send("READY=1\nSTATUS=serving").unwrap();
        assert_eq!(receive(&listener), "READY=1\nSTATUS=serving");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_one_datagram_to_an_abstract_name() {
        let name = format!("cis490-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let socket = Socket::parse(OsStr::new(&format!("@{name}"))).unwrap();
        socket.send("STOPPING=1").unwrap();
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let socket = Socket::Path("/nonexistent/cis490/notify".into());
        assert!(socket.send("READY=1").is_err());
    }
}
