//! The DRF sorter (policy): dominant resource fairness with role weights.
//!
//! A share is the largest fraction of the cluster's cpus, mem or disk held,
//! divided by the weight. Frameworks are ordered by their role's weighted
//! share, then by their own share inside the role, then by index (stable
//! ties). Ports are not a dimension of the share.

use super::FrameworkIdx;
use strata_proto::resources::Resources;

/// The dominant share of `allocated` in `total`, divided by `weight`.
pub fn weighted_share(allocated: &Resources, total: &Resources, weight: f64) -> f64 {
    let frac = |a: i64, t: i64| if t > 0 { a as f64 / t as f64 } else { 0.0 };
    let s = frac(allocated.cpus.milli(), total.cpus.milli())
        .max(frac(allocated.mem.milli(), total.mem.milli()))
        .max(frac(allocated.disk.milli(), total.disk.milli()));
    if weight > 0.0 { s / weight } else { s }
}

/// The sort key of a framework: lower is served first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShareKey {
    /// The role's weighted share.
    pub role_share: f64,
    /// The framework's share inside its role.
    pub framework_share: f64,
    /// The framework (tie breaker).
    pub framework: FrameworkIdx,
}

impl ShareKey {
    /// Builds a key.
    pub fn new(role_share: f64, framework_share: f64, framework: FrameworkIdx) -> Self {
        ShareKey {
            role_share,
            framework_share,
            framework,
        }
    }
}

impl Eq for ShareKey {}

impl PartialOrd for ShareKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShareKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.role_share
            .total_cmp(&other.role_share)
            .then(self.framework_share.total_cmp(&other.framework_share))
            .then(self.framework.cmp(&other.framework))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominant_share_and_weight() {
        let total = Resources::new(10.0, 1000.0);
        let a = Resources::new(1.0, 500.0);
        assert!((weighted_share(&a, &total, 1.0) - 0.5).abs() < 1e-9);
        assert!((weighted_share(&a, &total, 2.0) - 0.25).abs() < 1e-9);
        assert_eq!(weighted_share(&a, &Resources::default(), 1.0), 0.0);
        let k1 = ShareKey::new(0.1, 0.5, 1);
        let k2 = ShareKey::new(0.2, 0.0, 0);
        assert!(k1 < k2);
    }
}
