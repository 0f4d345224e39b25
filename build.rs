//! Links the `strata` binary as a position-dependent executable on Linux.
//!
//! The binary holds the whole batch engine (about 200 MB in release): as a
//! position-independent executable, every process started from it first
//! applies about 270,000 relocations, writing 4 to 5 MB of pages, which
//! costs 4 ms of CPU before `main` — and the agent starts one supervisor
//! process per task, and executors, from this binary. Linked at a fixed
//! address it applies none and starts in a fraction of that. Libraries,
//! stack and heap are still placed at random; the executable's own code
//! and data are not (as with Go's default builds). `STRATA_PIE=1` at build
//! time keeps a position-independent executable.

fn main() {
    println!("cargo:rerun-if-env-changed=STRATA_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && std::env::var_os("STRATA_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
