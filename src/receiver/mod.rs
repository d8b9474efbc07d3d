//! The central node's side: a TLS (and optionally loopback plain-HTTP)
//! server on std threads that stores uploads atomically and idempotently.
//!
//! `server` owns the listeners, the thread-per-connection limit and the
//! shutdown; `slots` decides who gets a slot (fairness between clients); `conn` speaks HTTP on one connection; `deadline` bounds every
//! socket read and write of a connection; `store` owns the files.

pub mod cli;
pub mod conn;
pub mod deadline;
pub mod server;
pub mod slots;
pub mod store;
