//! The task scheduler in simulated time with simulated executors.

use super::*;

fn ex(n: &str) -> ExecutorId {
    ExecutorId::new(n)
}

fn job() -> JobId {
    JobId::new("j")
}

const S0: StageId = StageId::new(0);
const S1: StageId = StageId::new(1);
const S2: StageId = StageId::new(2);

/// Stage 0 (`maps` tasks) → stage 1 (`reduces` tasks, the final stage).
fn two_stage(maps: u32, reduces: u32) -> Vec<StageSpec> {
    vec![
        StageSpec {
            id: S0,
            inputs: vec![],
            tasks: maps,
            plan: Arc::new(vec![0]),
        },
        StageSpec {
            id: S1,
            inputs: vec![S0],
            tasks: reduces,
            plan: Arc::new(vec![1]),
        },
    ]
}

fn finished(bytes: u64, parts: usize) -> Outcome {
    Outcome::Finished {
        partition_bytes: PartitionId::all(parts as u32).map(|p| (p, bytes)).collect(),
        rows: 1,
        bytes,
    }
}

fn sched(execs: &[(&str, u32)]) -> TaskScheduler {
    let mut s = TaskScheduler::new(Policy {
        speculation: None,
        ..Policy::default()
    });
    for (id, slots) in execs {
        s.add_executor(ex(id), format!("{id}:1"), *slots);
    }
    s
}

/// Finishes every launch in order; returns the effects.
fn finish_all(s: &mut TaskScheduler, launches: &[Launch], now: Instant) -> Vec<Effect> {
    let mut effects = Vec::new();
    for l in launches {
        effects.extend(s.on_status(&l.executor, &l.task, finished(10, 4), now));
    }
    effects
}

#[test]
fn stages_run_in_order_and_fill_free_slots() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 2), ("b", 2)]);
    s.submit(job(), two_stage(6, 2));
    let first = s.assign(t0);
    assert_eq!(first.len(), 4, "four slots, four map tasks");
    assert!(first.iter().all(|l| l.task.stage == S0));
    let per_exec = first.iter().filter(|l| l.executor == ex("a")).count();
    assert_eq!(per_exec, 2, "spread across executors");
    assert!(s.assign(t0).is_empty(), "no free slot");
    assert!(finish_all(&mut s, &first, t0).is_empty());
    let second = s.assign(t0);
    assert_eq!(
        second.len(),
        2,
        "the last two map tasks, not the reduce stage"
    );
    assert!(second.iter().all(|l| l.task.stage == S0));
    finish_all(&mut s, &second, t0);
    let reduces = s.assign(t0);
    assert_eq!(reduces.len(), 2);
    assert!(reduces.iter().all(|l| l.task.stage == S1));
    assert_eq!(reduces[0].inputs.len(), 1);
    assert_eq!(reduces[0].inputs[0].1.len(), 6, "every map output is named");
    let effects = finish_all(&mut s, &reduces, t0);
    assert_eq!(effects, vec![Effect::OutputsReady(job())]);
    assert_eq!(s.final_outputs(&job()).unwrap().len(), 2);
    let m = s.metrics(&job());
    assert_eq!((m[0].launched, m[0].recomputed, m[1].launched), (6, 0, 2));
}

