fn main() -> std::process::ExitCode {
    cis490::shipper::cli::main()
}
