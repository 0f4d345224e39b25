//! The supervisor's docker mode: runs one task's container to its end
//! (see [`super`] for the whole picture).

use super::{
    DockerError, DockerSpec, KILL_SIGNAL, OUTPUT_DRAIN, REQUEST_TIMEOUT_SECS, STOP_SIGNAL,
    check_image, connect, container_err, force_remove,
};
use crate::checkpoint::{KillCheckpoint, read_json, replace_atomic};
use crate::layout::files;
use crate::supervisor::{ExitRecord, LaunchSpec, failed, unix_now};
use bollard::Docker;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The grace left for `docker stop`: the kill's grace (from `kill.json`)
/// less the time since it was asked for, rounded up to whole seconds.
fn remaining_grace(status_dir: &Path) -> i32 {
    let grace = match read_json::<KillCheckpoint>(&status_dir.join(files::KILL)) {
        Ok(Some(k)) if k.grace_seconds.is_finite() => {
            k.grace_seconds - (unix_now() - k.requested_at).max(0.0)
        }
        _ => crate::kill::DEFAULT_KILL_GRACE.as_secs_f64(),
    };
    grace.clamp(0.0, f64::from(i32::MAX)).ceil() as i32
}

/// The body of a docker-mode supervisor (see [`super`]): runs the
/// container of `spec` to its end and returns how it ended.
pub fn supervise(spec: &LaunchSpec, docker: &DockerSpec, status_dir: &Path) -> ExitRecord {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run_container(spec, docker, status_dir)),
        Err(e) => failed(format!("cannot start the supervisor's runtime: {e}"), None),
    }
}

async fn run_container(spec: &LaunchSpec, d: &DockerSpec, status_dir: &Path) -> ExitRecord {
    use tokio::signal::unix::{SignalKind, signal};
    // Signals first: the agent signals only once task.pid exists, and a
    // signal that arrives while the container is set up waits in its stream.
    let (mut stop, mut kill) = match (
        signal(SignalKind::from_raw(STOP_SIGNAL as i32)),
        signal(SignalKind::from_raw(KILL_SIGNAL as i32)),
    ) {
        (Ok(s), Ok(k)) => (s, k),
        (Err(e), _) | (_, Err(e)) => {
            return failed(format!("cannot handle signals: {e}"), None);
        }
    };
    let (stdout, stderr) = match super::super::supervisor::open_output(&spec.sandbox) {
        Ok(files) => files,
        Err(e) => return failed(e.to_string(), None),
    };
    let docker = match connect(&d.host).await {
        Ok(c) => c,
        Err(e) => return failed(e.to_string(), None),
    };
    if let Err(e) = check_image(&docker, &d.image).await {
        return failed(e.to_string(), None);
    }
    // A container left with this name by an earlier launch of the task.
    match force_remove(&docker, &d.name).await {
        Ok(true) => eprintln!("supervisor: removed a stale container {}", d.name),
        Ok(false) => {}
        Err(e) => return failed(e.to_string(), None),
    }
    let options = CreateContainerOptionsBuilder::new().name(&d.name).build();
    let body = d.create_body(&spec.env, &spec.sandbox);
    if let Err(e) = docker.create_container(Some(options), body).await {
        return failed(container_err("create", &d.name, &e).to_string(), None);
    }
    let started = start(&docker, d, stdout, stderr).await;
    let (pid, output) = match started {
        Ok(s) => s,
        Err(e) => {
            force_remove(&docker, &d.name).await.ok();
            return failed(e.to_string(), None);
        }
    };
    if let Some(pid) = pid
        && let Err(e) = replace_atomic(
            &status_dir.join(files::TASK_PID),
            format!("{pid}\n").as_bytes(),
        )
    {
        eprintln!("supervisor: cannot write {}: {e}", files::TASK_PID);
    }
    let wait_options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(&d.name, Some(wait_options));
    let waited = loop {
        tokio::select! {
            r = wait.next() => break r,
            _ = stop.recv() => {
                let t = remaining_grace(status_dir);
                eprintln!("supervisor: stopping container {} (grace {t} s)", d.name);
                let client = docker.clone().with_timeout(Duration::from_secs(
                    REQUEST_TIMEOUT_SECS + u64::try_from(t).unwrap_or(0),
                ));
                let name = d.name.clone();
                tokio::spawn(async move {
                    let o = StopContainerOptionsBuilder::new().t(t).build();
                    if let Err(e) = client.stop_container(&name, Some(o)).await {
                        eprintln!("supervisor: {}", container_err("stop", &name, &e));
                    }
                });
            }
            _ = kill.recv() => {
                eprintln!("supervisor: killing container {}", d.name);
                let o = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
                if let Err(e) = docker.kill_container(&d.name, Some(o)).await {
                    eprintln!("supervisor: {}", container_err("kill", &d.name, &e));
                }
            }
        }
    };
    let mut record = ExitRecord {
        exit_code: None,
        signal: None,
        error: None,
        oom_killed: false,
        pid,
        finished_at: 0.0,
    };
    // The state says it best (the wait's answer can be an error for a
    // non-zero exit); it is the fallback.
    match docker.inspect_container(&d.name, None).await {
        Ok(c) => {
            let state = c.state.unwrap_or_default();
            record.exit_code = state.exit_code.and_then(|c| i32::try_from(c).ok());
            record.oom_killed = state.oom_killed.unwrap_or(false);
        }
        Err(e) => eprintln!("supervisor: {}", container_err("inspect", &d.name, &e)),
    }
    if record.exit_code.is_none() {
        match waited {
            Some(Ok(r)) => record.exit_code = i32::try_from(r.status_code).ok(),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                record.exit_code = i32::try_from(code).ok();
            }
            Some(Err(e)) => {
                record.error = Some(container_err("wait for", &d.name, &e).to_string());
            }
            None => {
                record.error = Some(format!(
                    "the Docker Engine stopped reporting on container {}",
                    d.name
                ));
            }
        }
    }
    if tokio::time::timeout(OUTPUT_DRAIN, output).await.is_err() {
        eprintln!("supervisor: the container's output did not end; some may be missing");
    }
    if let Err(e) = force_remove(&docker, &d.name).await {
        eprintln!("supervisor: {e}");
    }
    record.finished_at = unix_now();
    record
}

