//! # strata-framework: Strata's batch engine
//!
//! A job is a DataFusion physical plan. The [`planner`] cuts it into
//! stages at its exchange boundaries (hash and round-robin repartitions,
//! partition merges); each stage runs one task per partition. Map stages
//! end in a [`shuffle::ShuffleWriterExec`] that writes Arrow IPC files per
//! output partition; the next stage starts with a
//! [`shuffle::ShuffleReaderExec`]. Plan fragments travel serialised with
//! datafusion-proto plus Strata's own operators ([`codec`]).
//!
//! [`runner`] runs a job's stages in one process (the reference the
//! distributed driver is held to). The driver that accepts offers,
//! launches executors and schedules these tasks on them builds on the
//! scheduler SDK (`strata-sdk`).

#![warn(missing_docs)]

pub use strata_executor::{codec, shuffle};

pub mod compare;
pub mod copy;
pub mod driver;
pub mod job;
pub mod key_filter;
pub mod mapreduce;
pub mod output;
pub mod planner;
pub mod process;
pub mod runner;
pub mod session;
pub mod tpch;
pub mod write;

#[cfg(test)]
mod tests;
