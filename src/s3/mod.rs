//! The receiver's S3 store: episodes published to an S3-compatible object
//! store (Ceph RGW, AWS S3, MinIO) instead of `store_dir`, so that several
//! receivers can share one store (docs/deploy.md, "Scaling out").
//!
//! The receiver still spools every upload to `store_dir` and verifies its
//! whole sha256 there (`receiver::store`, unchanged); only the last step,
//! publishing, goes to the bucket. Layers, each importing only those below:
//!
//! - `store`: the object layout, lookups, the publish order and its
//!   decisions (why two objects: its module doc).
//! - `api`: the S3 requests, signed with `crate::sigv4`; errors and counts.
//! - `conn`: one HTTP/1.1 connection, plain or TLS, bodies from a file.
//!
//! Hand-written and small, like the rest: SigV4 over `sha2`, the
//! project's HTTP framing (`crate::http`) and TLS (`crate::tls`),
//! path-style addressing, no SDK.

pub mod api;
pub mod conn;
pub mod store;
