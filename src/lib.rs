//! # strata: the command-line interface and the glue of a whole cluster
//!
//! The `strata` binary links every crate of the workspace:
//!
//! * `strata manager` and `strata agent` run the cluster kernel's processes
//!   (`strata-manager`);
//! * `strata local` and `strata demo` run a whole cluster on one machine,
//!   in one process ([`local`]);
//! * `strata run` and `strata status` are clients: a one-shot framework
//!   written with the scheduler SDK (`strata-sdk`), and a reader of the
//!   manager's HTTP API.
//!
//! Client commands find the manager by `--manager`, else `STRATA_MANAGER`,
//! else the discovery file `strata local` writes
//! (`$STRATA_HOME/local.json`), else `127.0.0.1:5050` ([`discovery`]).

#![warn(missing_docs)]

pub mod cli;
pub mod discovery;

pub mod local;
