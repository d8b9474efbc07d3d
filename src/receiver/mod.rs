//! The central node's side: a TLS (and optionally loopback plain-HTTP)
//! server on std threads that stores uploads atomically and idempotently.
//!
//! From the outside in, each module importing only those below it:
//!
//! - `cli`: arguments, configuration, exit codes; builds the `Server`.
//! - `server`: listeners, accept loops, a thread per connection, 503s,
//!   shutdown.
//! - `slots`: who gets a connection slot (fairness between clients).
//! - `conn`: one connection's requests, in order; sequences the I/O.
//! - `admit`: which answer a request head earns (pure).
//! - `answer`: what an answer says, its bytes, its log line, keep-alive (pure).
//! - `body`: the body as an exactly-`Content-Length` reader; `100 Continue`.
//! - `stream`: TLS or plain over the socket; handshake, lingering close.
//! - `deadline`: bounds every socket read and write of a connection.
//! - `store`: the files.
//! - `report`: answers counted, the metrics file, the certificate's expiry.

pub mod admit;
pub mod answer;
pub mod body;
pub mod cli;
pub mod conn;
pub mod deadline;
pub mod report;
pub mod server;
pub mod slots;
pub mod store;
pub mod stream;
