//! A real etcd member for the high-availability tests (Debian's
//! `etcd-server`, started by `strata_manager`'s test helper), its data
//! under the test's temp dir. Skipped, saying so, when there is no `etcd`
//! on the PATH, unless `STRATA_REQUIRE_ETCD` is set (as `.ci/run` sets it).

use super::*;

pub use strata_manager::registry::etcd::member::EtcdMember;

/// Starts a one-member etcd for `test` under `env`; `None` (the test
/// should return) without etcd.
pub async fn start_etcd(env: &Env, test: &str) -> Option<EtcdMember> {
    start_etcd_in(env, test, None).await
}

/// Starts a one-member etcd on `host` (its own address), or on loopback.
pub async fn start_etcd_in(env: &Env, test: &str, host: Option<&Host>) -> Option<EtcdMember> {
    let started = match host {
        None => EtcdMember::start(&env.path("etcd")).await,
        Some(h) => {
            let wrapper: Vec<String> = ["ip", "netns", "exec", &h.netns].map(str::to_owned).into();
            EtcdMember::start_in(&env.path("etcd"), &h.ip.to_string(), &wrapper).await
        }
    };
    EtcdMember::or_skip(started, test)
}

/// Starts a three-member etcd cluster, one member on each of `hosts`;
/// `None` (the test should return) without etcd.
pub async fn start_etcd_cluster(env: &Env, test: &str, hosts: &[&Host]) -> Option<Vec<EtcdMember>> {
    let hosts: Vec<(String, Vec<String>)> = hosts
        .iter()
        .map(|h| {
            (
                h.ip.to_string(),
                ["ip", "netns", "exec", &h.netns].map(str::to_owned).into(),
            )
        })
        .collect();
    match EtcdMember::start_cluster(&env.path("etcd"), &hosts).await {
        Ok(Some(m)) => Some(m),
        Ok(None) => EtcdMember::or_skip(Ok(None), test).map(|m| vec![m]),
        Err(e) => panic!("{test}: cannot start the etcd cluster: {e}"),
    }
}