#[test]
fn a_lost_executor_reruns_only_its_needed_map_outputs() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 2), ("b", 2)]);
    s.submit(job(), two_stage(4, 2));
    let maps = s.assign(t0);
    finish_all(&mut s, &maps, t0);
    let on_b = maps.iter().filter(|l| l.executor == ex("b")).count() as u32;
    assert_eq!(on_b, 2);
    let reduces = s.assign(t0);
    assert_eq!(reduces.len(), 2);
    // b dies while the reduce stage runs.
    s.remove_executor(&ex("b"));
    assert_eq!(s.busy(&ex("a")), 1);
    // A reduce attempt on a fails fetching from b: not counted as a failure.
    let on_a = reduces.iter().find(|l| l.executor == ex("a")).unwrap();
    let effects = s.on_status(
        &ex("a"),
        &on_a.task,
        Outcome::FetchFailed {
            stage: S0,
            executor: ex("b"),
            error: "connection refused".into(),
        },
        t0,
    );
    assert!(effects.is_empty());
    // Only b's two map outputs run again, before any reduce.
    let rerun = s.assign(t0);
    assert_eq!(rerun.len(), 2);
    assert!(
        rerun
            .iter()
            .all(|l| l.task.stage == S0 && l.executor == ex("a"))
    );
    assert!(rerun.iter().all(|l| l.task.attempt == 1));
    finish_all(&mut s, &rerun, t0);
    let reduces = s.assign(t0);
    assert_eq!(reduces.len(), 2);
    assert!(
        reduces
            .iter()
            .all(|l| l.inputs[0].1.iter().all(|(_, e, _)| *e == ex("a")))
    );
    let effects = finish_all(&mut s, &reduces, t0);
    assert_eq!(effects, vec![Effect::OutputsReady(job())]);
    let m = s.metrics(&job());
    assert_eq!(m[0].recomputed, 2);
    assert_eq!(m[0].launched, 6);
    assert_eq!(m[1].failed, 0);
}

#[test]
fn outputs_no_longer_needed_are_not_recomputed() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 1), ("b", 1)]);
    let mut stages = two_stage(2, 2);
    stages.push(StageSpec {
        id: S2,
        inputs: vec![S1],
        tasks: 1,
        plan: Arc::new(vec![2]),
    });
    s.submit(job(), stages);
    for _ in 0..2 {
        let l = s.assign(t0);
        finish_all(&mut s, &l, t0);
    }
    // Stages 0 and 1 are complete; the final stage runs on one executor.
    let fin = s.assign(t0);
    assert_eq!(fin.len(), 1);
    let other = if fin[0].executor == ex("a") { "b" } else { "a" };
    // Losing the other executor loses stage 1 output there, which the
    // running final stage needs; stage 0's lost output is needed again
    // only because stage 1 must re-run.
    s.remove_executor(&ex(other));
    let again = s.assign(t0);
    assert_eq!(again.len(), 0, "the only slot is busy with the final task");
    let effects = s.on_status(
        &fin[0].executor,
        &fin[0].task,
        Outcome::FetchFailed {
            stage: S1,
            executor: ex(other),
            error: "gone".into(),
        },
        t0,
    );
    assert!(effects.is_empty());
    let l = s.assign(t0);
    assert_eq!(
        l.iter().map(|l| l.task.stage).collect::<Vec<_>>(),
        vec![S0],
        "stage 1's lost partition needs stage 0's lost partition first"
    );
}

#[test]
fn failures_retry_then_fail_the_job() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 1)]);
    s.submit(job(), two_stage(1, 1));
    for attempt in 0..4 {
        let l = s.assign(t0);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].task.attempt, attempt);
        let effects = s.on_status(&ex("a"), &l[0].task, Outcome::Failed("boom".into()), t0);
        if attempt < 3 {
            assert!(effects.is_empty());
        } else {
            assert!(
                matches!(&effects[..], [Effect::JobFailed(_, why)] if why.contains("failed 4 times") && why.contains("boom")),
                "{effects:?}"
            );
        }
    }
    assert!(s.state(&job()).is_none(), "a failed job is forgotten");
    assert_eq!(s.busy(&ex("a")), 0);
}

#[test]
fn a_query_error_fails_the_job_at_its_first_attempt() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 1)]);
    s.submit(job(), two_stage(1, 1));
    let l = s.assign(t0);
    let outcome = Outcome::QueryError("Cast error: cannot cast 'x' to Int32".into());
    let effects = s.on_status(&ex("a"), &l[0].task, outcome, t0);
    assert!(
        matches!(&effects[..], [Effect::JobFailed(_, why)] if why.contains("p0 failed: Cast error")),
        "{effects:?}"
    );
    assert!(s.state(&job()).is_none());
    assert_eq!(s.busy(&ex("a")), 0);
}

