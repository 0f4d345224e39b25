//! `/`: the cluster at a glance.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{Section, Ui, badge, bar, enc, page, percent, when};

/// `GET /`.
pub(super) async fn show(State(ui): State<Ui>) -> Response {
    let (s, gauges) = match super::super::http::snapshot(&ui.core).await {
        Ok(s) => s,
        Err(_) => {
            return super::error_page(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the manager is shutting down",
            );
        }
    };
    // Measured use per agent, from its tasks' latest samples.
    let mut used: HashMap<&str, (f64, f64)> = HashMap::new();
    for t in &s.tasks {
        let u = used.entry(t.agent_id.as_str()).or_default();
        u.0 += t.cpus_used.unwrap_or(0.0);
        u.1 += t.mem_used.unwrap_or(0.0);
    }
    let total_cpus: f64 = s.agents.iter().map(|a| a.cpus).sum();
    let alloc_cpus: f64 = s.agents.iter().map(|a| a.cpus_allocated).sum();
    let total_mem: f64 = s.agents.iter().map(|a| a.mem).sum();
    let alloc_mem: f64 = s.agents.iter().map(|a| a.mem_allocated).sum();
    let used_cpus: f64 = used.values().map(|u| u.0).sum();
    let used_mem: f64 = used.values().map(|u| u.1).sum();
    let content = html! {
        section.summary {
            div { span.k { "leader" } span.v #leader { (s.leader.id) } span.sub { (s.leader.address) " · epoch " (s.leader.epoch) " · since " (when(s.leader.since)) } }
            div { span.k { "agents" } span.v #agent-count { (s.agents.len()) } }
            div { span.k { "cpus allocated" } span.v { (format!("{alloc_cpus:.1}")) " / " (format!("{total_cpus:.1}")) } (bar(alloc_cpus, total_cpus)) span.sub { "used " (format!("{used_cpus:.2}")) } }
            div { span.k { "memory allocated" } span.v { (format!("{:.1}", alloc_mem / 1024.0)) " / " (format!("{:.1}", total_mem / 1024.0)) " GiB" } (bar(alloc_mem, total_mem)) span.sub { "used " (format!("{:.2}", used_mem / 1024.0)) " GiB" } }
            div { span.k { "tasks" } span.v #task-count { a href="/tasks" { (s.tasks.len()) } } span.sub { (s.completed_tasks.len()) " recently completed" } }
            div { span.k { "frameworks" } span.v #framework-count { (s.frameworks.len()) } span.sub { (s.outstanding_offers) " offers outstanding" } }
        }
        h2 { "Agents" }
        table #agents {
            thead { tr { th { "agent" } th { "host" } th { "state" } th { "cpus (allocated / total)" } th { "cpus used" } th { "memory MiB (allocated / total)" } th { "memory used" } th { "tasks" } th { "revocable" } } }
            tbody {
                @for a in &s.agents {
                    @let u = used.get(a.id.as_str()).copied().unwrap_or_default();
                    tr {
                        td.id { a href={"/tasks?agent=" (enc(&a.id))} { (a.id) } }
                        td { (a.hostname) br; span.muted { (a.address) } }
                        td {
                            (badge(&a.state))
                            @if let Some(d) = &a.drain {
                                " " (badge(d))
                                @if let Some(at) = a.drain_deadline { br; span.muted { "until " (when(at)) } }
                            }
                        }
                        td { (format!("{:.2}", a.cpus_allocated)) " / " (format!("{:.2}", a.cpus)) (bar(a.cpus_allocated, a.cpus)) }
                        td { (format!("{:.2}", u.0)) }
                        td { (format!("{:.0}", a.mem_allocated)) " / " (format!("{:.0}", a.mem)) (bar(a.mem_allocated, a.mem)) }
                        td { (format!("{:.0}", u.1)) }
                        td.num { (a.tasks) }
                        td { "lent " (format!("{:.2}", a.cpus_lent.max(0.0))) br; "borrowed " (format!("{:.2}", a.cpus_revocable_allocated.max(0.0))) }
                    }
                }
            }
        }
        h2 { "Roles" }
        table #roles {
            thead { tr { th { "role" } th { "weight" } th { "quota" } th { "allocated" } th { "weighted share" } th { "frameworks" } } }
            tbody {
                @for r in &s.roles {
                    tr {
                        td { (r.name) }
                        td.num { (r.weight) }
                        td { (r.quota.as_deref().unwrap_or("none")) }
                        td { (r.allocated) }
                        td.num { (percent(r.share)) }
                        td.num { (r.frameworks) }
                    }
                }
            }
        }
        h2 { "Frameworks" }
        table #frameworks {
            thead { tr { th { "framework" } th { "name" } th { "role" } th { "state" } th { "allocated" } th { "dominant share" } th { "tasks" } th { "offers" } th { "pending" } } }
            tbody {
                @for f in &s.frameworks {
                    tr {
                        td.id { a href={"/tasks?framework=" (enc(&f.id))} { (f.id) } }
                        td { (f.name) }
                        td { (f.role) }
                        td {
                            (badge(if f.connected { "connected" } else { "disconnected" }))
                            @if f.suppressed { " " span.muted { "suppressed" } }
                        }
                        td { (f.allocated) }
                        td.num { (percent(f.share)) }
                        td.num { (f.tasks) }
                        td.num { (f.offers) }
                        td.num { (f.pending_tasks) }
                    }
                }
            }
        }
        h2 { "Priority classes" }
        table #classes {
            thead { tr { th { "class" } th { "value" } } }
            tbody { @for (name, value) in &s.classes { tr { td { (name) } td.num { (value) } } } }
        }
        details {
            summary { "Counters" }
            table #counters {
                tbody { @for (name, help, value) in &gauges { tr { td { code { (name) } } td { (help) } td.num { (value) } } } }
            }
        }
    };
    page("Cluster", Section::Cluster, true, content)
}
