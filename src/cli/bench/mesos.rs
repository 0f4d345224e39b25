//! `strata bench mesos-api`: offer-to-launch latency through the Mesos v1
//! scheduler HTTP API against the native gRPC SDK, on one local cluster in
//! the same run.
//!
//! Each round, a framework takes the first offer it receives, launches one
//! small task (`true`) on it and waits for the task's `TASK_RUNNING`; the
//! figures are the time from the offer's arrival to the launch call's
//! answer and to `TASK_RUNNING`. The native framework runs its rounds,
//! then the Mesos one, on the same cluster. The Mesos side is a minimal HTTP/1.1 client
//! (hyper) that frames and parses RecordIO itself, so the figure is the
//! API's own cost, not a client library's.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use strata_proto::resources::Resources;
use strata_sdk::{
    Event, EventStream, Filters, FrameworkConfig, Scheduler, SchedulerConfig, SchedulerHandle,
    TaskBuilder, TaskState,
};

/// Arguments of `strata bench mesos-api`.
#[derive(clap::Args, Debug)]
pub struct MesosArgs {
    /// Launches measured per API (after two warm-up rounds each).
    #[arg(long, default_value_t = 30)]
    rounds: usize,
}

/// One round's figures.
#[derive(Clone, Copy, Debug)]
struct Round {
    /// Offer received → launch call answered.
    accepted: Duration,
    /// Offer received → `TASK_RUNNING` received.
    running: Duration,
}