#[test]
fn a_straggler_gets_a_speculative_copy_that_wins() {
    let t0 = Instant::now();
    let mut s = TaskScheduler::new(Policy::default());
    s.add_executor(ex("a"), "a:1".into(), 2);
    s.add_executor(ex("b"), "b:1".into(), 2);
    s.submit(job(), two_stage(4, 1));
    let maps = s.assign(t0);
    assert_eq!(maps.len(), 4);
    let t1 = t0 + Duration::from_millis(100);
    for l in &maps[..3] {
        s.on_status(&l.executor, &l.task, finished(1, 1), t1);
    }
    let slow = &maps[3];
    assert!(
        s.speculate(t0 + Duration::from_millis(400)).is_empty(),
        "not yet a straggler"
    );
    let copies = s.speculate(t0 + Duration::from_secs(2));
    assert_eq!(copies.len(), 1);
    let copy = &copies[0];
    assert!(copy.speculative);
    assert_eq!(copy.task.partition, slow.task.partition);
    assert_ne!(
        copy.executor, slow.executor,
        "never on the straggler's executor"
    );
    assert!(
        s.speculate(t0 + Duration::from_secs(3)).is_empty(),
        "one copy only"
    );
    let effects = s.on_status(
        &copy.executor,
        &copy.task,
        finished(1, 1),
        t0 + Duration::from_secs(2),
    );
    assert_eq!(
        effects,
        vec![Effect::Cancel(slow.executor.clone(), slow.task.clone())]
    );
    // The loser's late status changes nothing.
    assert!(
        s.on_status(
            &slow.executor,
            &slow.task,
            finished(1, 1),
            t0 + Duration::from_secs(3)
        )
        .is_empty()
    );
    let m = s.metrics(&job());
    assert_eq!(
        (m[0].speculative, m[0].speculative_wins, m[0].done),
        (1, 1, 4)
    );
}

#[test]
fn cancel_cancels_running_attempts() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 2)]);
    s.submit(job(), two_stage(3, 1));
    let l = s.assign(t0);
    let effects = s.abort(&job(), JobState::Cancelled);
    assert_eq!(effects.len(), l.len());
    assert!(effects.iter().all(|e| matches!(e, Effect::Cancel(..))));
    assert_eq!(s.busy(&ex("a")), 0);
    assert!(s.assign(t0).is_empty());
}

#[test]
fn tasks_go_where_their_input_is() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 1), ("b", 1)]);
    s.submit(job(), two_stage(2, 2));
    let maps = s.assign(t0);
    // Map 0's output is all partition 0, map 1's all partition 1.
    for l in &maps {
        let mut pb = vec![0, 0];
        pb[l.task.partition.index()] = 100;
        s.on_status(
            &l.executor,
            &l.task,
            Outcome::Finished {
                partition_bytes: PartitionId::all(2).zip(pb).collect(),
                rows: 1,
                bytes: 100,
            },
            t0,
        );
    }
    let reduces = s.assign(t0);
    for r in &reduces {
        let map = maps
            .iter()
            .find(|m| m.task.partition == r.task.partition)
            .unwrap();
        assert_eq!(
            r.executor, map.executor,
            "reduce {} runs beside its input",
            r.task.partition
        );
    }
}

