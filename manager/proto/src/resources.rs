//! Resources: fixed-point scalars, port ranges and the [`Resources`] bundle.
//!
//! Scalars are kept as integer thousandths ("milli-units"), as Mesos does, so
//! sums and differences are exact and an allocation can never drift past an
//! agent's total through rounding. `mem` and `disk` are in MiB.
//!
//! Known resource names are `cpus`, `mem`, `disk` (scalars) and `ports`
//! (ranges). Anything else is rejected with [`ResourceError::UnknownName`].

use crate::pb;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// The largest scalar accepted (in units): a petabyte of MiB is plenty.
const MAX_SCALAR_UNITS: f64 = 1e12;

/// An error in a resource description.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A resource name other than `cpus`, `mem`, `disk` or `ports`.
    #[error("unknown resource {name:?} (known: cpus, mem, disk, ports)")]
    UnknownName {
        /// The name given.
        name: String,
    },
    /// A scalar that is negative, NaN, infinite or absurdly large.
    #[error("invalid amount {value} for resource {name:?}: must be a finite number >= 0")]
    InvalidScalar {
        /// The resource.
        name: String,
        /// The value given.
        value: f64,
    },
    /// A range whose begin is past its end, or beyond 65535 for ports.
    #[error("invalid range [{begin}-{end}] for resource {name:?}")]
    InvalidRange {
        /// The resource.
        name: String,
        /// Range begin.
        begin: u64,
        /// Range end.
        end: u64,
    },
    /// The same resource given twice.
    #[error("resource {name:?} given more than once")]
    Duplicate {
        /// The resource.
        name: String,
    },
    /// Text that does not parse as `name:value;…`.
    #[error("cannot parse resources {text:?}: {reason}")]
    Syntax {
        /// The text given.
        text: String,
        /// What was wrong.
        reason: String,
    },
}

/// A non-negative fixed-point quantity with three decimals.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scalar(i64);

impl Scalar {
    /// Zero.
    pub const ZERO: Scalar = Scalar(0);

    /// From thousandths of a unit.
    pub const fn from_milli(milli: i64) -> Self {
        Scalar(milli)
    }

    /// From whole units.
    pub const fn from_units(units: i64) -> Self {
        Scalar(units * 1000)
    }

    /// Thousandths of a unit.
    pub const fn milli(self) -> i64 {
        self.0
    }

    /// Converts a wire value, rejecting NaN, infinities and negatives, and
    /// rounding to three decimals.
    pub fn from_f64(name: &str, value: f64) -> Result<Self, ResourceError> {
        if !value.is_finite() || !(0.0..=MAX_SCALAR_UNITS).contains(&value) {
            return Err(ResourceError::InvalidScalar {
                name: name.to_owned(),
                value,
            });
        }
        Ok(Scalar((value * 1000.0).round() as i64))
    }

    /// As a float, for the wire and for display.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// Whether the quantity is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Subtraction that stops at zero.
    pub fn saturating_sub(self, other: Scalar) -> Scalar {
        Scalar((self.0 - other.0).max(0))
    }
}

impl Add for Scalar {
    type Output = Scalar;
    fn add(self, rhs: Scalar) -> Scalar {
        Scalar(self.0 + rhs.0)
    }
}

impl AddAssign for Scalar {
    fn add_assign(&mut self, rhs: Scalar) {
        self.0 += rhs.0;
    }
}

impl Sub for Scalar {
    type Output = Scalar;
    fn sub(self, rhs: Scalar) -> Scalar {
        Scalar(self.0 - rhs.0)
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = (self.0 % 1000).abs();
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:03}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A set of inclusive ranges, kept sorted, disjoint and merged.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// An empty set.
    pub const fn empty() -> Self {
        Ranges(Vec::new())
    }

    /// Builds a set from possibly overlapping ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v: Vec<(u64, u64)> = ranges.into_iter().filter(|(b, e)| b <= e).collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Ranges(out)
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// Number of values in the set.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every value of `other` is in `self`.
    pub fn contains(&self, other: &Ranges) -> bool {
        other.0.iter().all(|&(b, e)| {
            // Ranges are merged, so a sub-range lies within a single range.
            let i = self.0.partition_point(|&(_, end)| end < b);
            i < self.0.len() && self.0[i].0 <= b && e <= self.0[i].1
        })
    }

    /// The union.
    pub fn union(&self, other: &Ranges) -> Ranges {
        if other.is_empty() {
            return self.clone();
        }
        Ranges::from_ranges(self.0.iter().chain(other.0.iter()).copied())
    }

