//! `strata registry export|import`: a cluster's persisted state (records,
//! the services scheduler's document, the term) as one JSON file, to move
//! a cluster between the embedded registry and etcd, or to back it up.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use strata_manager::registry::transfer::{self, Export};
use strata_manager::server::StoreConfig;

use crate::discovery;

/// Arguments of `strata registry`.
#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
}

/// Which store, as the manager takes it.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// `local` (the embedded registry of --work-dir, its manager stopped) or `etcd://H1:2379,…[/prefix]`.
    #[arg(long, env = "STRATA_STORE", default_value = "local")]
    store: String,
    /// The manager's work directory, for `local` [default: $STRATA_HOME/manager].
    #[arg(long, env = "STRATA_WORK_DIR")]
    work_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum RegistryCommand {
    /// Write the registry, the services' state and the term as JSON (to stdout, or --out).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// File to write.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Load an export into an empty registry (no manager running on it).
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The export (`-` for stdin).
        file: PathBuf,
    },
}

impl StoreArgs {
    fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| discovery::strata_home().join("manager"))
    }
}

/// `strata registry`.
pub async fn run(a: RegistryArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        RegistryCommand::Export { store, out } => {
            let export = export(&store).await?;
            let json = serde_json::to_vec_pretty(&export)?;
            match &out {
                Some(path) => strata_proto::fsutil::write_atomic(path, &json)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{}", String::from_utf8_lossy(&json)),
            }
            eprintln!("exported {}", export.summary());
        }
        RegistryCommand::Import { store, file } => {
            let bytes = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let export = Export::parse(&bytes)?;
            import(&store, &export).await?;
            eprintln!("imported {}", export.summary());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(store: &StoreArgs) -> anyhow::Result<Export> {
    match store.store.parse::<StoreConfig>()? {
        StoreConfig::Local => Ok(transfer::export_local(&store.work_dir())?),
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd(url) => {
            let registry = strata_manager::registry::etcd::EtcdRegistry::connect(&url).await?;
            Ok(registry.export().await?)
        }
    }
}

async fn import(store: &StoreArgs, export: &Export) -> anyhow::Result<()> {
    match store.store.parse::<StoreConfig>()? {
        StoreConfig::Local => Ok(transfer::import_local(&store.work_dir(), export)?),
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd(url) => {
            let registry = strata_manager::registry::etcd::EtcdRegistry::connect(&url).await?;
            Ok(registry.import(export).await?)
        }
    }
}