/// Many seeds: random losses, failures and joins of executors; every job
/// ends with every final partition done, and no slot is ever over-used.
#[test]
fn random_executor_churn_always_completes() {
    for seed in 0..200u64 {
        let mut rng = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut now = Instant::now();
        let mut s = TaskScheduler::new(Policy {
            max_attempts: 1000,
            max_fetch_failures: 1000,
            speculation: Some(Speculation {
                min_runtime: Duration::from_millis(10),
                ..Speculation::default()
            }),
            ..Policy::default()
        });
        let mut names = 0;
        for _ in 0..3 {
            names += 1;
            s.add_executor(ex(&format!("e{names}")), format!("e{names}:1"), 2);
        }
        let mut stages = two_stage(5, 3);
        stages.push(StageSpec {
            id: S2,
            inputs: vec![S0, S1],
            tasks: 2,
            plan: Arc::new(vec![2]),
        });
        s.submit(job(), stages);
        let mut running: Vec<Launch> = Vec::new();
        let mut done = false;
        for _step in 0..10_000 {
            now += Duration::from_millis(1 + next(20));
            running.extend(s.assign(now));
            running.extend(s.speculate(now));
            for e in s.executors().cloned().collect::<Vec<_>>() {
                let slots = 2 * Policy::default().pipeline;
                assert!(s.busy(&e) <= slots, "seed {seed}: over-used {e}");
            }
            match next(10) {
                0 if s.executors().count() > 1 => {
                    let victims: Vec<_> = s.executors().cloned().collect();
                    let v = victims[next(victims.len() as u64) as usize].clone();
                    s.remove_executor(&v);
                    running.retain(|l| l.executor != v);
                }
                1 => {
                    names += 1;
                    s.add_executor(ex(&format!("e{names}")), format!("e{names}:1"), 2);
                }
                _ => {}
            }
            if running.is_empty() {
                continue;
            }
            let i = next(running.len() as u64) as usize;
            let l = running.swap_remove(i);
            let outcome = match next(12) {
                0 => Outcome::Failed("flaky".into()),
                1 => {
                    let input = l
                        .inputs
                        .first()
                        .and_then(|(st, outs)| outs.first().map(|(_, e, _)| (*st, e.clone())));
                    match input {
                        Some((stage, executor)) => Outcome::FetchFailed {
                            stage,
                            executor,
                            error: "x".into(),
                        },
                        None => finished(5, 3),
                    }
                }
                _ => finished(5, 3),
            };
            for e in s.on_status(&l.executor, &l.task, outcome, now) {
                match e {
                    Effect::OutputsReady(_) => done = true,
                    Effect::Cancel(ex, t) => running.retain(|r| !(r.executor == ex && r.task == t)),
                    Effect::JobFailed(_, why) => panic!("seed {seed}: {why}"),
                }
            }
            if done {
                break;
            }
        }
        assert!(done, "seed {seed}: the job never completed");
        let outs = s
            .final_outputs(&job())
            .expect("final outputs on live executors");
        assert_eq!(outs.len(), 2, "seed {seed}");
    }
}

#[test]
fn short_tasks_are_queued_on_executors_to_hide_the_round_trip() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 1), ("b", 1)]);
    s.submit(job(), two_stage(100, 1));
    let mut done = 0;
    // Until tasks are known to be short, one per slot.
    while done < 8 {
        let l = s.assign(t0);
        assert_eq!(l.len(), 2, "one per slot");
        done += 2;
        for x in &l {
            s.on_status(
                &x.executor,
                &x.task,
                finished(1, 1),
                t0 + Duration::from_millis(1),
            );
        }
    }
    // Then several per slot.
    let l = s.assign(t0);
    assert_eq!(l.len(), 2 * Policy::default().pipeline as usize);
    // Long tasks never queue.
    let mut s = sched(&[("a", 1)]);
    s.submit(job(), two_stage(100, 1));
    for _ in 0..10 {
        let l = s.assign(t0);
        assert_eq!(l.len(), 1);
        s.on_status(
            &l[0].executor,
            &l[0].task,
            finished(1, 1),
            t0 + Duration::from_secs(1),
        );
    }
}

#[test]
fn queues_are_refilled_in_batches_once_half_empty() {
    let t0 = Instant::now();
    let deep = Policy::default().pipeline as usize;
    let mut s = sched(&[("a", 1)]);
    s.submit(job(), two_stage(1000, 1));
    // Learn that the tasks are short.
    for _ in 0..8 {
        let l = s.assign(t0);
        assert_eq!(l.len(), 1);
        s.on_status(&l[0].executor, &l[0].task, finished(1, 1), t0);
    }
    let mut queued = s.assign(t0);
    assert_eq!(queued.len(), deep, "a full queue");
    // Finishing fewer than half sends nothing more...
    for _ in 0..deep / 2 - 1 {
        let x = queued.remove(0);
        s.on_status(&x.executor, &x.task, finished(1, 1), t0);
        assert!(
            s.assign(t0).is_empty(),
            "no refill of a queue over half full"
        );
    }
    // ...the half-way mark refills it whole, in one batch.
    let x = queued.remove(0);
    s.on_status(&x.executor, &x.task, finished(1, 1), t0);
    let refill = s.assign(t0);
    assert_eq!(refill.len(), deep / 2);
    assert_eq!(s.busy(&ex("a")) as usize, deep);
}

