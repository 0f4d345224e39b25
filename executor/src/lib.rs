//! # strata-executor
//!
//! The executor runtime of Strata's batch engine. An executor is launched by
//! an agent as a task of a batch driver; it runs plan fragments and keeps
//! their shuffle output (Arrow IPC files on its local disk), which other
//! executors and the driver fetch over Arrow Flight ([`shuffle_service`]).

#![warn(missing_docs)]

pub mod shuffle_service;
