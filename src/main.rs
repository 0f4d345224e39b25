//! The `strata` binary: a thin shell over [`strata::cli`].

/// Every process of the binary (manager, agent, driver, executor) uses
/// mimalloc: batch work allocates and frees large Arrow buffers
/// constantly, which glibc's allocator serves with fresh, zeroed pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
