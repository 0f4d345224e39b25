//! Docker containerizer tests against the real Docker Engine: containers
//! of the busybox image `scripts/docker-test-image.sh` builds (the tests run
//! the script when the image is missing), under real supervisors (this test
//! binary, see [`super::tests`]).
//!
//! They skip themselves, saying so, only when the engine's socket does not
//! exist and `STRATA_REQUIRE_DOCKER` is unset; an engine that is there but
//! broken fails them.

use super::checkpoint::{KillCheckpoint, write_json};
use super::containerizer::{
    ContainerRecord, ContainerStatus, Containerizer, DockerContainerizer, LaunchRequest,
    ProcessContainerizer, Signalled,
};
use super::docker::{self, DockerError};
use super::layout::files;
use super::process::KillStep;
use super::supervisor::unix_now;
use bollard::Docker;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_proto::pb;
use strata_proto::resources::{Ranges, Resources};

/// The test image.
pub(super) const IMAGE: &str = "strata-test/busybox:latest";

const WAIT: Duration = Duration::from_secs(60);

/// The engine, with the test image present (built by the script when
/// missing); `None`, after saying so, when there is no engine socket,
/// unless `STRATA_REQUIRE_DOCKER` is set (as `.ci/run` sets it, where the
/// engine is expected): then a missing engine fails the test.
pub(super) async fn engine() -> Option<(String, Docker)> {
    let host = docker::host_from_env();
    let path = docker::socket_path(&host).expect("DOCKER_HOST must be unix:///path");
    if !Path::new(path).exists() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_DOCKER").is_none(),
            "no Docker Engine socket at {path}, and STRATA_REQUIRE_DOCKER is set"
        );
        eprintln!("skipping: no Docker Engine socket at {path}");
        return None;
    }
    let client = docker::connect(&host)
        .await
        .expect("the Docker socket exists but the engine cannot be used");
    match docker::check_image(&client, IMAGE).await {
        Ok(()) => {}
        Err(DockerError::ImageNotFound { .. }) => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/docker-test-image.sh");
            let status = tokio::process::Command::new("bash")
                .arg(&script)
                .arg(IMAGE)
                .status()
                .await
                .expect("cannot run the image script");
            assert!(status.success(), "{} failed: {status}", script.display());
            docker::check_image(&client, IMAGE).await.unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    Some((host, client))
}

/// Whether a container of this name exists.
pub(super) async fn exists(client: &Docker, name: &str) -> bool {
    match client.inspect_container(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("cannot inspect {name}: {e}"),
    }
}

/// Polls `cond` (async) until it holds or the deadline passes.
async fn until<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
    }
}

/// Removes the containers named to it when dropped, so that a failed test
/// leaves none running.
pub(super) struct Cleanup {
    host: String,
    names: std::sync::Mutex<Vec<String>>,
}

impl Cleanup {
    /// Nothing to remove yet, on the engine at `host`.
    pub(super) fn new(host: &str) -> Cleanup {
        Cleanup {
            host: host.to_owned(),
            names: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Removes `name` at the end.
    pub(super) fn add(&self, name: &str) {
        self.names.lock().unwrap().push(name.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap());
        let host = self.host.clone();
        // On a thread of its own: the test's runtime may be shutting down.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(client) = docker::connect(&host).await {
                    for name in names {
                        docker::force_remove(&client, &name).await.ok();
                    }
                }
            });
        })
        .join()
        .ok();
    }
}

/// A sandbox and meta dir, and the Docker containerizer; the containers it
/// launched are removed when it is dropped.
struct Rig {
    docker: DockerContainerizer,
    sandbox: PathBuf,
    meta: PathBuf,
    cleanup: Cleanup,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new(host: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let meta = dir.path().join("meta");
        for d in [&sandbox, &meta] {
            std::fs::create_dir_all(d).unwrap();
        }
        for f in [files::STDOUT, files::STDERR] {
            std::fs::write(sandbox.join(f), b"").unwrap();
        }
        let process = Arc::new(ProcessContainerizer::new(
            super::tests::supervisor_prefix(),
            None,
        ));
        Rig {
            _dir: dir,
            sandbox,
            meta,
            docker: DockerContainerizer::new(process, host),
            cleanup: Cleanup::new(host),
        }
    }

