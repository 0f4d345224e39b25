//! # strata-executor
//!
//! The executor runtime of Strata's batch engine. An executor is launched by
//! an agent as a task of a batch driver (`strata executor`, or a Rust job's
//! own binary in executor mode). It dials its driver's `ExecutorLink`
//! service, registers, and runs the tasks it is sent ([`runtime`]):
//!
//! * a task is one partition of a stage's plan fragment, decoded with
//!   datafusion-proto plus Strata's operators ([`codec`]);
//! * a stage ends in a [`shuffle::ShuffleWriterExec`], which writes Arrow
//!   IPC files on the executor's local disk, and starts with
//!   [`shuffle::ShuffleReaderExec`]s, which read their inputs from local disk
//!   or from other executors over Arrow Flight ([`shuffle_service`]);
//! * every task runs within one memory pool sized to the executor's memory
//!   ([`engine`]), spilling where DataFusion can;
//! * tables may live on local disk or in S3 ([`storage`]);
//! * stages and partitions are named by [`ids::StageId`] and
//!   [`ids::PartitionId`], a `u32` on the wire.
//!
//! The driver side (stage planning, scheduling, retries) is in
//! `strata-framework`; this crate depends only on the protocol and
//! DataFusion.

#![warn(missing_docs)]

pub mod args;
pub mod codec;
pub mod engine;
pub mod functions;
/// Typed stage and partition indices ([`ids::StageId`], [`ids::PartitionId`]),
/// shared by the executor and the driver; `u32` on the wire.
pub mod ids;
pub mod memory;
pub mod runtime;
pub mod shuffle;
pub mod shuffle_service;
pub mod storage;
pub mod write;
