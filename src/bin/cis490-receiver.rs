fn main() -> std::process::ExitCode {
    cis490::receiver::cli::main()
}