    /// The values of `self` not in `other`.
    pub fn difference(&self, other: &Ranges) -> Ranges {
        if other.is_empty() {
            return self.clone();
        }
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            let mut cur = b;
            for &(ob, oe) in &other.0 {
                if oe < cur || ob > e {
                    continue;
                }
                if ob > cur {
                    out.push((cur, ob - 1));
                }
                cur = oe.saturating_add(1);
                if cur > e {
                    break;
                }
            }
            if cur <= e && cur >= b {
                out.push((cur, e));
            }
        }
        Ranges(out)
    }

    /// The lowest `n` values of the set, or `None` if it holds fewer.
    pub fn take_lowest(&self, n: u64) -> Option<Ranges> {
        let mut left = n;
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = e - b + 1;
            let take = len.min(left);
            out.push((b, b + take - 1));
            left -= take;
        }
        (left == 0).then_some(Ranges(out))
    }

    /// Every value in the set, in order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if b == e {
                write!(f, "{b}")?;
            } else {
                write!(f, "{b}-{e}")?;
            }
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A bundle of resources: three scalars and a set of ports.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU shares (1.0 = one core).
    pub cpus: Scalar,
    /// Memory in MiB.
    pub mem: Scalar,
    /// Disk in MiB.
    pub disk: Scalar,
    /// Port ranges.
    pub ports: Ranges,
}

impl Resources {
    /// Cpus and mem (MiB) only, for tests and examples.
    pub fn new(cpus: f64, mem: f64) -> Self {
        Resources {
            cpus: Scalar((cpus * 1000.0).round() as i64),
            mem: Scalar((mem * 1000.0).round() as i64),
            ..Default::default()
        }
    }

    /// With disk (MiB) set.
    pub fn with_disk(mut self, disk: f64) -> Self {
        self.disk = Scalar((disk * 1000.0).round() as i64);
        self
    }

    /// With these ports.
    pub fn with_ports(mut self, ports: Ranges) -> Self {
        self.ports = ports;
        self
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_zero() && self.mem.is_zero() && self.disk.is_zero() && self.ports.is_empty()
    }

