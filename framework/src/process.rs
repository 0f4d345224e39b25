//! The edge of a Strata program: what `strata`'s `main` and a job binary's
//! ([`crate::job::main`]) both do before any work, in one place so the two
//! never drift: logs on stderr, and a multi-threaded runtime.

use std::future::Future;
use std::process::ExitCode;

/// Sets up logging on stderr (no targets), filtered by `filter` (tracing's
/// `EnvFilter` syntax, e.g. `info` or `strata_manager=debug`), or by
/// `fallback` when `filter` does not parse. A second call does nothing.
pub fn init_tracing(filter: &str, fallback: &str) {
    // delta-rs logs every snapshot it builds at `info`: its warnings only,
    // unless the filter names it.
    let filter = if filter.contains("delta") || filter.contains("kernel") {
        filter.to_owned()
    } else {
        format!(
            "{filter},deltalake_core=warn,delta_kernel=warn,buoyant_kernel=warn,\
             buoyant_kernel_engine=warn,delta_kernel_default_engine=warn"
        )
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(fallback));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .ok();
}

/// Runs `main` to its end on a new multi-threaded runtime; exits 1, saying
/// why, if the runtime cannot start.
pub fn block_on(main: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(main),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}
