//! # strata-jobs
//!
//! Packaged jobs built into the `strata` binary (the TPC-H suite, an ETL
//! pipeline, word count). They arrive with the batch engine; this crate holds
//! their place in the crate graph (`strata-framework ← strata-jobs ← strata`).

#![warn(missing_docs)]