    fn launch(&self, task: &pb::TaskInfo) -> ContainerRecord {
        let resources = Resources::from_proto(&task.resources).unwrap();
        let env = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
        let record = self
            .docker
            .launch(&LaunchRequest {
                framework_id: &"fw-docker-tests".into(),
                task,
                resources: &resources,
                sandbox: &self.sandbox,
                meta_dir: &self.meta,
                argv: Vec::new(),
                env,
                user: None,
            })
            .unwrap();
        self.cleanup.add(&container_of(&record));
        record
    }

    async fn until_status(
        &self,
        record: &ContainerRecord,
        what: &str,
        want: impl Fn(&ContainerStatus) -> bool,
    ) -> ContainerStatus {
        let mut last = None;
        until(what, || {
            let s = self.docker.status(record);
            let ok = want(&s);
            last = Some(s);
            std::future::ready(ok)
        })
        .await;
        last.unwrap()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.sandbox.join(files::STDOUT)).unwrap()
    }

    /// What the agent checkpoints before it signals a kill.
    fn checkpoint_kill(&self, grace_seconds: f64) {
        let k = KillCheckpoint {
            reason: "REASON_KILLED_BY_FRAMEWORK".into(),
            grace_seconds,
            requested_at: unix_now(),
        };
        write_json(&self.meta.join(files::KILL), &k).unwrap();
    }
}

fn docker_task(id: &str, image: &str, script: &str, ports: &[(u16, u16)]) -> pb::TaskInfo {
    let ranges = Ranges::from_ranges(ports.iter().map(|(_, h)| (u64::from(*h), u64::from(*h))));
    pb::TaskInfo {
        task_id: id.into(),
        name: id.into(),
        resources: Resources::new(0.5, 64.0).with_ports(ranges).to_proto(false),
        command: Some(pb::CommandInfo {
            value: script.into(),
            shell: true,
            ..Default::default()
        }),
        container: Some(pb::ContainerInfo {
            r#type: pb::container_info::Type::Docker as i32,
            docker: Some(pb::DockerInfo {
                image: image.into(),
                port_mappings: ports
                    .iter()
                    .map(|(c, h)| pb::docker_info::PortMapping {
                        container_port: u32::from(*c),
                        host_port: u32::from(*h),
                        protocol: "tcp".into(),
                    })
                    .collect(),
            }),
        }),
        ..Default::default()
    }
}

