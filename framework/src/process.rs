//! The edge of a Strata program: what `strata`'s `main` and a job binary's
//! ([`crate::job::main`]) both do before any work, in one place so the two
//! never drift: logs on stderr, and a multi-threaded runtime.

use std::future::Future;
use std::process::ExitCode;

/// How log lines are written: `text` for people, `json` (one object per
/// line, with the current span's fields and the whole span list) for
/// machines that pull one job's lines out of every process's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON lines.
    Json,
}

impl LogFormat {
    /// The environment variable that carries the format to child
    /// processes (executors, a submitted job's driver).
    pub const ENV: &'static str = "STRATA_LOG_FORMAT";

    /// The format [`Self::ENV`] names, text when unset or unknown.
    pub fn from_env() -> LogFormat {
        match std::env::var(Self::ENV).as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// The format this process logs in (set by [`init_tracing`]).
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The format this process logs in, for the processes it starts.
pub fn log_format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Sets up logging on stderr (no targets), filtered by `filter` (tracing's
/// `EnvFilter` syntax, e.g. `info` or `strata_manager=debug`), or by
/// `fallback` when `filter` does not parse, in `format`. A second call
/// does nothing.
pub fn init_tracing(filter: &str, fallback: &str, format: LogFormat) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let done = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    if done.is_ok() {
        FORMAT.set(format).ok();
    }
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
