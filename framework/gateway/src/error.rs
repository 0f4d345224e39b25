//! What a failed statement tells a PostgreSQL client: the SQLSTATE codes
//! clients branch on (42P01 for a missing table, 42601 for a syntax error,
//! 57014 for a cancelled query…), and a message that says what went wrong.

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use pgwire::error::{ErrorInfo, PgWireError};
use strata_framework::driver::DriverError;
use strata_framework::session::SessionError;

/// Why a statement of the gateway failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Planning or running it failed (DataFusion or the cluster).
    #[error("{0}")]
    Session(#[from] SessionError),
    /// SQL the gateway does not take (a statement kind, a setting).
    #[error("{0}")]
    Unsupported(String),
    /// The query was cancelled (a cancel request, or its session closed).
    #[error("canceling statement due to user request")]
    Cancelled,
    /// The query ran past its time limit (`statement_timeout`).
    #[error("canceling statement due to statement timeout")]
    Timeout,
    /// `SHOW` of a setting there is no such name for.
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    /// The change was made but could not be kept in the warehouse.
    #[error("{0} (the change holds in this gateway until it restarts)")]
    Warehouse(crate::warehouse::WarehouseError),
    /// A parameter or setting value that cannot be read.
    #[error("{0}")]
    InvalidValue(String),
}

impl From<DataFusionError> for GatewayError {
    fn from(e: DataFusionError) -> Self {
        GatewayError::Session(SessionError::Sql(e))
    }
}

impl From<crate::warehouse::WarehouseError> for GatewayError {
    /// A managed table's statement fails as any statement does; only a
    /// catalog that could not be kept is the warehouse's own error.
    fn from(e: crate::warehouse::WarehouseError) -> Self {
        use crate::warehouse::WarehouseError;
        match e {
            WarehouseError::Sql(e) => GatewayError::Session(e),
            WarehouseError::Delta(e) => DataFusionError::External(Box::new(e)).into(),
            e => GatewayError::Warehouse(e),
        }
    }
}

impl GatewayError {
    /// The SQLSTATE a PostgreSQL client expects for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            GatewayError::Session(SessionError::Sql(e)) => datafusion_sqlstate(e),
            GatewayError::Session(SessionError::Job(e)) => match e {
                DriverError::Cancelled(_) => "57014",
                DriverError::Plan(e) => datafusion_sqlstate(e),
                DriverError::JobFailed { message, .. } => task_sqlstate(message),
                _ => "XX000",
            },
            GatewayError::Unsupported(_) => "0A000",
            GatewayError::Cancelled | GatewayError::Timeout => "57014",
            GatewayError::InvalidValue(_) => "22023",
            GatewayError::UnknownSetting(_) => "42704",
            GatewayError::Warehouse(_) => "58030",
        }
    }

    /// The error as the wire's `ErrorResponse` fields.
    pub fn to_error_info(&self) -> ErrorInfo {
        ErrorInfo::new(
            "ERROR".to_owned(),
            self.sqlstate().to_owned(),
            self.to_string(),
        )
    }
}

impl From<GatewayError> for tonic::Status {
    /// The error as Flight SQL's clients get it: a gRPC code from its
    /// SQLSTATE's class, and the message with the SQLSTATE.
    fn from(e: GatewayError) -> Self {
        let state = e.sqlstate();
        let code = match state {
            "57014" if matches!(e, GatewayError::Timeout) => tonic::Code::DeadlineExceeded,
            "57014" => tonic::Code::Cancelled,
            "42P01" | "42704" | "3F000" | "3D000" => tonic::Code::NotFound,
            "42P07" | "42P06" => tonic::Code::AlreadyExists,
            "0A000" => tonic::Code::Unimplemented,
            "53300" | "53200" => tonic::Code::ResourceExhausted,
            "28P01" => tonic::Code::Unauthenticated,
            s if s.starts_with("42") || s.starts_with("22") => tonic::Code::InvalidArgument,
            _ => tonic::Code::Internal,
        };
        tonic::Status::new(code, format!("{e} (SQLSTATE {state})"))
    }
}

impl From<GatewayError> for PgWireError {
    fn from(e: GatewayError) -> Self {
        PgWireError::UserError(Box::new(e.to_error_info()))
    }
}

/// The SQLSTATE of a DataFusion error, from its innermost cause.
fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e.find_root() {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { .. } => "42703",
            SchemaError::AmbiguousReference { .. } => "42702",
            _ => "42701",
        },
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            datafusion::arrow::error::ArrowError::DivideByZero => "22012",
            datafusion::arrow::error::ArrowError::CastError(_)
            | datafusion::arrow::error::ArrowError::ParseError(_) => "22P02",
            _ => "XX000",
        },
        DataFusionError::Plan(m) | DataFusionError::Execution(m) => message_sqlstate(m),
        _ => "XX000",
    }
}

/// Plan errors carry their kind in their message only.
/// The SQLSTATE of a job that failed on the executors, from its tasks'
/// error (DataFusion's, as text).
fn task_sqlstate(m: &str) -> &'static str {
    let m = m.to_ascii_lowercase();
    if m.contains("resources exhausted") {
        "53200"
    } else if m.contains("divide by zero") || m.contains("division by zero") {
        "22012"
    } else if m.contains("cast error") || m.contains("cannot cast") {
        "22P02"
    } else {
        "XX000"
    }
}

fn message_sqlstate(m: &str) -> &'static str {
    let m = m.to_ascii_lowercase();
    if m.contains("not found") && (m.starts_with("table") || m.contains("table '")) {
        "42P01"
    } else if m.contains("already exists") {
        "42P07"
    } else if m.contains("schema") && (m.contains("not found") || m.contains("does not exist")) {
        "3F000"
    } else if m.contains("invalid function") || m.contains("no function matches") {
        "42883"
    } else if m.contains("division by zero") || m.contains("divide by zero") {
        "22012"
    } else if m.contains("cannot be cast") || m.contains("cannot cast") {
        "42846"
    } else {
        "42000"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: DataFusionError) -> &'static str {
        GatewayError::from(e).sqlstate()
    }

    #[test]
    fn errors_carry_the_sqlstate_clients_branch_on() {
        assert_eq!(
            code(DataFusionError::Plan(
                "table 'strata.public.nope' not found".into()
            )),
            "42P01"
        );
        assert_eq!(
            code(DataFusionError::Execution(
                "Table 't' already exists".into()
            )),
            "42P07"
        );
        assert_eq!(
            code(DataFusionError::NotImplemented("MERGE".into())),
            "0A000"
        );
        assert_eq!(
            code(DataFusionError::Context(
                "while planning".into(),
                Box::new(DataFusionError::ResourcesExhausted("memory".into()))
            )),
            "53200"
        );
        assert_eq!(GatewayError::Cancelled.sqlstate(), "57014");
        let info = GatewayError::Unsupported("LISTEN".into()).to_error_info();
        assert_eq!(
            (info.severity.as_str(), info.code.as_str()),
            ("ERROR", "0A000")
        );
    }
}