    /// Whether `self` holds at least all of `other`.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus >= other.cpus
            && self.mem >= other.mem
            && self.disk >= other.disk
            && self.ports.contains(&other.ports)
    }

    /// Whether the scalars of `self` are at least those of `other` and it
    /// holds at least as many ports (ports not yet chosen).
    pub fn fits_shape(&self, other: &Resources) -> bool {
        self.cpus >= other.cpus
            && self.mem >= other.mem
            && self.disk >= other.disk
            && self.ports.count() >= other.ports.count()
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.cpus += other.cpus;
        self.mem += other.mem;
        self.disk += other.disk;
        if !other.ports.is_empty() {
            self.ports = self.ports.union(&other.ports);
        }
    }

    /// Removes `other` from `self`, which must contain it; on failure `self`
    /// is unchanged and `false` is returned.
    pub fn subtract(&mut self, other: &Resources) -> bool {
        if !self.contains(other) {
            return false;
        }
        self.cpus = self.cpus - other.cpus;
        self.mem = self.mem - other.mem;
        self.disk = self.disk - other.disk;
        if !other.ports.is_empty() {
            self.ports = self.ports.difference(&other.ports);
        }
        true
    }

    /// Removes as much of `other` as `self` holds.
    pub fn subtract_saturating(&mut self, other: &Resources) {
        self.cpus = self.cpus.saturating_sub(other.cpus);
        self.mem = self.mem.saturating_sub(other.mem);
        self.disk = self.disk.saturating_sub(other.disk);
        if !other.ports.is_empty() {
            self.ports = self.ports.difference(&other.ports);
        }
    }

    /// The sum of two bundles.
    pub fn plus(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        r.add(other);
        r
    }

    /// Parses the command-line syntax: `cpus:4;mem:8192;disk:1000;ports:[31000-32000,33000]`.
    pub fn parse(text: &str) -> Result<Resources, ResourceError> {
        let syntax = |reason: &str| ResourceError::Syntax {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut out = Resources::default();
        let mut seen: Vec<String> = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| syntax(&format!("expected name:value, got {part:?}")))?;
            let name = name.trim();
            let value = value.trim();
            if seen.iter().any(|s| s == name) {
                return Err(ResourceError::Duplicate {
                    name: name.to_owned(),
                });
            }
            seen.push(name.to_owned());
            match name {
                "cpus" | "mem" | "disk" => {
                    let v: f64 = parse_size(name, value).ok_or_else(|| {
                        syntax(&format!("{name} must be a number, got {value:?}"))
                    })?;
                    let s = Scalar::from_f64(name, v)?;
                    match name {
                        "cpus" => out.cpus = s,
                        "mem" => out.mem = s,
                        _ => out.disk = s,
                    }
                }
                "ports" => {
                    let inner = value
                        .strip_prefix('[')
                        .and_then(|v| v.strip_suffix(']'))
                        .ok_or_else(|| syntax("ports must look like [31000-32000]"))?;
                    let mut ranges = Vec::new();
                    for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        let (b, e) = match r.split_once('-') {
                            Some((b, e)) => (b.trim(), e.trim()),
                            None => (r, r),
                        };
                        let b: u64 = b.parse().map_err(|_| syntax("bad port number"))?;
                        let e: u64 = e.parse().map_err(|_| syntax("bad port number"))?;
                        check_range("ports", b, e)?;
                        ranges.push((b, e));
                    }
                    out.ports = Ranges::from_ranges(ranges);
                }
                other => {
                    return Err(ResourceError::UnknownName {
                        name: other.to_owned(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Converts from the wire, validating names, amounts and ranges. Returns
    /// the regular and the revocable resources separately.
    pub fn from_proto_split(
        list: &[pb::Resource],
    ) -> Result<(Resources, Resources), ResourceError> {
        let mut regular = Resources::default();
        let mut revocable = Resources::default();
        let mut seen: Vec<(&str, bool)> = Vec::new();
        for r in list {
            if seen.contains(&(r.name.as_str(), r.revocable)) {
                return Err(ResourceError::Duplicate {
                    name: r.name.clone(),
                });
            }
            seen.push((r.name.as_str(), r.revocable));
            let target = if r.revocable {
                &mut revocable
            } else {
                &mut regular
            };
            match r.name.as_str() {
                "cpus" => target.cpus = Scalar::from_f64("cpus", r.scalar)?,
                "mem" => target.mem = Scalar::from_f64("mem", r.scalar)?,
                "disk" => target.disk = Scalar::from_f64("disk", r.scalar)?,
                "ports" => {
                    for range in &r.ranges {
                        check_range("ports", range.begin, range.end)?;
                    }
                    target.ports = Ranges::from_ranges(r.ranges.iter().map(|x| (x.begin, x.end)));
                }
                other => {
                    return Err(ResourceError::UnknownName {
                        name: other.to_owned(),
                    });
                }
            }
        }
        Ok((regular, revocable))
    }

    /// Converts from the wire, refusing revocable resources in the list.
    pub fn from_proto(list: &[pb::Resource]) -> Result<Resources, ResourceError> {
        let (regular, revocable) = Self::from_proto_split(list)?;
        Ok(regular.plus(&revocable))
    }

    /// Converts to the wire; zero scalars and empty ranges are left out.
    pub fn to_proto(&self, revocable: bool) -> Vec<pb::Resource> {
        let mut out = Vec::with_capacity(4);
        for (name, s) in [("cpus", self.cpus), ("mem", self.mem), ("disk", self.disk)] {
            if !s.is_zero() {
                out.push(pb::Resource {
                    name: name.to_owned(),
                    scalar: s.as_f64(),
                    ranges: vec![],
                    revocable,
                });
            }
        }
        if !self.ports.is_empty() {
            out.push(pb::Resource {
                name: "ports".to_owned(),
                scalar: 0.0,
                ranges: self
                    .ports
                    .ranges()
                    .iter()
                    .map(|&(begin, end)| pb::Range { begin, end })
                    .collect(),
                revocable,
            });
        }
        out
    }
}

fn check_range(name: &str, begin: u64, end: u64) -> Result<(), ResourceError> {
    if begin > end || end > 65535 {
        return Err(ResourceError::InvalidRange {
            name: name.to_owned(),
            begin,
            end,
        });
    }
    Ok(())
}

/// Parses a number, allowing a size unit for mem and disk (`512`, `4g`,
/// `1.5GiB`, `100m`): a plain number is MiB.
fn parse_size(name: &str, value: &str) -> Option<f64> {
    if let Ok(v) = value.parse::<f64>() {
        return Some(v);
    }
    if name == "cpus" {
        return None;
    }
    parse_mib(value)
}

/// Parses a size in MiB: a plain number is MiB; `k`, `m`, `g`, `t` (with an
/// optional `b`/`ib`) scale it.
pub fn parse_mib(text: &str) -> Option<f64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1.0 / 1024.0),
        'm' => (&t[..t.len() - 1], 1.0),
        'g' => (&t[..t.len() - 1], 1024.0),
        't' => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let v: f64 = num.trim().parse().ok()?;
    Some(v * mult)
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpus:{};mem:{};disk:{}", self.cpus, self.mem, self.disk)?;
        if !self.ports.is_empty() {
            write!(f, ";ports:{}", self.ports)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses attributes: `rack:r1;zone:a`.
pub fn parse_attributes(text: &str) -> Result<Vec<(String, String)>, ResourceError> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once(':').ok_or_else(|| ResourceError::Syntax {
            text: text.to_owned(),
            reason: format!("expected name:value, got {part:?}"),
        })?;
        out.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_display() {
        let r = Resources::parse("cpus:4;mem:8192;ports:[31000-32000]").unwrap();
        assert_eq!(r.cpus, Scalar::from_units(4));
        assert_eq!(r.mem, Scalar::from_units(8192));
        assert_eq!(r.ports.count(), 1001);
        assert_eq!(r.to_string(), "cpus:4;mem:8192;disk:0;ports:[31000-32000]");
        let r = Resources::parse("cpus:0.5;mem:4g;disk:1.5g").unwrap();
        assert_eq!(r.cpus, Scalar::from_milli(500));
        assert_eq!(r.mem, Scalar::from_units(4096));
        assert_eq!(r.disk, Scalar::from_units(1536));
    }

    #[test]
    fn bad_input_is_rejected() {
        assert!(matches!(
            Resources::parse("gpus:1"),
            Err(ResourceError::UnknownName { .. })
        ));
        assert!(matches!(
            Resources::parse("cpus:-1"),
            Err(ResourceError::InvalidScalar { .. })
        ));
        assert!(matches!(
            Resources::parse("cpus:NaN"),
            Err(ResourceError::InvalidScalar { .. })
        ));
        assert!(matches!(
            Resources::parse("cpus:1;cpus:2"),
            Err(ResourceError::Duplicate { .. })
        ));
        assert!(matches!(
            Resources::parse("ports:[5-1]"),
            Err(ResourceError::InvalidRange { .. })
        ));
        assert!(matches!(
            Resources::parse("cpus"),
            Err(ResourceError::Syntax { .. })
        ));
        let bad = vec![pb::Resource {
            name: "cpus".into(),
            scalar: f64::NAN,
            ranges: vec![],
            revocable: false,
        }];
        assert!(Resources::from_proto(&bad).is_err());
        let bad = vec![pb::Resource {
            name: "cpus".into(),
            scalar: f64::INFINITY,
            ranges: vec![],
            revocable: false,
        }];
        assert!(Resources::from_proto(&bad).is_err());
    }

    #[test]
    fn scalar_display() {
        assert_eq!(Scalar::from_milli(1500).to_string(), "1.5");
        assert_eq!(Scalar::from_milli(1).to_string(), "0.001");
        assert_eq!(Scalar::from_units(3).to_string(), "3");
    }

    #[test]
    fn wire_round_trip() {
        let r = Resources::parse("cpus:2.25;mem:100;disk:5;ports:[10-20,30]").unwrap();
        let back = Resources::from_proto(&r.to_proto(false)).unwrap();
        assert_eq!(r, back);
        let (reg, rev) = Resources::from_proto_split(&r.to_proto(true)).unwrap();
        assert!(reg.is_empty());
        assert_eq!(rev, r);
    }

    fn ranges() -> impl Strategy<Value = Ranges> {
        proptest::collection::vec((0u64..200, 0u64..20), 0..6)
            .prop_map(|v| Ranges::from_ranges(v.into_iter().map(|(b, l)| (b, b + l))))
    }

    proptest! {
        #[test]
        fn ranges_algebra(a in ranges(), b in ranges()) {
            let u = a.union(&b);
            prop_assert!(u.contains(&a));
            prop_assert!(u.contains(&b));
            let d = u.difference(&b);
            prop_assert!(!d.values().any(|v| b.values().any(|w| w == v)));
            prop_assert_eq!(d.union(&b), u.clone());
            prop_assert_eq!(u.count(), d.count() + b.count());
        }

        #[test]
        fn add_then_subtract_is_identity(c1 in 0i64..100_000, m1 in 0i64..100_000, c2 in 0i64..100_000, m2 in 0i64..100_000, p in ranges()) {
            let a = Resources { cpus: Scalar::from_milli(c1), mem: Scalar::from_milli(m1), ..Default::default() };
            let b = Resources { cpus: Scalar::from_milli(c2), mem: Scalar::from_milli(m2), disk: Scalar::ZERO, ports: p };
            let mut s = a.plus(&b);
            prop_assert!(s.contains(&b));
            prop_assert!(s.subtract(&b));
            prop_assert_eq!(s, a);
        }
    }
}
