//! The central node's side: a TLS (and optionally loopback plain-HTTP)
//! server on std threads that stores uploads atomically and idempotently.
//!
//! `server` owns the listeners, the thread-per-connection limit and the
//! shutdown; `slots` decides who gets a slot (fairness between clients); `conn` speaks HTTP on one connection; `deadline` bounds every
//! socket read and write of a connection; `store` owns the files. `admit`
//! decides which answer a request head earns, `answer` what an answer says
//! and its bytes, `body` reads a body of exactly `Content-Length` bytes.

pub mod admit;
pub mod answer;
pub mod body;
pub mod cli;
pub mod conn;
pub mod deadline;
pub mod server;
pub mod slots;
pub mod store;
