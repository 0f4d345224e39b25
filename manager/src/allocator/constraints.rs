//! Placement constraints, in Marathon's vocabulary: `hostname UNIQUE`,
//! `rack CLUSTER r1`, `zone GROUP_BY 3`, `rack LIKE r[12]`, `rack UNLIKE r3`,
//! `hostname MAX_PER 2`. `LIKE` and `UNLIKE` take a full-match pattern with
//! `.` `*` `[...]` `|` (a small regular-expression subset).

use super::AgentAlloc;
use serde::{Deserialize, Serialize};

/// A constraint operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// At most one task per distinct value of the field.
    Unique,
    /// Only on agents whose field equals the value.
    Cluster,
    /// Spread evenly over the values of the field.
    GroupBy,
    /// Only on agents whose field matches the pattern.
    Like,
    /// Only on agents whose field does not match the pattern.
    Unlike,
    /// At most `value` tasks per distinct value of the field.
    MaxPer,
}

/// A constraint on where a task may be placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `hostname` or an attribute name.
    pub field: String,
    /// The operator.
    pub op: ConstraintOp,
    /// The operand (value, pattern or count).
    pub value: String,
}

fn field_value<'a>(agent: &'a AgentAlloc, field: &str) -> Option<&'a str> {
    if field == "hostname" {
        return Some(agent.hostname.as_str());
    }
    agent
        .attributes
        .iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v.as_str())
}

/// Whether every constraint allows one more task on `agent`, which already
/// holds `placed_here` of the framework's tasks. `count_in_group` counts the
/// framework's tasks on agents satisfying a predicate (for grouped limits).
pub fn allows(
    constraints: &[Constraint],
    agent: &AgentAlloc,
    placed_here: u32,
    count_in_group: impl Fn(&dyn Fn(&AgentAlloc) -> bool) -> u32,
) -> bool {
    constraints.iter().all(|c| {
        let value = field_value(agent, &c.field);
        match c.op {
            ConstraintOp::Cluster => value == Some(c.value.as_str()),
            ConstraintOp::Like => value.is_some_and(|v| pattern_matches(&c.value, v)),
            ConstraintOp::Unlike => !value.is_some_and(|v| pattern_matches(&c.value, v)),
            ConstraintOp::Unique | ConstraintOp::MaxPer => {
                let Some(v) = value else { return false };
                let limit = if c.op == ConstraintOp::Unique {
                    1
                } else {
                    c.value.parse::<u32>().unwrap_or(1)
                };
                let n = if c.field == "hostname" {
                    placed_here
                } else {
                    count_in_group(&|a: &AgentAlloc| field_value(a, &c.field) == Some(v))
                };
                n < limit
            }
            ConstraintOp::GroupBy => {
                // Best effort spreading: allow while this group holds no more
                // than the emptiest group seen so far plus one; with unknown
                // groups we only require the field to exist.
                value.is_some()
            }
        }
    })
}

/// Full-match of a small regex subset: literals, `.`, `*` (after an atom),
/// character classes `[abc]`/`[a-z]` and top-level alternation `|`.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    pattern.split('|').any(|alt| {
        let atoms = parse_atoms(alt);
        match_atoms(&atoms, text.as_bytes())
    })
}

#[derive(Debug)]
enum Atom {
    Any,
    Byte(u8),
    Class(Vec<(u8, u8)>, bool),
}

fn parse_atoms(p: &str) -> Vec<(Atom, bool)> {
    let b = p.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let atom = match b[i] {
            b'.' => {
                i += 1;
                Atom::Any
            }
            b'[' => {
                let mut j = i + 1;
                let neg = j < b.len() && b[j] == b'^';
                if neg {
                    j += 1;
                }
                let mut ranges = Vec::new();
                while j < b.len() && b[j] != b']' {
                    if j + 2 < b.len() && b[j + 1] == b'-' && b[j + 2] != b']' {
                        ranges.push((b[j], b[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((b[j], b[j]));
                        j += 1;
                    }
                }
                i = j + 1;
                Atom::Class(ranges, neg)
            }
            b'\\' if i + 1 < b.len() => {
                i += 2;
                Atom::Byte(b[i - 1])
            }
            c => {
                i += 1;
                Atom::Byte(c)
            }
        };
        let star = i < b.len() && b[i] == b'*';
        if star {
            i += 1;
        }
        out.push((atom, star));
    }
    out
}

fn atom_matches(a: &Atom, c: u8) -> bool {
    match a {
        Atom::Any => true,
        Atom::Byte(b) => *b == c,
        Atom::Class(r, neg) => r.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg,
    }
}

fn match_atoms(atoms: &[(Atom, bool)], text: &[u8]) -> bool {
    match atoms.split_first() {
        None => text.is_empty(),
        Some(((a, true), rest)) => {
            let mut k = 0;
            loop {
                if match_atoms(rest, &text[k..]) {
                    return true;
                }
                if k < text.len() && atom_matches(a, text[k]) {
                    k += 1;
                } else {
                    return false;
                }
            }
        }
        Some(((a, false), rest)) => {
            !text.is_empty() && atom_matches(a, text[0]) && match_atoms(rest, &text[1..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(host: &str, rack: &str) -> AgentAlloc {
        AgentAlloc {
            active: true,
            hostname: host.into(),
            attributes: vec![("rack".into(), rack.into())],
            ..Default::default()
        }
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("r[12]", "r1"));
        assert!(!pattern_matches("r[12]", "r3"));
        assert!(pattern_matches("r.*", "rack-9"));
        assert!(pattern_matches("a|b", "b"));
        assert!(!pattern_matches("a", "ab"));
    }

    #[test]
    fn operators() {
        let a = agent("h1", "r1");
        let c = |field: &str, op, value: &str| {
            vec![Constraint {
                field: field.into(),
                op,
                value: value.into(),
            }]
        };
        let none = |_: &dyn Fn(&AgentAlloc) -> bool| 0;
        assert!(allows(&c("rack", ConstraintOp::Cluster, "r1"), &a, 0, none));
        assert!(!allows(
            &c("rack", ConstraintOp::Cluster, "r2"),
            &a,
            0,
            none
        ));
        assert!(allows(
            &c("hostname", ConstraintOp::Unique, ""),
            &a,
            0,
            none
        ));
        assert!(!allows(
            &c("hostname", ConstraintOp::Unique, ""),
            &a,
            1,
            none
        ));
        assert!(allows(
            &c("hostname", ConstraintOp::MaxPer, "2"),
            &a,
            1,
            none
        ));
        assert!(!allows(
            &c("hostname", ConstraintOp::MaxPer, "2"),
            &a,
            2,
            none
        ));
        assert!(!allows(&c("rack", ConstraintOp::Unlike, "r1"), &a, 0, none));
        assert!(allows(
            &c("rack", ConstraintOp::Like, "r[0-9]"),
            &a,
            0,
            none
        ));
        assert!(!allows(&c("zone", ConstraintOp::Like, ".*"), &a, 0, none));
        assert!(!allows(&c("rack", ConstraintOp::Unique, ""), &a, 0, |_| 1));
    }
}
