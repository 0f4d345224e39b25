//! Unit and property tests of the allocator.

use super::*;
use proptest::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use strata_proto::resources::Ranges;

fn agent(cpus: f64, mem: f64) -> AgentAlloc {
    AgentAlloc {
        active: true,
        hostname: "h".into(),
        attributes: vec![],
        total: Resources::new(cpus, mem).with_ports(Ranges::from_ranges([(31000, 31009)])),
        allocated: Resources::default(),
        ..AgentAlloc::default()
    }
}

fn ask(class: u8, cpus: f64, mem: f64, count: u32) -> PendingAsk {
    PendingAsk {
        class: ClassIdx(class),
        resources: Resources::new(cpus, mem),
        count,
        constraints: vec![],
        accept_revocable: false,
    }
}

fn fw(role: RoleIdx, demand: Vec<PendingAsk>) -> FrameworkAlloc {
    FrameworkAlloc {
        active: true,
        role,
        default_class: ClassIdx(2),
        demand,
        ..Default::default()
    }
}

fn total(agents: &[AgentAlloc]) -> Resources {
    let mut t = Resources::default();
    for a in agents.iter().filter(|a| a.active) {
        t.add(&a.total);
    }
    t
}

fn run(agents: &[AgentAlloc], fws: &[FrameworkAlloc], roles: &[RoleAlloc]) -> Solution {
    let classes = PriorityClasses::default();
    let t = total(agents);
    let min = Resources::new(0.01, 32.0);
    solve(&Problem {
        classes: &classes,
        agents,
        frameworks: fws,
        roles,
        cluster_total: &t,
        now: Timestamp::ZERO,
        start: 0,
        min_offer: &min,
    })
}

#[test]
fn drf_splits_evenly_between_equal_frameworks() {
    let agents: Vec<_> = (0..10).map(|_| agent(4.0, 4096.0)).collect();
    let fws = vec![
        fw(0, vec![ask(2, 1.0, 128.0, 100)]),
        fw(0, vec![ask(2, 1.0, 128.0, 100)]),
    ];
    let sol = run(&agents, &fws, &[RoleAlloc::default()]);
    assert_eq!(sol.placements, 40);
    let per_fw = |f| {
        sol.offers
            .iter()
            .filter(|o| o.framework == f)
            .map(|o| o.placements.len())
            .sum::<usize>()
    };
    assert_eq!(per_fw(0), 20);
    assert_eq!(per_fw(1), 20);
}

#[test]
fn weights_skew_the_split() {
    let agents: Vec<_> = (0..10).map(|_| agent(3.0, 4096.0)).collect();
    let fws = vec![
        fw(0, vec![ask(2, 1.0, 1.0, 100)]),
        fw(1, vec![ask(2, 1.0, 1.0, 100)]),
    ];
    let roles = vec![
        RoleAlloc {
            weight: 2.0,
            ..Default::default()
        },
        RoleAlloc::default(),
    ];
    let sol = run(&agents, &fws, &roles);
    let per_fw = |f| {
        sol.offers
            .iter()
            .filter(|o| o.framework == f)
            .map(|o| o.placements.len())
            .sum::<usize>()
    };
    assert_eq!(per_fw(0), 20);
    assert_eq!(per_fw(1), 10);
}

#[test]
fn higher_class_is_served_first() {
    let agents = vec![agent(2.0, 1024.0)];
    // Framework 0 (lower share would win by DRF) asks at batch; framework 1 at service.
    let fws = vec![
        fw(0, vec![ask(2, 1.0, 1.0, 2)]),
        fw(0, vec![ask(1, 1.0, 1.0, 2)]),
    ];
    let sol = run(&agents, &fws, &[RoleAlloc::default()]);
    assert_eq!(sol.offers.len(), 1);
    assert_eq!(sol.offers[0].framework, 1);
    assert_eq!(sol.offers[0].class, ClassIdx(1));
}

#[test]
fn quota_limits_a_role() {
    let agents: Vec<_> = (0..4).map(|_| agent(4.0, 4096.0)).collect();
    let fws = vec![fw(0, vec![ask(2, 1.0, 1.0, 100)])];
    let roles = vec![RoleAlloc {
        quota_limit: Some(Resources::new(3.0, 100000.0)),
        ..Default::default()
    }];
    let sol = run(&agents, &fws, &roles);
    assert_eq!(sol.placements, 3);
}

