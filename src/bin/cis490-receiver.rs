// One thread per connection: a panic (a bug) must end that connection's
// thread only, and the others go on. With panic = "abort" it would end them
// all. `make static` and `make dist` build the shipper with the
// release-shipper profile (which aborts) and this binary with the release
// profile (which unwinds); see docs/build.md.
#[cfg(not(panic = "unwind"))]
compile_error!(
    "cis490-receiver must be built with panic = \"unwind\" (the release profile, not \
     release-shipper): a panic in one connection thread would otherwise end every connection"
);

fn main() -> std::process::ExitCode {
    cis490::receiver::cli::main()
}
