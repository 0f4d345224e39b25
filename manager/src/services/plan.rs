//! The per-app decision, pure: given an app's target and its instances,
//! which instances to kill and how many to launch now.
//!
//! One rule covers creation, scaling, restarts, rolling updates and
//! deletion. Instances of the current configuration (*new*) are scaled to
//! `instances`; instances of an earlier one (*old*) are replaced while at
//! least `ceil(instances × minimumHealthCapacity)` instances stay healthy
//! and at most `instances × (1 + maximumOverCapacity)` run at once.

use super::app::{KillSelection, UpgradeStrategy};
use strata_proto::time::Timestamp;

/// What the planner needs to know of one live instance (not terminal and
/// not being killed).
#[derive(Clone, Debug, PartialEq)]
pub struct Live<K> {
    /// The caller's key.
    pub key: K,
    /// Of the current configuration.
    pub current: bool,
    /// Counts as healthy: running and, with health checks, passing them.
    pub healthy: bool,
    /// Running (not staging or starting).
    pub running: bool,
    /// When it was launched (for the kill selection).
    pub staged_at: Timestamp,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub struct Step<K> {
    /// Instances to kill.
    pub kill: Vec<K>,
    /// Instances to launch.
    pub launch: u32,
}

/// The wanted shape of an app.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Instances wanted (0 while the app is deleted).
    pub instances: u32,
    /// How a replacement proceeds.
    pub strategy: UpgradeStrategy,
    /// Which go first when scaling down.
    pub kill_selection: KillSelection,
    /// Whether launches wait (restart backoff).
    pub backing_off: bool,
}

impl Target {
    /// The fewest healthy instances a replacement keeps.
    pub fn min_healthy(&self) -> u32 {
        (f64::from(self.instances) * self.strategy.minimum_health_capacity - 1e-9)
            .ceil()
            .max(0.0) as u32
    }

    /// The most instances running at once during a replacement: at least
    /// one more than `instances` when no old instance may go otherwise.
    pub fn max_total(&self) -> u32 {
        let over =
            (f64::from(self.instances) * self.strategy.maximum_over_capacity + 1e-9).floor() as u32;
        let mut max = self.instances + over;
        if over == 0 && self.min_healthy() >= self.instances && self.instances > 0 {
            max += 1;
        }
        max
    }
}