#[test]
fn whole_agent_offers_for_frameworks_without_demand() {
    let agents = vec![agent(2.0, 1024.0), agent(2.0, 1024.0)];
    let fws = vec![fw(0, vec![]), fw(0, vec![])];
    let sol = run(&agents, &fws, &[RoleAlloc::default()]);
    assert_eq!(sol.offers.len(), 2);
    assert_ne!(sol.offers[0].framework, sol.offers[1].framework);
    assert_eq!(sol.offers[0].resources.cpus, Scalar::from_units(2));
    assert_eq!(sol.offers[0].resources.ports.count(), 10);
}

#[test]
fn ports_are_assigned_without_overlap() {
    let agents = vec![agent(8.0, 8192.0)];
    let mut a = ask(2, 1.0, 1.0, 4);
    a.resources.ports = Ranges::from_ranges([(0, 1)]); // two ports each
    let fws = vec![fw(0, vec![a])];
    let sol = run(&agents, &fws, &[RoleAlloc::default()]);
    // 10 ports on the agent, 2 per task: 4 tasks fit.
    assert_eq!(sol.placements, 4);
    let mut seen = Ranges::empty();
    for p in &sol.offers[0].placements {
        assert_eq!(p.resources.ports.count(), 2);
        assert!(seen.difference(&p.resources.ports) == seen);
        seen = seen.union(&p.resources.ports);
    }
}

#[test]
fn unique_hostname_spreads() {
    let mut agents: Vec<_> = (0..3).map(|_| agent(8.0, 8192.0)).collect();
    for (i, a) in agents.iter_mut().enumerate() {
        a.hostname = format!("h{i}");
    }
    let mut a = ask(2, 1.0, 1.0, 5);
    a.constraints = vec![Constraint {
        field: "hostname".into(),
        op: ConstraintOp::Unique,
        value: String::new(),
    }];
    let sol = run(&agents, &[fw(0, vec![a])], &[RoleAlloc::default()]);
    assert_eq!(sol.placements, 3);
    assert_eq!(sol.unplaced, vec![(0, 0, 2)]);
}

#[test]
fn revocable_cpus_only_after_regular_room_and_only_below_the_lender() {
    // Agent 0: full, its service tasks (class 1) lend 3 idle cpus.
    // Agent 1: one regular cpu free.
    let mut lender = agent(4.0, 4096.0);
    lender.allocated = Resources::new(4.0, 512.0);
    lender.lent = vec![(ClassIdx(1), Scalar::from_milli(3_000))];
    let mut small = agent(1.0, 4096.0);
    small.allocated = Resources::default();
    let agents = vec![lender, small];
    let mut batch = ask(2, 1.0, 128.0, 5);
    batch.accept_revocable = true;
    let mut service = ask(1, 1.0, 128.0, 1);
    service.accept_revocable = true;
    let fws = vec![fw(0, vec![batch]), fw(0, vec![service])];
    let sol = run(&agents, &fws, &[RoleAlloc::default()]);
    // The service takes the regular cpu; batch gets the 3 lent cpus, no more.
    let on = |f: FrameworkIdx, a: AgentIdx| {
        sol.offers
            .iter()
            .find(|o| o.framework == f && o.agent == a)
            .cloned()
    };
    let s = on(1, 1).expect("service placed on regular room");
    assert_eq!(s.revocable, Scalar::ZERO);
    let b = on(0, 0).expect("batch placed on lent cpus");
    assert_eq!(b.revocable, Scalar::from_milli(3_000));
    assert_eq!(b.resources.cpus, Scalar::ZERO);
    assert_eq!(b.resources.mem, Resources::new(0.0, 384.0).mem);
    assert_eq!(b.placements.len(), 3);
    assert!(
        b.placements
            .iter()
            .all(|p| p.revocable == Scalar::from_milli(1_000))
    );
    assert_eq!(sol.unplaced, vec![(0, 0, 2)]);
    // Without the service's regular room, the service borrows nothing.
    let fws = vec![
        fw(0, vec![]),
        fw(
            0,
            vec![{
                let mut s = ask(1, 2.0, 128.0, 1);
                s.accept_revocable = true;
                s
            }],
        ),
    ];
    let sol = run(&agents, &fws, &[RoleAlloc::default()]);
    assert!(
        sol.offers.iter().all(|o| o.revocable.is_zero()),
        "{:?}",
        sol.offers
    );
}

fn arb_agent() -> impl Strategy<Value = AgentAlloc> {
    (1u32..16, 1u32..64, 0u32..16, 0u32..64, any::<bool>()).prop_map(|(c, m, uc, um, active)| {
        let total = Resources::new(c as f64, m as f64 * 128.0);
        let allocated = Resources::new((uc.min(c)) as f64, (um.min(m)) as f64 * 128.0);
        AgentAlloc {
            active: active || c > 8,
            hostname: format!("h{c}"),
            attributes: vec![],
            total,
            allocated,
            ..AgentAlloc::default()
        }
    })
}