/// Attaches to the created container's output (copied into the sandbox
/// files by a task of its own), starts it and finds its main process.
async fn start(
    docker: &Docker,
    d: &DockerSpec,
    mut stdout: File,
    mut stderr: File,
) -> Result<(Option<i32>, tokio::task::JoinHandle<()>), DockerError> {
    let options = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = docker
        .attach_container(&d.name, Some(options))
        .await
        .map_err(|e| container_err("attach to", &d.name, &e))?;
    let output = tokio::spawn(async move {
        let bollard::container::AttachContainerResults { mut output, input } = attached;
        while let Some(item) = output.next().await {
            let written = match item {
                Ok(bollard::container::LogOutput::StdErr { message }) => stderr.write_all(&message),
                Ok(m) => stdout.write_all(m.as_ref()),
                Err(e) => {
                    eprintln!("supervisor: the container's output broke off: {e}");
                    break;
                }
            };
            if let Err(e) = written {
                eprintln!("supervisor: cannot write the container's output: {e}");
            }
        }
        drop(input);
    });
    if let Err(e) = docker.start_container(&d.name, None).await {
        output.abort();
        return Err(container_err("start", &d.name, &e));
    }
    let pid = match docker.inspect_container(&d.name, None).await {
        Ok(c) => c
            .state
            .and_then(|s| s.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1),
        Err(e) => {
            eprintln!("supervisor: {}", container_err("inspect", &d.name, &e));
            None
        }
    };
    Ok((pid, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remaining_grace_comes_from_the_kill_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            remaining_grace(dir.path()),
            crate::kill::DEFAULT_KILL_GRACE.as_secs() as i32
        );
        let k = KillCheckpoint {
            reason: "REASON_KILLED_BY_FRAMEWORK".into(),
            grace_seconds: 10.0,
            requested_at: unix_now() - 4.5,
        };
        crate::checkpoint::write_json(&dir.path().join(files::KILL), &k).unwrap();
        assert!((5..=6).contains(&remaining_grace(dir.path())));
        let late = KillCheckpoint {
            requested_at: unix_now() - 60.0,
            ..k
        };
        crate::checkpoint::write_json(&dir.path().join(files::KILL), &late).unwrap();
        assert_eq!(remaining_grace(dir.path()), 0);
    }
}