/// Decides one step for an app.
pub fn step<K: Clone + PartialEq>(target: &Target, live: &[Live<K>]) -> Step<K> {
    let mut kill = Vec::new();
    let new: Vec<&Live<K>> = live.iter().filter(|l| l.current).collect();
    let mut old: Vec<&Live<K>> = live.iter().filter(|l| !l.current).collect();
    let n = target.instances as usize;

    // Scale the current configuration down: not-running, then unhealthy,
    // then by the kill selection.
    let mut new_kept = new.len();
    if new.len() > n {
        let mut order = new.clone();
        order.sort_by_key(|l| {
            let age = match target.kill_selection {
                KillSelection::YoungestFirst => u64::MAX - l.staged_at.as_millis(),
                KillSelection::OldestFirst => l.staged_at.as_millis(),
            };
            (l.running, l.healthy, age)
        });
        for l in order.iter().take(new.len() - n) {
            kill.push(l.key.clone());
        }
        new_kept = n;
    }

    // Replace old instances: unhealthy ones at once, healthy ones while
    // enough others stay healthy. With nothing current wanted, all go.
    let healthy_new = new
        .iter()
        .filter(|l| l.healthy && !kill.contains(&l.key))
        .count() as u32;
    let mut healthy = healthy_new + old.iter().filter(|l| l.healthy).count() as u32;
    old.sort_by_key(|l| (l.healthy, l.staged_at));
    let min_healthy = target.min_healthy();
    let mut old_kept = 0usize;
    for l in &old {
        if n == 0 || !l.healthy {
            kill.push(l.key.clone());
        } else if healthy > min_healthy {
            kill.push(l.key.clone());
            healthy -= 1;
        } else {
            old_kept += 1;
        }
    }

    let room = (target.max_total() as usize).saturating_sub(new_kept + old_kept);
    let missing = n.saturating_sub(new_kept);
    let launch = if target.backing_off {
        0
    } else {
        missing.min(room) as u32
    };
    Step { kill, launch }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(key: u32, current: bool, healthy: bool, staged_at: u64) -> Live<u32> {
        Live {
            key,
            current,
            healthy,
            running: healthy,
            staged_at: Timestamp::from_millis(staged_at),
        }
    }

    fn target(instances: u32, min: f64, over: f64) -> Target {
        Target {
            instances,
            strategy: UpgradeStrategy {
                minimum_health_capacity: min,
                maximum_over_capacity: over,
            },
            kill_selection: KillSelection::YoungestFirst,
            backing_off: false,
        }
    }

    #[test]
    fn creation_scaling_and_deletion() {
        let t = target(3, 1.0, 1.0);
        assert_eq!(step::<u32>(&t, &[]).launch, 3);
        let one = [live(1, true, true, 1)];
        assert_eq!(step(&t, &one).launch, 2);
        // Down to one: the unhealthy one, then the youngest.
        let three = [
            live(1, true, true, 1),
            live(2, true, true, 2),
            live(3, true, false, 3),
        ];
        let s = step(&target(1, 1.0, 1.0), &three);
        assert_eq!((s.kill, s.launch), (vec![3, 2], 0));
        let mut oldest = target(2, 1.0, 1.0);
        oldest.kill_selection = KillSelection::OldestFirst;
        assert_eq!(step(&oldest, &three[..2]).kill, Vec::<u32>::new());
        assert_eq!(step(&target(1, 1.0, 1.0), &three[..2]).kill, vec![2]);
        let mut o1 = oldest;
        o1.instances = 1;
        assert_eq!(step(&o1, &three[..2]).kill, vec![1]);
        // Deleted: everything goes, old or new.
        let s = step(
            &target(0, 1.0, 1.0),
            &[live(1, true, true, 1), live(2, false, true, 2)],
        );
        assert_eq!(s.kill.len(), 2);
        // Backoff holds launches.
        let mut b = t;
        b.backing_off = true;
        assert_eq!(step::<u32>(&b, &[]).launch, 0);
    }

    #[test]
    fn a_rolling_update_keeps_the_minimum_healthy() {
        // 4 instances, keep 2 healthy (0.5), no over-capacity.
        let t = target(4, 0.5, 0.0);
        assert_eq!(t.min_healthy(), 2);
        let old: Vec<Live<u32>> = (0..4).map(|i| live(i, false, true, i as u64)).collect();
        let s = step(&t, &old);
        // Two old go; two new start in their room.
        assert_eq!(s.kill.len(), 2);
        assert_eq!(s.launch, 2);
        // While the two new are starting, the last two old stay.
        let mut now = vec![old[2].clone(), old[3].clone()];
        now.push(live(10, true, false, 10));
        now.push(live(11, true, false, 11));
        let s = step(&t, &now);
        assert_eq!((s.kill.len(), s.launch), (0, 0));
        // Once they are healthy, the old go and the rest start.
        now[2].healthy = true;
        now[3].healthy = true;
        let s = step(&t, &now);
        assert_eq!((s.kill.len(), s.launch), (2, 2));
    }

    #[test]
    fn full_capacity_updates_start_new_before_killing_old() {
        // minimumHealthCapacity 1, maximumOverCapacity 0: one extra at a time.
        let t = target(2, 1.0, 0.0);
        assert_eq!(t.max_total(), 3);
        let old: Vec<Live<u32>> = (0..2).map(|i| live(i, false, true, i as u64)).collect();
        let s = step(&t, &old);
        assert_eq!((s.kill.len(), s.launch), (0, 1));
        let mut now = old.clone();
        now.push(live(5, true, true, 5));
        let s = step(&t, &now);
        // One old goes and its replacement starts.
        assert_eq!((s.kill, s.launch), (vec![0], 1));
    }

    #[test]
    fn the_healthy_count_never_drops_below_the_minimum() {
        // Every combination of old/new, healthy or not, up to 6 instances.
        for n in 1..=4u32 {
            for mask in 0u32..(1 << 6) {
                for cur in 0u32..(1 << 6) {
                    let live: Vec<Live<u32>> = (0..6)
                        .map(|i| live(i, cur & (1 << i) != 0, mask & (1 << i) != 0, i as u64))
                        .collect();
                    for (min, over) in [(1.0, 1.0), (0.5, 0.0), (1.0, 0.0), (0.75, 0.25)] {
                        let t = target(n, min, over);
                        let s = step(&t, &live);
                        let healthy_before = live.iter().filter(|l| l.healthy).count() as u32;
                        let healthy_after = live
                            .iter()
                            .filter(|l| l.healthy && !s.kill.contains(&l.key))
                            .count() as u32;
                        let floor = t.min_healthy().min(healthy_before);
                        let extra_new = live.iter().filter(|l| l.current).count() as u32 > n;
                        if !extra_new {
                            assert!(
                                healthy_after >= floor,
                                "n={n} mask={mask:b} cur={cur:b} min={min}: {healthy_after} < {floor}"
                            );
                        }
                        let kept = live.len() - s.kill.len();
                        assert!(
                            kept + s.launch as usize <= t.max_total().max(kept as u32) as usize
                        );
                    }
                }
            }
        }
    }
}
