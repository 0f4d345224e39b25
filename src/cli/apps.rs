//! `strata apps`: long-running services through the manager's Marathon API
//! (`/v2/apps`), and `strata web`, the packaged example service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::ClientArgs;
use super::table;

/// Arguments of `strata apps`.
#[derive(clap::Args, Debug)]
pub struct AppsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Option<AppsCommand>,
    /// Print the manager's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand, Debug)]
enum AppsCommand {
    /// List apps with their instance counts (the default).
    List,
    /// Create an app from a Marathon app definition (JSON file, `-` for stdin).
    Create {
        /// The file.
        file: PathBuf,
    },
    /// Show one app with its tasks.
    Show {
        /// The app id.
        id: String,
    },
    /// Change an app (a JSON file with the fields to change).
    Update {
        /// The app id.
        id: String,
        /// The file.
        file: PathBuf,
        /// Override a deployment in progress.
        #[arg(long)]
        force: bool,
    },
    /// Set an app's instance count.
    Scale {
        /// The app id.
        id: String,
        /// Instances wanted.
        instances: u32,
        /// Override a deployment in progress.
        #[arg(long)]
        force: bool,
    },
    /// Replace every instance of an app (a rolling restart).
    Restart {
        /// The app id.
        id: String,
        /// Override a deployment in progress.
        #[arg(long)]
        force: bool,
    },
    /// Delete an app and kill its instances.
    Delete {
        /// The app id.
        id: String,
        /// Override a deployment in progress.
        #[arg(long)]
        force: bool,
    },
    /// List the tasks of one app (or of all apps).
    Tasks {
        /// The app id.
        id: Option<String>,
    },
    /// List deployments in progress.
    Deployments,
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

fn force(f: bool) -> &'static str {
    if f { "?force=true" } else { "" }
}

fn read_body(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
        return Ok(b);
    }
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// `strata apps`.
pub async fn run(a: AppsArgs) -> anyhow::Result<ExitCode> {
    let target = a.client.target();
    let call = |method: &'static str, path: String, body: Option<Vec<u8>>| {
        let target = target.clone();
        async move { super::manager_json(&target, method, &path, body.as_deref()).await }
    };
    let (code, v) = match a.command.unwrap_or(AppsCommand::List) {
        AppsCommand::List => call("GET", "/v2/apps".into(), None).await?,
        AppsCommand::Create { file } => {
            call("POST", "/v2/apps".into(), Some(read_body(&file)?)).await?
        }
        AppsCommand::Show { id } => call("GET", app_path(&id), None).await?,
        AppsCommand::Update { id, file, force: f } => {
            call(
                "PUT",
                format!("{}{}", app_path(&id), force(f)),
                Some(read_body(&file)?),
            )
            .await?
        }
        AppsCommand::Scale {
            id,
            instances,
            force: f,
        } => {
            let body = serde_json::to_vec(&json!({ "instances": instances }))?;
            call("PUT", format!("{}{}", app_path(&id), force(f)), Some(body)).await?
        }
        AppsCommand::Restart { id, force: f } => {
            call(
                "POST",
                format!("{}/restart{}", app_path(&id), force(f)),
                Some(Vec::new()),
            )
            .await?
        }
        AppsCommand::Delete { id, force: f } => {
            call("DELETE", format!("{}{}", app_path(&id), force(f)), None).await?
        }
        AppsCommand::Tasks { id: Some(id) } => {
            call("GET", format!("{}/tasks", app_path(&id)), None).await?
        }
        AppsCommand::Tasks { id: None } => call("GET", "/v2/tasks".into(), None).await?,
        AppsCommand::Deployments => call("GET", "/v2/deployments".into(), None).await?,
    };
    if !(200..300).contains(&code) {
        eprintln!("error: the manager answered {code}: {}", error_text(&v));
        return Ok(ExitCode::from(1));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", render(&v));
    }
    Ok(ExitCode::SUCCESS)
}

