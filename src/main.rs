//! The `strata` binary: a thin shell over [`strata::cli`].

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
