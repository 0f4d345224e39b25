//! # strata-jobs
//!
//! Packaged jobs, built into the `strata` binary (`strata submit NAME`).
//! The crate graph is `strata-proto ← strata-executor ← strata-framework ←
//! strata-jobs ← strata`.
//!
//! ## Writing a job
//!
//! A Rust job is a binary built against `strata-framework` that is both
//! its driver and its own executors: the driver plans the job and sends
//! plan fragments to executors started from the same binary. Functions of
//! the job's own (mappers, UDFs) travel in the plans **by name**, so the
//! one rule is:
//!
//! > Register every function the job uses at process start, in `main`,
//! > before starting the driver or the executor.
//!
//! For a packaged job, `strata`'s `main` calls [`register_all`]. A job
//! here is a module with
//!
//! 1. a `register()` that registers its mappers
//!    ([`strata_framework::mapreduce::register_mapper`]) or UDFs
//!    ([`strata_framework::mapreduce`] and `strata_executor::functions`);
//! 2. an `async fn run(session: &Session, …)` that builds its
//!    computation on the session — with the MapReduce API
//!    ([`strata_framework::mapreduce::MapReduce`]), or with DataFusion
//!    DataFrames or SQL on [`Session::context`] run through
//!    [`Session::collect`] — and returns its result;
//! 3. a [`Job`] entry (name, description, usage, `register`, and a `run`
//!    adapter that parses its arguments and returns record batches), listed
//!    in [`JOBS`].
//!
//! [`wordcount`] is the example. The same [`Job`] entry makes a job binary
//! of its own with [`strata_framework::job::main`]: `jobs/examples` holds
//! word count built that way (`strata-wordcount`), which `strata submit`
//! runs from a path or an `http://` URL.
//!
//! [`web`] is the packaged example of a service (`strata web`): a small
//! HTTP server with a health endpoint and a load metric, which the
//! services scheduler runs as a Marathon-style app.

#![warn(missing_docs)]

pub mod web;

pub use strata_framework::job::{Job, JobFnError as JobError, JobFuture, RunFn};

pub mod wordcount;

/// The packaged jobs.
pub const JOBS: &[Job] = &[wordcount::JOB];

/// The packaged jobs ([`JOBS`]).
pub fn registry() -> &'static [Job] {
    JOBS
}

/// The packaged job named `name`.
pub fn find(name: &str) -> Option<&'static Job> {
    JOBS.iter().find(|j| j.name == name)
}

/// Registers the functions of every packaged job. Call it first thing in
/// `main`, before starting a driver or an executor.
pub fn register_all() {
    for job in JOBS {
        (job.register)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_knows_wordcount() {
        let job = find("wordcount").unwrap();
        assert_eq!(job.usage, "INPUT");
        assert!(find("nope").is_none());
        let mut names: Vec<_> = registry().iter().map(|j| j.name).collect();
        names.dedup();
        assert_eq!(names.len(), JOBS.len(), "unique names");
        register_all();
        assert!(strata_framework::mapreduce::mappers().contains(&wordcount::MAPPER.to_string()));
    }
}