/// A Marathon error body as one line (with per-field details).
fn error_text(v: &Value) -> String {
    let mut out = v["message"].as_str().unwrap_or("no message").to_owned();
    if let Some(details) = v["details"].as_array() {
        for d in details {
            let errs: Vec<&str> = d["errors"]
                .as_array()
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "\n  {}: {}",
                d["path"].as_str().unwrap_or("/"),
                errs.join("; ")
            ));
        }
    }
    out
}

fn app_row(a: &Value) -> Vec<String> {
    vec![
        a["id"].as_str().unwrap_or("").to_owned(),
        a["labels"]["strata.class"]
            .as_str()
            .unwrap_or("service")
            .to_owned(),
        a["instances"].to_string(),
        a["tasksRunning"].to_string(),
        a["tasksHealthy"].to_string(),
        format!("{} cpus, {} MiB", a["cpus"], a["mem"]),
        if a["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
            "deploying".into()
        } else {
            "stable".into()
        },
    ]
}

const APP_HEADER: [&str; 7] = [
    "app",
    "class",
    "instances",
    "running",
    "healthy",
    "each",
    "state",
];

/// Renders whatever the API answered as tables.
fn render(v: &Value) -> String {
    if let Some(apps) = v["apps"].as_array() {
        let mut t = table(&APP_HEADER);
        for a in apps {
            t.add_row(app_row(a));
        }
        return t.to_string();
    }
    if v["app"].is_object() {
        let mut t = table(&APP_HEADER);
        t.add_row(app_row(&v["app"]));
        let tasks = render_tasks(
            v["app"]["tasks"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        );
        return format!("{t}\n{tasks}");
    }
    if let Some(tasks) = v["tasks"].as_array() {
        return render_tasks(tasks);
    }
    if let Some(ds) = v.as_array() {
        let mut t = table(&["deployment", "app", "action", "version"]);
        for d in ds {
            t.add_row(vec![
                d["id"].as_str().unwrap_or("").to_owned(),
                d["affectedApps"][0].as_str().unwrap_or("").to_owned(),
                d["currentActions"][0]["action"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                d["version"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        return t.to_string();
    }
    if let Some(d) = v["deploymentId"].as_str() {
        return format!(
            "deployment {d} (version {})",
            v["version"].as_str().unwrap_or("")
        );
    }
    if let Some(id) = v["id"].as_str() {
        // A created app.
        return format!(
            "created {id}; deployment {}",
            v["deployments"][0]["id"].as_str().unwrap_or("")
        );
    }
    v.to_string()
}

fn render_tasks(tasks: &[Value]) -> String {
    let mut t = table(&["task", "app", "host", "ports", "state", "healthy"]);
    for x in tasks {
        let healthy = x["healthCheckResults"][0]["alive"]
            .as_bool()
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into());
        t.add_row(vec![
            x["id"].as_str().unwrap_or("").to_owned(),
            x["appId"].as_str().unwrap_or("").to_owned(),
            x["host"].as_str().unwrap_or("").to_owned(),
            x["ports"].to_string(),
            x["state"].as_str().unwrap_or("").to_owned(),
            healthy,
        ]);
    }
    t.to_string()
}

/// Arguments of `strata web`.
#[derive(clap::Args, Debug)]
pub struct WebArgs {
    /// Port to listen on [default: $PORT0, else 8080].
    #[arg(long, env = "PORT0")]
    port: Option<u16>,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// The initial value of the `/load` metric.
    #[arg(long, default_value_t = 0.0)]
    load: f64,
}

/// `strata web`: the packaged example service.
pub async fn web(a: WebArgs) -> anyhow::Result<ExitCode> {
    let name = std::env::var("STRATA_TASK_ID").unwrap_or_else(|_| "web".into());
    let addr = SocketAddr::new(a.bind, a.port.unwrap_or(8080));
    strata_jobs::web::serve(addr, strata_jobs::web::Web::new(name, a.load))
        .await
        .with_context(|| format!("cannot serve on {addr}"))?;
    Ok(ExitCode::SUCCESS)
}