#[test]
fn empty_final_partitions_are_not_fetched() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 4)]);
    s.submit(
        job(),
        vec![StageSpec {
            id: S0,
            inputs: vec![],
            tasks: 3,
            plan: Arc::new(vec![0]),
        }],
    );
    let l = s.assign(t0);
    assert_eq!(l.len(), 3);
    s.on_status(&l[0].executor, &l[0].task, finished(5, 1), t0);
    s.on_status(&l[1].executor, &l[1].task, finished(0, 0), t0);
    let effects = s.on_status(&l[2].executor, &l[2].task, finished(7, 1), t0);
    assert_eq!(effects, vec![Effect::OutputsReady(job())]);
    let outs = s.final_outputs(&job()).unwrap();
    let parts: Vec<PartitionId> = outs.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(parts, vec![l[0].task.partition, l[2].task.partition]);
}

#[test]
fn a_retiring_executor_takes_no_new_attempts_and_is_let_go_once_idle() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 2), ("b", 2)]);
    s.submit(job(), two_stage(8, 2));
    let first = s.assign(t0);
    assert_eq!(first.len(), 4);
    // a's agent drains: what runs there finishes, nothing new goes there.
    assert!(s.retire_executor(&ex("a")));
    assert!(!s.retire_executor(&ex("nobody")));
    assert!(s.retired_idle().is_empty(), "a still runs two attempts");
    finish_all(&mut s, &first, t0);
    assert_eq!(s.retired_idle(), vec![ex("a")]);
    let second = s.assign(t0);
    assert!(!second.is_empty());
    assert!(second.iter().all(|l| l.executor == ex("b")), "{second:?}");
    // Let go, its map outputs are lost and run again elsewhere.
    s.remove_executor(&ex("a"));
    finish_all(&mut s, &second, t0);
    let maps = |ls: &[Launch]| ls.iter().filter(|l| l.task.stage == S0).count();
    let mut map_attempts = maps(&first) + maps(&second);
    loop {
        let next = s.assign(t0);
        if next.is_empty() {
            break;
        }
        assert!(next.iter().all(|l| l.executor == ex("b")));
        map_attempts += maps(&next);
        finish_all(&mut s, &next, t0);
    }
    // Eight maps, and again the two whose outputs were on a, only they.
    assert_eq!(map_attempts, 10);
    assert_eq!(s.state(&job()), Some(&JobState::OutputsReady));
}

/// One stage of `tasks` tasks.
fn one_stage(tasks: u32) -> Vec<StageSpec> {
    vec![StageSpec {
        id: S0,
        inputs: vec![],
        tasks,
        plan: Arc::new(vec![0]),
    }]
}

#[test]
fn a_job_submitted_behind_a_long_one_gets_the_next_free_slot() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 2)]);
    let (long, short) = (JobId::new("long"), JobId::new("short"));
    s.submit(long.clone(), one_stage(10));
    let first = s.assign(t0);
    assert_eq!(first.len(), 2, "the long job takes both slots");
    s.submit(short.clone(), one_stage(2));
    assert!(s.assign(t0).is_empty(), "no slot is free");
    // One of the long job's tasks ends: its slot goes to the short job,
    // though the long one has eight tasks pending.
    s.on_status(&first[0].executor, &first[0].task, finished(10, 1), t0);
    let next = s.assign(t0);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].task.job, short);
    // Now each runs one: the next slot goes to the earlier job.
    s.on_status(&first[1].executor, &first[1].task, finished(10, 1), t0);
    let next = s.assign(t0);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].task.job, long);
}

#[test]
fn jobs_submitted_together_split_the_slots() {
    let t0 = Instant::now();
    let mut s = sched(&[("a", 2), ("b", 2)]);
    for name in ["x", "y"] {
        s.submit(JobId::new(name), one_stage(8));
    }
    let launches = s.assign(t0);
    assert_eq!(launches.len(), 4);
    for name in ["x", "y"] {
        let theirs = launches
            .iter()
            .filter(|l| l.task.job == JobId::new(name))
            .count();
        assert_eq!(theirs, 2, "job {name} has half the slots");
    }
}