/// `strata bench mesos-api`.
pub async fn run(a: MesosArgs) -> anyhow::Result<ExitCode> {
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let dir = std::env::temp_dir().join(format!("strata-bench-mesos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let machine = "cpus:2;mem:2048;disk:1024;ports:[31000-31999]";
    let cluster = super::local_cluster(1, dir.clone(), machine).await?;
    let address = cluster.address().to_string();
    let result = bench(&a, &address).await;
    cluster.shutdown_with_tasks(Duration::from_secs(10)).await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn bench(a: &MesosArgs, address: &str) -> anyhow::Result<ExitCode> {
    // One framework at a time: an offer the other left unanswered would
    // hold the agent.
    let mut native = Native::subscribe(address).await?;
    let n = measured(a.rounds, async |i| native.round(i).await).await?;
    native.handle.teardown().await?;
    let mut mesos = Mesos::subscribe(address).await?;
    let m = measured(a.rounds, async |i| mesos.round(i).await).await?;
    mesos.call(json!({"type": "TEARDOWN"})).await?;
    println!(
        "offer-to-launch latency over {} launches each (one agent, task `true`):",
        a.rounds
    );
    println!(
        "{:<28} {:>12} {:>12} {:>14} {:>14}",
        "", "accept p50", "accept p99", "running p50", "running p99"
    );
    for (name, rounds) in [("native gRPC SDK", &n), ("Mesos v1 HTTP API", &m)] {
        let acc = percentiles(rounds.iter().map(|r| r.accepted));
        let run = percentiles(rounds.iter().map(|r| r.running));
        println!(
            "{name:<28} {:>10.2}ms {:>10.2}ms {:>12.2}ms {:>12.2}ms",
            ms(acc.0),
            ms(acc.1),
            ms(run.0),
            ms(run.1)
        );
    }
    let ratio = ms(percentiles(m.iter().map(|r| r.running)).0)
        / ms(percentiles(n.iter().map(|r| r.running)).0).max(1e-9);
    println!("Mesos API / native, offer to TASK_RUNNING p50: {ratio:.2}x");
    Ok(ExitCode::SUCCESS)
}

/// `rounds` rounds after two warm-up rounds, which are not kept.
async fn measured(
    rounds: usize,
    mut round: impl AsyncFnMut(usize) -> anyhow::Result<Round>,
) -> anyhow::Result<Vec<Round>> {
    let mut kept = Vec::with_capacity(rounds);
    for i in 0..rounds + 2 {
        let r = round(i).await?;
        if i >= 2 {
            kept.push(r);
        }
    }
    Ok(kept)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50 and p99.
fn percentiles(it: impl Iterator<Item = Duration>) -> (Duration, Duration) {
    let mut v: Vec<Duration> = it.collect();
    v.sort();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    (at(0.5), at(0.99))
}

fn task_resources() -> anyhow::Result<Resources> {
    Ok(Resources::parse("cpus:0.1;mem:16")?)
}

/// The native side: the SDK over gRPC.
struct Native {
    handle: SchedulerHandle,
    events: EventStream,
}

impl Native {
    async fn subscribe(address: &str) -> anyhow::Result<Native> {
        let (handle, events) = Scheduler::subscribe(SchedulerConfig::new(
            address,
            FrameworkConfig::new("bench-native"),
        ))
        .await?;
        Ok(Native { handle, events })
    }

    async fn next(&mut self) -> anyhow::Result<Event> {
        tokio::time::timeout(Duration::from_secs(30), self.events.next())
            .await
            .context("no event from the manager within 30 s")?
            .context("the native subscription ended")
    }

    async fn round(&mut self, i: usize) -> anyhow::Result<Round> {
        let offers = loop {
            if let Event::Offers(o) = self.next().await? {
                break o;
            }
        };
        let t0 = Instant::now();
        let mut offers = offers.into_iter();
        let offer = offers.next().context("an empty offers event")?;
        let id = format!("native-{i}");
        let task = TaskBuilder::shell(id.as_str(), "true")
            .agent(offer.agent_id.clone())
            .resources(task_resources()?)
            .build();
        // What the task leaves of the offer is offered again at once.
        self.handle
            .accept(vec![offer.id], vec![task], Filters::refuse(Duration::ZERO))
            .await?;
        let accepted = t0.elapsed();
        let rest: Vec<_> = offers.map(|o| o.id).collect();
        if !rest.is_empty() {
            self.handle.decline(rest, Some(Duration::ZERO)).await?;
        }
        let mut running = None;
        loop {
            match self.next().await? {
                Event::Update(s) if s.task_id.as_str() == id => match s.state {
                    TaskState::TaskRunning => running = Some(t0.elapsed()),
                    st if st.is_terminal() => break,
                    _ => {}
                },
                Event::Offers(o) => {
                    let ids = o.into_iter().map(|o| o.id).collect();
                    self.handle.decline(ids, Some(Duration::ZERO)).await?;
                }
                _ => {}
            }
        }
        Ok(Round {
            accepted,
            running: running.context("the task ended without TASK_RUNNING")?,
        })
    }
}

/// The Mesos side: JSON calls and a RecordIO event stream over HTTP/1.1.
struct Mesos {
    client: Client<HttpConnector, Full<Bytes>>,
    address: String,
    framework_id: String,
    stream_id: String,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Mesos {
    async fn subscribe(address: &str) -> anyhow::Result<Mesos> {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let call = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
            "user": "", "name": "bench-mesos"}}});
        let req = http::Request::post(format!("http://{address}/api/v1/scheduler"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(call.to_string())))?;
        let resp = client.request(req).await?;
        if resp.status() != 200 {
            bail!("SUBSCRIBE answered {}", resp.status());
        }
        let stream_id = resp
            .headers()
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .context("no Mesos-Stream-Id")?
            .to_owned();
        let mut m = Mesos {
            client,
            address: address.to_owned(),
            framework_id: String::new(),
            stream_id,
            body: resp.into_body(),
            buf: Vec::new(),
        };
        let first = m.next().await?;
        m.framework_id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .context("SUBSCRIBED first")?
            .to_owned();
        Ok(m)
    }

    /// The next RecordIO record of the event stream.
    async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let len: usize = std::str::from_utf8(&self.buf[..nl])?.trim().parse()?;
                if self.buf.len() >= nl + 1 + len {
                    let v = serde_json::from_slice(&self.buf[nl + 1..nl + 1 + len])?;
                    self.buf.drain(..nl + 1 + len);
                    return Ok(v);
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(30), self.body.frame())
                .await
                .context("no event from the manager within 30 s")?
                .context("the Mesos event stream ended")??;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    async fn call(&self, mut call: Value) -> anyhow::Result<()> {
        call["framework_id"] = json!({ "value": self.framework_id });
        let req = http::Request::post(format!("http://{}/api/v1/scheduler", self.address))
            .header("content-type", "application/json")
            .header("mesos-stream-id", &self.stream_id)
            .body(Full::new(Bytes::from(call.to_string())))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != 202 {
            bail!(
                "{} answered {status}: {}",
                call["type"],
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    async fn decline_all(&self, offers: &[Value]) -> anyhow::Result<()> {
        if offers.is_empty() {
            return Ok(());
        }
        let ids: Vec<&Value> = offers.iter().map(|o| &o["id"]).collect();
        self.call(json!({"type": "DECLINE", "decline": {
            "offer_ids": ids, "filters": {"refuse_seconds": 0}}}))
            .await
    }

    async fn round(&mut self, i: usize) -> anyhow::Result<Round> {
        let offers = loop {
            let ev = self.next().await?;
            if ev["type"] == "OFFERS" {
                break ev["offers"]["offers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            }
        };
        let t0 = Instant::now();
        let (offer, rest) = offers.split_first().context("an empty offers event")?;
        let id = format!("mesos-{i}");
        self.call(json!({"type": "ACCEPT", "accept": {
            "offer_ids": [offer["id"]],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
                "name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
                "command": {"value": "true"},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}},
                ],
            }]}}],
            "filters": {"refuse_seconds": 0},
        }}))
        .await?;
        let accepted = t0.elapsed();
        self.decline_all(rest).await?;
        let mut running = None;
        loop {
            let ev = self.next().await?;
            match ev["type"].as_str() {
                Some("UPDATE") => {
                    let s = &ev["update"]["status"];
                    if let Some(uuid) = s.get("uuid") {
                        self.call(json!({"type": "ACKNOWLEDGE", "acknowledge": {
                            "agent_id": s["agent_id"], "task_id": s["task_id"], "uuid": uuid}}))
                            .await?;
                    }
                    if s["task_id"]["value"] != id.as_str() {
                        continue;
                    }
                    match s["state"].as_str() {
                        Some("TASK_RUNNING") => running = Some(t0.elapsed()),
                        Some(
                            "TASK_FINISHED" | "TASK_FAILED" | "TASK_KILLED" | "TASK_LOST"
                            | "TASK_ERROR" | "TASK_DROPPED",
                        ) => break,
                        _ => {}
                    }
                }
                Some("OFFERS") => {
                    let offers = ev["offers"]["offers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    self.decline_all(&offers).await?;
                }
                Some("ERROR") => bail!("the manager sent an error: {ev}"),
                _ => {}
            }
        }
        Ok(Round {
            accepted,
            running: running.context("the task ended without TASK_RUNNING")?,
        })
    }
}
