//! The DataFusion settings every process of the batch engine shares: the
//! session configuration plans are made and run with, and an executor's
//! runtime (memory pool, spill directory, object stores).

use std::path::Path;
use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;

/// Estimated bytes of a join side at most for it to be broadcast.
pub const BROADCAST_BYTES: usize = 32 << 20;

/// Estimated rows of a join side at most for it to be broadcast.
pub const BROADCAST_ROWS: usize = 1 << 20;

extensions_options! {
    /// Strata's own settings of a session, under the `strata.` prefix
    /// (`SET strata.key_filters = false`).
    pub struct StrataOptions {
        /// Filter a join's probe side by its build side's keys before the
        /// probe side is shuffled (the planner's key filters).
        pub key_filters: bool, default = true
        /// The largest key source of a key filter, as a multiple of the
        /// broadcast limit (a filter holds only the distinct keys of its
        /// source, where a broadcast holds every row of its side).
        pub key_filter_source_factor: f64, default = 1.0
        /// The memory one query's tasks may hold at once on each executor
        /// (bytes, or `512m`, `2g`…; empty or `0`: the executor's pool
        /// alone limits it). Past it, operators that can spill spill and
        /// others fail the query ([`crate::memory::QueryPool`]).
        pub query_memory_limit: String, default = String::new()
    }
}

impl ConfigExtension for StrataOptions {
    const PREFIX: &'static str = "strata";
}

/// The session configuration for plans that will be cut into stages.
///
/// * File-stream work stealing is off: each task runs one partition of its
///   own copy of the plan, so a partition must read only its own file
///   group (with stealing on, every task would read every file).
/// * Dynamic filters are off: a join's (or top-k's) dynamic filter ties the
///   probe-side scan to the join at run time, and once a shuffle separates
///   them into different stages the scan would wait for a join that runs
///   only after it.
/// * Hash joins collect a small build side (`CollectLeft`, up to
///   [`BROADCAST_BYTES`] or [`BROADCAST_ROWS`] by estimate), which the
///   stage cutter turns into a broadcast; the
///   driver's planner makes the joins that track build-side matches across
///   probe partitions (outer, semi, anti) partitioned again, as isolated
///   tasks could not share that tracking.
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new().with_target_partitions(target_partitions.max(1));
    let options = config.options_mut();
    options.execution.enable_file_stream_work_stealing = false;
    options.extensions.insert(StrataOptions::default());
    // Broadcasting a build side costs a copy per task; shuffling both
    // sides costs writing and reading the (larger) probe side through
    // disk and the network. Broadcast up to Spark's order of size.
    options.optimizer.hash_join_single_partition_threshold = BROADCAST_BYTES;
    options.optimizer.hash_join_single_partition_threshold_rows = BROADCAST_ROWS;
    let opt = &mut options.optimizer;
    opt.enable_dynamic_filter_pushdown = false;
    opt.enable_join_dynamic_filter_pushdown = false;
    opt.enable_topk_dynamic_filter_pushdown = false;
    opt.enable_aggregate_dynamic_filter_pushdown = false;
    config
}

/// An executor's runtime: a fair spilling memory pool of `memory_bytes`
/// shared by its tasks, spill files under `spill_dir`, and the object
/// stores of [`crate::storage`] (local files and `s3://`).
pub fn runtime_env(memory_bytes: u64, spill_dir: &Path) -> Result<Arc<RuntimeEnv>> {
    crate::storage::runtime_env_builder()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory_bytes as usize)))
        .with_temp_file_path(spill_dir)
        .build_arc()
}
