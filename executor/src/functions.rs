//! Job functions: the process-wide registry of user-defined functions that
//! a job's plans may call.
//!
//! Plans travel to executors serialised with datafusion-proto, and a UDF in
//! a plan travels **by name**: the executor resolves the name in the
//! function registry of the task context it decodes the plan with. A job's
//! functions must therefore be known on both sides under the same name. A
//! Rust job is one binary that is both its driver and its executors, so the
//! rule is simple:
//!
//! > Register every job function (with [`register_scalar_udf`],
//! > [`register_udaf`], [`register_udwf`]) at process start, in `main`,
//! > before starting the driver or the executor.
//!
//! The executor's base state (`runtime`) and the driver's SQL session
//! (`strata_framework::session::Session`) both [`install`] the registered
//! functions when they are built; an executor builds its base state when it
//! connects to its driver, so a function registered after that is not seen
//! by it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};

#[derive(Default)]
struct Registry {
    scalar: BTreeMap<String, Arc<ScalarUDF>>,
    aggregate: BTreeMap<String, Arc<AggregateUDF>>,
    window: BTreeMap<String, Arc<WindowUDF>>,
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn read<T>(f: impl FnOnce(&Registry) -> T) -> T {
    let guard = registry().read().unwrap_or_else(|e| e.into_inner());
    f(&guard)
}

fn write(f: impl FnOnce(&mut Registry)) {
    let mut guard = registry().write().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// Registers a scalar function for this process's sessions and executors,
/// under its name (replacing one registered before under that name). It
/// takes precedence over a built-in function of the same name.
pub fn register_scalar_udf(udf: ScalarUDF) {
    write(|r| {
        r.scalar.insert(udf.name().to_string(), Arc::new(udf));
    })
}

/// Registers an aggregate function (see [`register_scalar_udf`]).
pub fn register_udaf(udaf: AggregateUDF) {
    write(|r| {
        r.aggregate.insert(udaf.name().to_string(), Arc::new(udaf));
    })
}

/// Registers a window function (see [`register_scalar_udf`]).
pub fn register_udwf(udwf: WindowUDF) {
    write(|r| {
        r.window.insert(udwf.name().to_string(), Arc::new(udwf));
    })
}

/// The registered scalar function named `name`.
pub fn scalar_udf(name: &str) -> Option<Arc<ScalarUDF>> {
    read(|r| r.scalar.get(name).cloned())
}

/// The registered scalar functions, by name.
pub fn scalar_udfs() -> Vec<Arc<ScalarUDF>> {
    read(|r| r.scalar.values().cloned().collect())
}

/// The registered aggregate functions, by name.
pub fn udafs() -> Vec<Arc<AggregateUDF>> {
    read(|r| r.aggregate.values().cloned().collect())
}

/// The registered window functions, by name.
pub fn udwfs() -> Vec<Arc<WindowUDF>> {
    read(|r| r.window.values().cloned().collect())
}

/// Adds the registered functions to a session state being built. Call it
/// after `with_default_features` so that a job function wins over a
/// built-in one of the same name.
pub fn install(mut builder: SessionStateBuilder) -> SessionStateBuilder {
    builder
        .scalar_functions()
        .get_or_insert_with(Vec::new)
        .extend(scalar_udfs());
    builder
        .aggregate_functions()
        .get_or_insert_with(Vec::new)
        .extend(udafs());
    builder
        .window_functions()
        .get_or_insert_with(Vec::new)
        .extend(udwfs());
    builder
}

/// [`install`] as a step of a builder chain:
/// `SessionStateBuilder::new().with_default_features().with_job_functions().build()`.
pub trait WithJobFunctions {
    /// Adds the registered job functions ([`install`]).
    fn with_job_functions(self) -> Self;
}

impl WithJobFunctions for SessionStateBuilder {
    fn with_job_functions(self) -> Self {
        install(self)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    use datafusion::scalar::ScalarValue;

    use super::*;

    #[test]
    fn registered_functions_reach_a_built_state_and_override_builtins() {
        let udf = |name: &str, v: i64| {
            create_udf(
                name,
                vec![],
                DataType::Int64,
                Volatility::Immutable,
                Arc::new(move |_: &[ColumnarValue]| {
                    Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(v))))
                }),
            )
        };
        register_scalar_udf(udf("functions_test_answer", 42));
        register_scalar_udf(udf("pi", 3));
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_job_functions()
            .build();
        assert!(
            state
                .scalar_functions()
                .contains_key("functions_test_answer")
        );
        let pi = &state.scalar_functions()["pi"];
        assert!(Arc::ptr_eq(pi, &scalar_udf("pi").unwrap()));
        assert!(state.scalar_functions().contains_key("lower"));
    }
}
