//! The etcd registry against a real etcd (Debian's `etcd-server`), one
//! member on free loopback ports per test. Skipped, saying so, when there
//! is no `etcd` on the PATH, unless `STRATA_REQUIRE_ETCD` is set (as
//! `.ci/run` sets it), where it fails instead.

use super::*;
use crate::master::AgentRecord;
use strata_proto::resources::Resources;

/// A member for one test, or `None` (the test returns) without etcd.
async fn etcd() -> Option<(super::member::EtcdMember, tempfile::TempDir)> {
    use super::member::EtcdMember;
    let dir = tempfile::tempdir().unwrap();
    let started = EtcdMember::start(&dir.path().join("data")).await;
    EtcdMember::or_skip(started, "etcd registry").map(|m| (m, dir))
}

fn member(id: &str) -> LeaderInfo {
    LeaderInfo {
        id: id.into(),
        advertise: format!("{id}:5050"),
        since_ms: 1,
    }
}

fn agent(id: &str) -> PersistOp {
    PersistOp::PutAgent(AgentRecord {
        id: id.into(),
        hostname: "h".into(),
        address: "10.0.0.2:5051".into(),
        resources: Resources::new(2.0, 512.0),
        attributes: vec![],
        drain: None,
    })
}

const TTL: Duration = Duration::from_secs(2);

#[test]
fn store_urls() {
    let u: EtcdUrl = "etcd://h1:2379,h2:2379,h3:2379".parse().unwrap();
    assert_eq!(
        u.endpoints,
        vec!["http://h1:2379", "http://h2:2379", "http://h3:2379"]
    );
    assert_eq!(u.prefix, "/strata");
    let u: EtcdUrl = "etcd://h1:2379/prod/strata/".parse().unwrap();
    assert_eq!(u.prefix, "/prod/strata");
    for bad in ["h1:2379", "etcd://", "etcd:///x", "etcd://h1:2379/"] {
        let e = bad.parse::<EtcdUrl>().unwrap_err();
        assert!(e.to_string().contains(bad), "{bad}: {e}");
    }
}

#[tokio::test]
async fn one_leads_the_other_stands_by_and_takes_over_with_a_later_epoch() {
    let Some((etcd, _dir)) = etcd().await else {
        return;
    };
    let url = etcd.url("/test");
    let mut r1 = EtcdRegistry::connect(&url).await.unwrap();
    let mut r2 = EtcdRegistry::connect(&url).await.unwrap();
    // Nothing is written before an election.
    assert!(matches!(
        r1.apply(&[agent("a0")]).await,
        Err(RegistryError::NotLeader)
    ));
    let l1 = r1.campaign(&member("m1"), TTL, |_| {}).await.unwrap();
    assert!(l1.held());
    r1.apply(&[agent("a1")]).await.unwrap();
    r1.put_document("services", b"{\"apps\":[]}").await.unwrap();
    assert_eq!(r2.leader().await.unwrap(), Some(member("m1")));

    // The second stands by while the first leads.
    let mut standby = tokio::spawn(async move {
        let mut seen = Vec::new();
        let l2 = r2
            .campaign(&member("m2"), TTL, |l| seen.push(l))
            .await
            .unwrap();
        // It saw the first leader while it stood by.
        assert_eq!(seen.first(), Some(&Some(member("m1"))));
        (r2, l2)
    });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut standby).await;
    assert!(early.is_err(), "a second leader was elected");

    // The first resigns: the second leads at once, with a later epoch.
    r1.resign(&l1).await.unwrap();
    let (r2, l2) = tokio::time::timeout(Duration::from_secs(5), standby)
        .await
        .expect("the standby was not elected within 5 s")
        .unwrap();
    assert!(l2.epoch > l1.epoch, "{} > {}", l2.epoch, l1.epoch);
    assert_eq!(r2.leader().await.unwrap(), Some(member("m2")));

    // The old leader's writes are refused; the new one's go through, and it
    // reads everything its predecessor wrote.
    assert!(matches!(
        r1.apply(&[agent("stale")]).await,
        Err(RegistryError::NotLeader)
    ));
    r2.apply(&[agent("a2")]).await.unwrap();
    let snap = r2.load().await.unwrap();
    let ids: Vec<&str> = snap.agents.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, vec!["a1", "a2"]);
    assert_eq!(
        r2.document("services").await.unwrap().as_deref(),
        Some(&b"{\"apps\":[]}"[..])
    );
}

#[tokio::test]
async fn a_leader_whose_lease_is_gone_learns_it_and_is_fenced_out() {
    let Some((etcd, _dir)) = etcd().await else {
        return;
    };
    let url = etcd.url("/test");
    let mut r1 = EtcdRegistry::connect(&url).await.unwrap();
    let mut r2 = EtcdRegistry::connect(&url).await.unwrap();
    let mut l1 = r1.campaign(&member("m1"), TTL, |_| {}).await.unwrap();
    // The lease ends behind the leader's back (as when it was paused or
    // cut off past its time to live): etcd deletes the key.
    let other = EtcdRegistry::connect(&url).await.unwrap();
    other.client.lease_client().revoke(l1.lease).await.unwrap();
    let l2 = r2.campaign(&member("m2"), TTL, |_| {}).await.unwrap();
    assert!(l2.epoch > l1.epoch);
    // The old leader still thinks it leads until its keep-alive says
    // otherwise; its writes are refused either way.
    assert!(matches!(
        r1.apply(&[agent("stale")]).await,
        Err(RegistryError::Fenced { epoch }) if epoch == l1.epoch
    ));
    tokio::time::timeout(TTL * 2, l1.lost.wait_for(|lost| *lost))
        .await
        .expect("the old leader did not learn it lost its lease")
        .unwrap();
    assert!(r2.load().await.unwrap().agents.is_empty());
}
