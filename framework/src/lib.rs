//! # strata-framework
//!
//! Strata's batch framework: a driver built on the scheduler SDK
//! (`strata-sdk`) that accepts offers, launches executors and runs jobs as
//! stages of tasks. The batch engine is the next piece of work after the
//! cluster kernel; this crate holds its place in the crate graph
//! (`strata-sdk ← strata-framework ← strata-jobs`).

#![warn(missing_docs)]
