//! The services API's errors, each mapped once to an HTTP status and a
//! Marathon-shaped JSON body.

use http::StatusCode;
use serde_json::json;

use super::app::{AppId, FieldError};

/// Why a services request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// The body is not an app definition, or it is invalid.
    #[error("object is not valid")]
    Invalid {
        /// Each invalid field.
        details: Vec<FieldError>,
    },
    /// No such app.
    #[error("App '{id}' does not exist")]
    UnknownApp {
        /// The id asked for.
        id: String,
    },
    /// No such task.
    #[error("Task '{id}' does not exist")]
    UnknownTask {
        /// The id asked for.
        id: String,
    },
    /// No such deployment.
    #[error("Deployment '{id}' does not exist")]
    UnknownDeployment {
        /// The id asked for.
        id: String,
    },
    /// Creating an app that exists.
    #[error("An app with id [{id}] already exists.")]
    AppExists {
        /// The app.
        id: AppId,
    },
    /// Another deployment holds the app (send `force=true` to override).
    #[error(
        "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'."
    )]
    Locked {
        /// The deployments holding it.
        deployments: Vec<String>,
    },
    /// The services scheduler is not running (not yet subscribed, or shut
    /// down).
    #[error("the services scheduler is not available: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl ServiceError {
    /// The HTTP status of the error (Marathon's).
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ServiceError::UnknownApp { .. }
            | ServiceError::UnknownTask { .. }
            | ServiceError::UnknownDeployment { .. } => StatusCode::NOT_FOUND,
            ServiceError::AppExists { .. } | ServiceError::Locked { .. } => StatusCode::CONFLICT,
            ServiceError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body of the error (Marathon's shapes).
    pub fn body(&self) -> serde_json::Value {
        match self {
            ServiceError::Invalid { details } => {
                json!({"message": self.to_string(), "details": details})
            }
            ServiceError::Locked { deployments } => json!({
                "message": self.to_string(),
                "deployments": deployments.iter().map(|d| json!({"id": d})).collect::<Vec<_>>(),
            }),
            _ => json!({"message": self.to_string()}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_marathons_statuses_and_bodies() {
        let e = ServiceError::Locked {
            deployments: vec!["d1".into()],
        };
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(e.body()["deployments"][0]["id"], "d1");
        let e = ServiceError::Invalid {
            details: vec![FieldError {
                path: "/cpus".into(),
                errors: vec!["bad".into()],
            }],
        };
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body()["details"][0]["path"], "/cpus");
        let e = ServiceError::UnknownApp { id: "/x".into() };
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body()["message"], "App '/x' does not exist");
    }
}
