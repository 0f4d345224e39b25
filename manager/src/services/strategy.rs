//! How an app's instances are replaced, trimmed and given up on:
//! Marathon's `upgradeStrategy`, `unreachableStrategy` and `killSelection`.

use serde::{Deserialize, Serialize};

fn one() -> f64 {
    1.0
}

/// Marathon's `upgradeStrategy`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// The share of `instances` that stays healthy during a deployment.
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    /// The share of `instances` that may run beyond it during one.
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// Marathon's `unreachableStrategy`: an instance whose agent is
/// unreachable keeps its place for `inactiveAfterSeconds` (300 by default)
/// before a replacement is launched, and is remembered for
/// `expungeAfterSeconds` (600): should it come back before then it runs on
/// (and a scale-down trims the app to its count), after then it is killed
/// when it comes back. `"disabled"` is both at zero: replaced and forgotten
/// at once.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "UnreachableRepr", into = "UnreachableRepr")]
pub struct UnreachableStrategy {
    /// Seconds an unreachable instance keeps its place.
    pub inactive_after_seconds: f64,
    /// Seconds an unreachable instance is remembered.
    pub expunge_after_seconds: f64,
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy {
            inactive_after_seconds: 300.0,
            expunge_after_seconds: 600.0,
        }
    }
}

/// `unreachableStrategy` as Marathon writes it: `"disabled"` or the times.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum UnreachableRepr {
    Named(String),
    Times {
        #[serde(rename = "inactiveAfterSeconds", default = "default_inactive_after")]
        inactive_after_seconds: f64,
        #[serde(rename = "expungeAfterSeconds", default = "default_expunge_after")]
        expunge_after_seconds: f64,
    },
}

fn default_inactive_after() -> f64 {
    300.0
}
fn default_expunge_after() -> f64 {
    600.0
}

impl TryFrom<UnreachableRepr> for UnreachableStrategy {
    type Error = String;
    fn try_from(r: UnreachableRepr) -> Result<Self, String> {
        match r {
            UnreachableRepr::Named(n) if n == "disabled" => Ok(UnreachableStrategy {
                inactive_after_seconds: 0.0,
                expunge_after_seconds: 0.0,
            }),
            UnreachableRepr::Named(n) => Err(format!(
                "unreachableStrategy is \"disabled\" or {{\"inactiveAfterSeconds\", \"expungeAfterSeconds\"}}, not {n:?}"
            )),
            UnreachableRepr::Times {
                inactive_after_seconds,
                expunge_after_seconds,
            } => Ok(UnreachableStrategy {
                inactive_after_seconds,
                expunge_after_seconds,
            }),
        }
    }
}

impl From<UnreachableStrategy> for UnreachableRepr {
    fn from(u: UnreachableStrategy) -> Self {
        UnreachableRepr::Times {
            inactive_after_seconds: u.inactive_after_seconds,
            expunge_after_seconds: u.expunge_after_seconds,
        }
    }
}

/// Which instances a scale-down kills first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    /// The newest first (Marathon's default).
    #[default]
    YoungestFirst,
    /// The oldest first.
    OldestFirst,
}