fn arb_fw(n_agents: usize) -> impl Strategy<Value = FrameworkAlloc> {
    (
        0u32..3,
        proptest::collection::vec((0u8..4, 1u32..4, 1u32..8, 0u32..6), 0..3),
        any::<bool>(),
        proptest::collection::vec(0..n_agents.max(1) as u32, 0..3),
    )
        .prop_map(|(role, asks, suppressed, filtered)| FrameworkAlloc {
            active: true,
            role,
            suppressed,
            default_class: ClassIdx(2),
            demand: asks
                .into_iter()
                .map(|(c, cpus, mem, count)| ask(c, cpus as f64 * 0.5, mem as f64 * 100.0, count))
                .collect(),
            filters: filtered
                .into_iter()
                .map(|a| (a, Timestamp::from_millis(1_000)))
                .collect(),
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn solutions_respect_capacity_filters_and_classes(
        agents in proptest::collection::vec(arb_agent(), 1..12),
        fws_seed in proptest::collection::vec(arb_fw(12), 1..5),
        quota in proptest::option::of(1u32..10),
    ) {
        let n = agents.len() as u32;
        let fws: Vec<FrameworkAlloc> = fws_seed.into_iter().map(|mut f| {
            f.filters.retain(|a, _| *a < n);
            f
        }).collect();
        let roles = vec![
            RoleAlloc { quota_limit: quota.map(|q| Resources::new(q as f64, 1e9)), ..Default::default() },
            RoleAlloc { weight: 2.0, ..Default::default() },
            RoleAlloc::default(),
        ];
        let sol = run(&agents, &fws, &roles);

        // No agent is given more than it has free, ports included.
        let mut per_agent: HashMap<AgentIdx, Resources> = HashMap::default();
        let mut keys = std::collections::HashSet::new();
        for o in &sol.offers {
            prop_assert!(keys.insert((o.framework, o.agent, o.class)), "one offer per (framework, agent, class)");
            let agent = &agents[o.agent as usize];
            prop_assert!(agent.active);
            let fw = &fws[o.framework as usize];
            prop_assert!(!fw.suppressed);
            prop_assert!(!fw.filters_agent(o.agent, Timestamp::ZERO));
            let sum = per_agent.entry(o.agent).or_default();
            prop_assert!(sum.ports.difference(&o.resources.ports) == sum.ports, "ports offered twice");
            sum.add(&o.resources);
            let placed: Resources = o.placements.iter().fold(Resources::default(), |acc, p| acc.plus(&p.resources));
            if !o.placements.is_empty() {
                prop_assert_eq!(&placed, &o.resources);
            }
        }
        for (a, sum) in &per_agent {
            prop_assert!(agents[*a as usize].free().contains(sum), "agent {} over-allocated", a);
        }
        // Placements never exceed demand.
        for (fi, fw) in fws.iter().enumerate() {
            for (ai, ask) in fw.demand.iter().enumerate() {
                let placed = sol.offers.iter()
                    .filter(|o| o.framework == fi as u32)
                    .flat_map(|o| o.placements.iter())
                    .filter(|p| p.ask == ai)
                    .count() as u32;
                prop_assert!(placed <= ask.count);
            }
        }
        // Quota limit holds for role 0.
        if let Some(q) = quota {
            let role0: i64 = sol.offers.iter().filter(|o| fws[o.framework as usize].role == 0).map(|o| o.resources.cpus.milli()).sum();
            prop_assert!(role0 <= q as i64 * 1000);
        }
        // Highest pending class first: an unplaced ask never fits in what a
        // lower class got on an agent plus what is left free there.
        for &(f, ai, _) in &sol.unplaced {
            let want = &fws[f as usize].demand[ai];
            if quota.is_some() && fws[f as usize].role == 0 { continue; }
            for o in sol.offers.iter().filter(|o| o.class > want.class) {
                if fws[f as usize].filters_agent(o.agent, Timestamp::ZERO) { continue; }
                let mut room = agents[o.agent as usize].free();
                room.subtract_saturating(&per_agent[&o.agent]);
                room.add(&o.resources);
                prop_assert!(!room.fits_shape(&want.resources),
                    "class {:?} ask unplaced while class {:?} got agent {}", want.class, o.class, o.agent);
            }
        }
    }
}
