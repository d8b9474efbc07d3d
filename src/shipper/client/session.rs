//! A pass's conversation with the receiver: one kept-alive connection,
//! opened on first use and reused for every upload, and the one retry that
//! keep-alive calls for.
//!
//! A receiver may close an idle kept-alive connection just as we reuse it
//! (its `idle_timeout_s`, a restart): the request then fails with EOF or a
//! reset before any answer. Repeating a PUT is safe (bytes the receiver
//! already holds get 200), so that one case is retried once on a fresh
//! connection; any other failure is the caller's to judge.

use std::fs::File;
use std::io;
use std::path::Path;

use super::{Body, ChunkedBody, ClientError, Connection, Endpoint, Response};
use crate::{fault, info};

pub struct Session<'a> {
    ep: &'a Endpoint,
    conn: Option<Connection>,
}

impl<'a> Session<'a> {
    /// No connection yet: the first request opens it.
    pub fn new(ep: &'a Endpoint) -> Session<'a> {
        Session { ep, conn: None }
    }

    /// The open connection, or a new one (resolve, connect, handshake).
    fn connection(&mut self) -> Result<&mut Connection, ClientError> {
        if self.conn.as_ref().is_some_and(|c| !c.is_reusable()) {
            if let Some(c) = self.conn.take() {
                c.close();
            }
        }
        if self.conn.is_none() {
            let c = self.ep.open()?;
            fault::point("up.after_connect");
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("set just above"))
    }

    /// `HEAD target`: where an upload stands (no body either way).
    pub fn head(
        &mut self,
        label: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        self.send(label, "HEAD", target, headers, None, &mut |_| {})
    }

    /// Sends the bytes `from..len` of the file at `path` as the body of a
    /// `method` request to `target` (`PUT` from 0, `PATCH` from an
    /// offset). `label` names the upload in the one log line a retry
    /// writes; `progress` gets the body bytes sent so far (from zero again
    /// on a retry).
    #[allow(clippy::too_many_arguments)] // one request, spelled out
    pub fn send_file(
        &mut self,
        label: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        path: &Path,
        (from, len): (u64, u64),
        progress: &mut dyn FnMut(u64),
    ) -> Result<Response, ClientError> {
        self.send(
            label,
            method,
            target,
            headers,
            Some((path, from, len)),
            progress,
        )
    }

    /// Starts a request whose body follows as it is made (chunked): the
    /// head, then up to 1 s for `100 Continue`. `Some(answer)`: the
    /// receiver answered instead, and no body goes; `None`: write the body
    /// into [`Session::stream_body`]. A kept-alive connection the receiver
    /// had closed is retried once on a new one, as for [`Session::send_file`].
    pub fn start_stream(
        &mut self,
        label: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Option<Response>, ClientError> {
        self.on_fresh_if_stale(label, |conn, authority| {
            conn.start_chunked(method, target, authority, headers)
        })
    }

    /// The body of the request [`Session::start_stream`] began.
    ///
    /// # Panics
    /// Without a `start_stream` that returned `Ok(None)` just before.
    pub fn stream_body(&mut self) -> ChunkedBody<'_> {
        self.conn
            .as_mut()
            .expect("start_stream opened the connection")
            .chunked_body()
    }

    fn send(
        &mut self,
        label: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        file: Option<(&Path, u64, u64)>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Response, ClientError> {
        self.on_fresh_if_stale(label, |conn, authority| {
            let mut opened = match file {
                None => None,
                Some((path, from, len)) => Some((open_at(path, from)?, len - from)),
            };
            let body = opened.as_mut().map(|(f, n)| Body { reader: f, len: *n });
            conn.request(method, target, authority, headers, body, progress)
        })
    }

    /// Runs `attempt` on the session's connection; when a kept-alive
    /// connection turns out to have been closed by the receiver (its
    /// keep-alive timeout raced our request), once more on a new one. Any
    /// error drops the connection.
    fn on_fresh_if_stale<T>(
        &mut self,
        label: &str,
        mut attempt: impl FnMut(&mut Connection, &str) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut retried = false;
        loop {
            let reused = self
                .conn
                .as_ref()
                .is_some_and(|c| c.is_reusable() && c.requests() > 0);
            let authority = self.ep.url.authority();
            let conn = self.connection()?;
            match attempt(conn, &authority) {
                Ok(r) => return Ok(r),
                Err(e) if reused && !retried && e.is_stale_connection() => {
                    info!("{label}: kept-alive connection was closed by the receiver; retrying on a new one");
                    self.conn = None;
                    retried = true;
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
    }

    /// Ends the conversation politely (TLS close_notify), if there was one.
    pub fn close(mut self) {
        if let Some(c) = self.conn.take() {
            c.close();
        }
    }
}

/// The file at `path`, positioned at `from`: what a body is read from.
fn open_at(path: &Path, from: u64) -> Result<File, ClientError> {
    use std::io::{Seek, SeekFrom};
    let body_err = |e: io::Error| {
        ClientError::Body(io::Error::new(
            e.kind(),
            format!("opening {}: {e}", path.display()),
        ))
    };
    let mut f = File::open(path).map_err(body_err)?;
    f.seek(SeekFrom::Start(from)).map_err(body_err)?;
    Ok(f)
}
