//! # strata-executor
//!
//! The executor runtime of Strata's batch engine: it runs plan fragments,
//! writes shuffle output as Arrow IPC and serves it over Arrow Flight. It is
//! launched by an agent as a task of a batch driver. The batch engine is the
//! next piece of work after the cluster kernel; this crate holds its place in
//! the crate graph (`strata-proto ← strata-executor ← strata-framework`).

#![warn(missing_docs)]
