//! `strata principals`: identities with their own tokens, managed with the
//! cluster's token through the manager's `/api/v1/principals`.

use std::process::ExitCode;

use serde_json::json;

use super::{ClientArgs, table};

/// Arguments of `strata principals`.
#[derive(clap::Args, Debug)]
pub struct PrincipalsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Option<PrincipalsCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum PrincipalsCommand {
    /// List the principals (the default).
    List,
    /// Create a principal and print its token (shown this once).
    Add {
        /// Its name: letters, digits, `_` or `-`.
        name: String,
    },
    /// Revoke a principal: its token is refused from now on.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// `strata principals`.
pub async fn run(a: PrincipalsArgs) -> anyhow::Result<ExitCode> {
    let target = a.client.target();
    let (method, path, body) = match &a.command {
        None | Some(PrincipalsCommand::List) => ("GET", "/api/v1/principals".to_owned(), None),
        Some(PrincipalsCommand::Add { name }) => (
            "POST",
            "/api/v1/principals".to_owned(),
            Some(serde_json::to_vec(&json!({ "name": name }))?),
        ),
        Some(PrincipalsCommand::Revoke { name }) => {
            ("DELETE", format!("/api/v1/principals/{name}"), None)
        }
    };
    let (code, v) = super::manager_json(&target, method, &path, body.as_deref()).await?;
    if !(200..300).contains(&code) {
        eprintln!(
            "error: the manager answered {code}: {}",
            v["message"].as_str().unwrap_or("no message")
        );
        return Ok(ExitCode::from(1));
    }
    match &a.command {
        Some(PrincipalsCommand::Add { .. }) => {
            // The token alone on stdout, for scripts; the note on stderr.
            println!("{}", v["token"].as_str().unwrap_or_default());
            eprintln!("the token of {} (shown once; keep it)", v["name"]);
        }
        Some(PrincipalsCommand::Revoke { name }) => eprintln!("revoked {name}"),
        None | Some(PrincipalsCommand::List) => {
            let mut t = table(&["principal", "created", "revoked"]);
            let empty = Vec::new();
            for p in v["principals"].as_array().unwrap_or(&empty) {
                let at = |k: &str| {
                    p[k].as_u64()
                        .map(|ms| strata_proto::time::Timestamp::from_millis(ms).iso8601())
                        .unwrap_or_default()
                };
                t.add_row(vec![
                    p["name"].as_str().unwrap_or_default().to_owned(),
                    at("created_at"),
                    at("revoked_at"),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