fn container_of(record: &ContainerRecord) -> String {
    match record {
        ContainerRecord::Docker { container, .. } => container.clone(),
        other => panic!("not a docker record: {other:?}"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_runs_serves_its_port_and_is_stopped_and_removed() {
    let Some((host, client)) = engine().await else {
        return;
    };
    let rig = Rig::new(&host);
    let port = free_port();
    // PID 1 is the shell: it handles SIGTERM itself (with its own exit code).
    let script = "trap 'echo stopping; exit 3' TERM; \
        echo \"$GREETING from $(pwd)\"; echo inside > from-container; \
        httpd -p 8080 -h /www; sleep 1000 & wait";
    let task = docker_task("web-1", IMAGE, script, &[(8080, port)]);
    let record = rig.launch(&task);
    let name = container_of(&record);
    let running = rig
        .until_status(&record, "the container runs", |s| {
            !matches!(s, ContainerStatus::Starting)
        })
        .await;
    assert!(
        matches!(running, ContainerStatus::Running { .. }),
        "{running:?}"
    );

    // Running as asked: labels, limits, the sandbox mounted and the output
    // in the sandbox files.
    let c = client.inspect_container(&name, None).await.unwrap();
    assert_eq!(c.state.as_ref().unwrap().running, Some(true));
    let labels = c.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels[docker::LABEL_TASK], "web-1");
    assert_eq!(labels[docker::LABEL_FRAMEWORK], "fw-docker-tests");
    let hc = c.host_config.unwrap();
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.memory, Some(64 * 1024 * 1024));
    until("the greeting is in the sandbox", || {
        std::future::ready(rig.stdout().contains("hello from /mnt/mesos/sandbox"))
    })
    .await;
    until("the container wrote into its sandbox", || {
        std::future::ready(rig.sandbox.join("from-container").exists())
    })
    .await;
    // The published port reaches busybox httpd inside.
    until("the container serves its port", || async move {
        http_get(port)
            .await
            .is_some_and(|p| p.contains("hello from strata-test"))
    })
    .await;

    // SIGTERM to the supervisor stops the container within its grace.
    rig.checkpoint_kill(30.0);
    let asked = Instant::now();
    assert_eq!(rig.docker.signal(&record, KillStep::Term), Signalled::Sent);
    let exited = rig
        .until_status(&record, "the container stops", |s| {
            matches!(s, ContainerStatus::Exited(_))
        })
        .await;
    let ContainerStatus::Exited(exit) = exited else {
        unreachable!()
    };
    assert_eq!(exit.exit_code, Some(3), "{exit:?}");
    assert_eq!(exit.error, None);
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "stopped by SIGTERM"
    );
    assert!(rig.stdout().contains("stopping"));
    // Removed before the exit was recorded.
    assert!(!exists(&client, &name).await, "{name} still exists");
    assert_eq!(rig.docker.signal(&record, KillStep::Kill), Signalled::Gone);
    rig.docker.cleanup(&record);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_ignoring_sigterm_is_killed_after_the_grace() {
    let Some((host, client)) = engine().await else {
        return;
    };
    let rig = Rig::new(&host);
    let task = docker_task(
        "stubborn-1",
        IMAGE,
        "trap '' TERM; echo ready; sleep 1000 & wait",
        &[],
    );
    let record = rig.launch(&task);
    let name = container_of(&record);
    until("the container is ready", || {
        std::future::ready(rig.stdout().contains("ready"))
    })
    .await;
    // The agent signals only once the container runs (else: not yet).
    rig.until_status(&record, "the container runs", |s| {
        matches!(s, ContainerStatus::Running { .. })
    })
    .await;
    rig.checkpoint_kill(30.0);
    assert_eq!(rig.docker.signal(&record, KillStep::Term), Signalled::Sent);
    // The agent's SIGKILL step, once the grace is over.
    assert_eq!(rig.docker.signal(&record, KillStep::Kill), Signalled::Sent);
    let exited = rig
        .until_status(&record, "the container is killed", |s| {
            matches!(s, ContainerStatus::Exited(_))
        })
        .await;
    let ContainerStatus::Exited(exit) = exited else {
        unreachable!()
    };
    assert_eq!(exit.exit_code, Some(137), "{exit:?}");
    assert!(!exists(&client, &name).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_whose_supervisor_died_is_removed_at_cleanup() {
    let Some((host, client)) = engine().await else {
        return;
    };
    let rig = Rig::new(&host);
    let task = docker_task("orphan-1", IMAGE, "echo ready; exec sleep 1000", &[]);
    let record = rig.launch(&task);
    let name = container_of(&record);
    until("the container is ready", || {
        std::future::ready(rig.stdout().contains("ready"))
    })
    .await;
    let (supervisor, _, _) = record.supervisor();
    super::process::signal_pid(supervisor, nix::sys::signal::Signal::SIGKILL).unwrap();
    let lost = rig
        .until_status(&record, "the task is lost", |s| {
            matches!(s, ContainerStatus::Lost { .. })
        })
        .await;
    assert!(matches!(lost, ContainerStatus::Lost { .. }));
    assert!(
        exists(&client, &name).await,
        "the container outlives its supervisor"
    );
    rig.docker.cleanup(&record);
    until("the container is removed", || {
        let client = client.clone();
        let name = name.clone();
        async move { !exists(&client, &name).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_launch_with_a_clear_error() {
    let Some((host, client)) = engine().await else {
        return;
    };
    let rig = Rig::new(&host);
    let image = "strata-test/no-such-image:never";
    let record = rig.launch(&docker_task("missing-1", image, "true", &[]));
    let exited = rig
        .until_status(&record, "the launch fails", |s| {
            matches!(s, ContainerStatus::Exited(_))
        })
        .await;
    let ContainerStatus::Exited(exit) = exited else {
        unreachable!()
    };
    let error = exit.error.unwrap_or_default();
    assert!(
        error.starts_with(&format!("image {image} not found locally")),
        "{error}"
    );
    assert_eq!(exit.exit_code, None);
    assert!(!exists(&client, &container_of(&record)).await);
}
