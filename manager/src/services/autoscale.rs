//! Autoscaling policy: per app, from its `strata.autoscale.*` labels.
//!
//! ```text
//! strata.autoscale.min      = 2        fewest instances
//! strata.autoscale.max      = 8        most instances
//! strata.autoscale.metric   = http:/load   a number each instance serves
//!                                     over HTTP (on its first host port),
//!                           = cpu     or the percentage of its cpus it uses,
//!                                     as its agent measures it
//! strata.autoscale.target   = 10       wanted value of the metric per instance
//! ```
//!
//! Each sampling round reads the metric of every running instance;
//! [`Policy::desired`] is then `ceil(sum / target)` clamped to
//! `[min, max]` (the proportional rule of Kubernetes' HPA). Scaling down
//! waits until the wanted count has been lower for [`Policy::cooldown`],
//! so a short dip does not kill instances.

use std::collections::BTreeMap;
use std::time::Duration;

/// Label prefix of the policy.
pub const PREFIX: &str = "strata.autoscale.";

/// Where the metric comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// `GET path` on the instance's first host port answers a number.
    Http {
        /// The path, starting with `/`.
        path: String,
    },
    /// The percentage of its cpus an instance uses (100 = all of them), as
    /// measured by its agent over the last sampling interval.
    Cpu,
}

/// An app's autoscaling policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// The metric.
    pub metric: Metric,
    /// Wanted value of the metric per instance.
    pub target: f64,
    /// How long the wanted count must stay lower before scaling down.
    pub cooldown: Duration,
    /// Time between sampling rounds.
    pub interval: Duration,
}

/// A label of the policy that does not parse.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelError {
    /// The label.
    pub label: String,
    /// What is wrong.
    pub message: String,
}

impl Policy {
    /// The policy the labels set, `Ok(None)` without `strata.autoscale.*`
    /// labels.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Option<Policy>, LabelError> {
        let get = |k: &str| labels.get(&format!("{PREFIX}{k}"));
        if !labels.keys().any(|k| k.starts_with(PREFIX)) {
            return Ok(None);
        }
        let bad = |k: &str, message: String| LabelError {
            label: format!("{PREFIX}{k}"),
            message,
        };
        for k in labels.keys().filter_map(|k| k.strip_prefix(PREFIX)) {
            if !matches!(
                k,
                "min" | "max" | "metric" | "target" | "cooldown" | "interval"
            ) {
                return Err(bad(
                    k,
                    "unknown autoscaling label (min, max, metric, target, cooldown, interval)"
                        .into(),
                ));
            }
        }
        let count = |k: &str| -> Result<u32, LabelError> {
            let v = get(k).ok_or_else(|| bad(k, "required by an autoscaling policy".into()))?;
            v.parse::<u32>()
                .map_err(|_| bad(k, format!("{v:?} is not a whole number")))
        };
        let secs = |k: &str, default: f64| -> Result<Duration, LabelError> {
            match get(k) {
                None => Ok(Duration::from_secs_f64(default)),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| bad(k, format!("{v:?} is not a positive number of seconds"))),
            }
        };
        let (min, max) = (count("min")?, count("max")?);
        if min > max {
            return Err(bad("max", format!("max {max} is below min {min}")));
        }
        let metric = match get("metric").map(String::as_str) {
            Some(m) if m.starts_with("http:/") => Metric::Http {
                path: m["http:".len()..].to_owned(),
            },
            Some("cpu") => Metric::Cpu,
            Some(m) => return Err(bad("metric", format!("{m:?}: use cpu or http:/path"))),
            None => return Err(bad("metric", "required by an autoscaling policy".into())),
        };
        let target = get("target")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0)
            .ok_or_else(|| bad("target", "a positive number is required".into()))?;
        Ok(Some(Policy {
            min,
            max,
            metric,
            target,
            cooldown: secs("cooldown", 30.0)?,
            interval: secs("interval", 5.0)?,
        }))
    }

    /// The instance count the samples call for, within `[min, max]`.
    /// Without samples the count stays as it is (within bounds).
    pub fn desired(&self, current: u32, samples: &[f64]) -> u32 {
        let want = if samples.is_empty() {
            current
        } else {
            let sum: f64 = samples.iter().filter(|v| v.is_finite()).sum();
            (sum / self.target).ceil().max(0.0) as u32
        };
        want.clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn a_policy_parses_and_scales_proportionally() {
        let p = Policy::from_labels(&labels(&[
            ("min", "2"),
            ("max", "6"),
            ("metric", "http:/load"),
            ("target", "10"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            p.metric,
            Metric::Http {
                path: "/load".into()
            }
        );
        // 3 instances at 25 each: 75 / 10 → 8, capped at 6.
        assert_eq!(p.desired(3, &[25.0, 25.0, 25.0]), 6);
        assert_eq!(p.desired(3, &[10.0, 10.0, 1.0]), 3);
        assert_eq!(p.desired(3, &[0.0, 0.0, 0.0]), 2);
        assert_eq!(p.desired(9, &[]), 6);
        assert!(Policy::from_labels(&BTreeMap::new()).unwrap().is_none());
    }

    #[test]
    fn bad_labels_name_the_label() {
        let e = Policy::from_labels(&labels(&[("min", "3"), ("max", "2")])).unwrap_err();
        assert_eq!(e.label, "strata.autoscale.max");
        let e = Policy::from_labels(&labels(&[("min", "1"), ("max", "2"), ("metric", "gpu")]))
            .unwrap_err();
        assert!(e.message.contains("http:/path"), "{e:?}");
        let cpu = Policy::from_labels(&labels(&[
            ("min", "1"),
            ("max", "4"),
            ("metric", "cpu"),
            ("target", "50"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(cpu.metric, Metric::Cpu);
        // Two instances at 90 % of their cpus, target 50 %: 180 / 50 → 4.
        assert_eq!(cpu.desired(2, &[90.0, 90.0]), 4);
        let e = Policy::from_labels(&labels(&[("mni", "1")])).unwrap_err();
        assert_eq!(e.label, "strata.autoscale.mni");
    }
}
