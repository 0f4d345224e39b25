//! Priority classes.
//!
//! Every task ask and every task carries a class. Offers are made per
//! (framework, class), higher classes first; a task may not be launched at a
//! class above that of the offer it uses. Classes are named and configurable;
//! [`PriorityClasses::default`] gives `system` (1000), `service` (100),
//! `batch` (10) and `best-effort` (0).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The class used when a framework names none.
pub const DEFAULT_CLASS: &str = "batch";

/// A class may preempt tasks of classes at least this much lower.
pub const PREEMPTION_GAP: i32 = 10;

/// One named priority class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityClass {
    /// The class's name, as written in asks, tasks and offers.
    pub name: String,
    /// Its priority: higher is served first.
    pub value: i32,
}

/// The index of a class in a [`PriorityClasses`] table (0 is the highest).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ClassIdx(pub u8);

/// A table of priority classes, kept sorted from highest to lowest value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityClasses {
    classes: Vec<PriorityClass>,
}

/// A class name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority class {name:?} (known: {known})")]
pub struct UnknownClass {
    /// The name that was asked for.
    pub name: String,
    /// The known names, comma-separated.
    pub known: String,
}

impl Default for PriorityClasses {
    fn default() -> Self {
        Self::new(vec![
            PriorityClass {
                name: "system".into(),
                value: 1000,
            },
            PriorityClass {
                name: "service".into(),
                value: 100,
            },
            PriorityClass {
                name: "batch".into(),
                value: 10,
            },
            PriorityClass {
                name: "best-effort".into(),
                value: 0,
            },
        ])
    }
}

impl PriorityClasses {
    /// Builds a table; classes are sorted by descending value. At most 255
    /// classes are kept.
    pub fn new(mut classes: Vec<PriorityClass>) -> Self {
        classes.sort_by(|a, b| b.value.cmp(&a.value).then_with(|| a.name.cmp(&b.name)));
        classes.dedup_by(|a, b| a.name == b.name);
        classes.truncate(255);
        Self { classes }
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Looks a class up by name; an empty name means [`DEFAULT_CLASS`].
    pub fn lookup(&self, name: &str) -> Result<ClassIdx, UnknownClass> {
        let name = if name.is_empty() { DEFAULT_CLASS } else { name };
        self.classes
            .iter()
            .position(|c| c.name == name)
            .map(|i| ClassIdx(i as u8))
            .ok_or_else(|| UnknownClass {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }

    /// The class at an index.
    pub fn get(&self, idx: ClassIdx) -> &PriorityClass {
        &self.classes[idx.0 as usize]
    }

    /// The name of the class at an index.
    pub fn name(&self, idx: ClassIdx) -> &str {
        &self.classes[idx.0 as usize].name
    }

    /// All class names, highest first.
    pub fn names(&self) -> Vec<&str> {
        self.classes.iter().map(|c| c.name.as_str()).collect()
    }

    /// Class indices from highest to lowest priority.
    pub fn iter(&self) -> impl Iterator<Item = ClassIdx> + '_ {
        (0..self.classes.len()).map(|i| ClassIdx(i as u8))
    }

    /// Whether a task of class `task` may run on an offer of class `offer`.
    pub fn may_launch(&self, task: ClassIdx, offer: ClassIdx) -> bool {
        self.get(task).value <= self.get(offer).value
    }

    /// Whether a task of class `preemptor` may preempt one of class `victim`.
    pub fn may_preempt(&self, preemptor: ClassIdx, victim: ClassIdx) -> bool {
        self.get(preemptor).value - self.get(victim).value >= PREEMPTION_GAP
    }
}

impl fmt::Display for PriorityClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .classes
            .iter()
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_order_and_rules() {
        let c = PriorityClasses::default();
        assert_eq!(c.names(), vec!["system", "service", "batch", "best-effort"]);
        let service = c.lookup("service").unwrap();
        let batch = c.lookup("").unwrap();
        assert_eq!(c.name(batch), "batch");
        assert!(c.may_launch(batch, service));
        assert!(!c.may_launch(service, batch));
        assert!(c.may_preempt(service, batch));
        assert!(!c.may_preempt(batch, batch));
        let err = c.lookup("gold").unwrap_err();
        assert!(err.to_string().contains("gold"));
    }
}
