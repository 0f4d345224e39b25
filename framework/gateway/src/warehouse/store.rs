//! Where a warehouse lives: a local directory, or a prefix in an object
//! store (`s3://bucket/wh/`).
//!
//! A local warehouse's `catalog.json` is replaced atomically (a temporary
//! file, fsync, rename) under an advisory lock on `catalog.lock`. An
//! object store has neither renames nor locks; there a change is a
//! conditional write — `If-Match` the version it read (`If-None-Match`
//! for the first) — retried from the object as it is now when another
//! writer got there first, so two writers never lose each other's change.
//! S3 has honoured both headers since 2024, and S3-compatible servers
//! (MinIO, moto) do too.
//!
//! delta-rs finds `s3://` tables through the same stores: [`register`]
//! gives it a factory over Strata's object store registry (S3 configured
//! from the `AWS_*` variables, as the executors' is), whose commits are
//! conditional creates of the next log entry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once, OnceLock};

use datafusion::execution::object_store::ObjectStoreRegistry;
use deltalake_core::DeltaTableError;
use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use strata_executor::storage::StrataObjectStoreRegistry;
use url::Url;

use super::WarehouseError;

/// The object stores of this process: S3 from the environment.
fn registry() -> &'static StrataObjectStoreRegistry {
    static REGISTRY: OnceLock<StrataObjectStoreRegistry> = OnceLock::new();
    REGISTRY.get_or_init(StrataObjectStoreRegistry::new)
}

/// The store of `url` and the path of `url` in it.
pub fn object_store_for(
    url: &Url,
) -> datafusion::common::Result<(Arc<dyn ObjectStore>, StorePath)> {
    let store = registry().get_store(url)?;
    let path = StorePath::from_url_path(url.path())
        .map_err(|e| datafusion::common::DataFusionError::External(Box::new(e)))?;
    Ok((store, path))
}

/// Lets delta-rs open `s3://` tables through Strata's stores (once per
/// process).
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            let Ok(url) = Url::parse(scheme) else {
                continue;
            };
            object_store_factories().insert(url.clone(), Arc::new(StrataStores));
            logstore_factories().insert(url, Arc::new(StrataStores));
        }
    });
}

#[derive(Debug)]
struct StrataStores;

impl ObjectStoreFactory for StrataStores {
    fn parse_url_opts(
        &self,
        url: &Url,
        _config: &StorageConfig,
    ) -> Result<(ObjectStoreRef, StorePath), DeltaTableError> {
        object_store_for(url).map_err(|e| DeltaTableError::generic(e.to_string()))
    }
}

impl LogStoreFactory for StrataStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> Result<Arc<dyn LogStore>, DeltaTableError> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// A warehouse's place.
#[derive(Debug)]
pub enum Place {
    /// A directory on this machine.
    Local(PathBuf),
    /// A prefix in an object store; `url` ends in `/`.
    Remote {
        /// The prefix.
        url: Url,
        /// Its store.
        store: Arc<dyn ObjectStore>,
    },
}

/// The version of the catalog a change started from.
#[derive(Debug, Clone)]
pub enum Version {
    /// A local file, read under the lock.
    Locked,
    /// An object's version (`None`: there was none yet).
    Object(Option<UpdateVersion>),
}

impl Place {
    /// `location`: a URL with a scheme (`s3://bucket/wh`), or a path,
    /// made if it does not exist.
    pub fn open(location: &Path) -> Result<Place, WarehouseError> {
        let text = location.to_string_lossy();
        if text.contains("://") && !text.starts_with("file://") {
            let mut url = Url::parse(&text).map_err(|e| WarehouseError::Location {
                location: text.to_string(),
                why: e.to_string(),
            })?;
            if !url.path().ends_with('/') {
                url.set_path(&format!("{}/", url.path()));
            }
            let store = registry()
                .get_store(&url)
                .map_err(|e| WarehouseError::Location {
                    location: text.to_string(),
                    why: e.to_string(),
                })?;
            register();
            return Ok(Place::Remote { url, store });
        }
        let dir = match text.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None => location.to_owned(),
        };
        std::fs::create_dir_all(&dir).map_err(|source| WarehouseError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Place::Local(dir))
    }

    /// Where it is, for people.
    pub fn display(&self) -> String {
        match self {
            Place::Local(dir) => dir.display().to_string(),
            Place::Remote { url, .. } => url.to_string(),
        }
    }

    /// The catalog's file or object, for messages.
    pub fn catalog_path(&self) -> PathBuf {
        match self {
            Place::Local(dir) => dir.join("catalog.json"),
            Place::Remote { url, .. } => PathBuf::from(format!("{url}catalog.json")),
        }
    }

    fn catalog_object(url: &Url) -> Result<StorePath, WarehouseError> {
        StorePath::from_url_path(format!("{}catalog.json", url.path())).map_err(|e| {
            WarehouseError::Location {
                location: url.to_string(),
                why: e.to_string(),
            }
        })
    }

    fn store_error(&self, e: object_store::Error) -> WarehouseError {
        WarehouseError::Io {
            path: self.catalog_path(),
            source: std::io::Error::other(e),
        }
    }

    /// The catalog's bytes (`None`: no catalog yet) and their version.
    pub async fn read(&self) -> Result<(Option<Vec<u8>>, Version), WarehouseError> {
        match self {
            Place::Local(dir) => {
                let path = dir.join("catalog.json");
                match std::fs::read(&path) {
                    Ok(bytes) => Ok((Some(bytes), Version::Locked)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Ok((None, Version::Locked))
                    }
                    Err(source) => Err(WarehouseError::Io { path, source }),
                }
            }
            Place::Remote { url, store } => {
                let path = Self::catalog_object(url)?;
                match store.get(&path).await {
                    Ok(got) => {
                        let version = UpdateVersion {
                            e_tag: got.meta.e_tag.clone(),
                            version: got.meta.version.clone(),
                        };
                        let bytes = got.bytes().await.map_err(|e| self.store_error(e))?;
                        Ok((Some(bytes.to_vec()), Version::Object(Some(version))))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok((None, Version::Object(None))),
                    Err(e) => Err(self.store_error(e)),
                }
            }
        }
    }

    /// Writes the catalog if it is still at `version`: `Ok(false)` if
    /// another writer changed it since (read it again and retry).
    pub async fn write(&self, bytes: Vec<u8>, version: Version) -> Result<bool, WarehouseError> {
        match (self, version) {
            (Place::Local(dir), _) => {
                let path = dir.join("catalog.json");
                strata_proto::fsutil::write_atomic(&path, &bytes)
                    .map_err(|source| WarehouseError::Io { path, source })?;
                Ok(true)
            }
            (Place::Remote { url, store }, version) => {
                let mode = match version {
                    Version::Object(Some(v)) => PutMode::Update(v),
                    _ => PutMode::Create,
                };
                let path = Self::catalog_object(url)?;
                let options = PutOptions {
                    mode,
                    ..Default::default()
                };
                match store
                    .put_opts(&path, PutPayload::from(bytes), options)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. },
                    ) => Ok(false),
                    Err(e) => Err(self.store_error(e)),
                }
            }
        }
    }

    /// Holds the local catalog's lock until dropped (none for an object
    /// store, whose writes are conditional).
    pub fn lock(&self) -> Result<Option<std::fs::File>, WarehouseError> {
        let Place::Local(dir) = self else {
            return Ok(None);
        };
        let path = dir.join("catalog.lock");
        let io = |source| WarehouseError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(Some(file))
    }

    /// A fresh directory for the table `schema.name` (made, when local).
    pub fn new_table(&self, schema: &str, name: &str) -> Result<Url, WarehouseError> {
        let leaf = format!(
            "{name}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        match self {
            Place::Local(dir) => {
                let dir = dir.join("tables").join(schema).join(leaf);
                std::fs::create_dir_all(&dir).map_err(|source| WarehouseError::Io {
                    path: dir.clone(),
                    source,
                })?;
                Url::from_directory_path(&dir).map_err(|()| WarehouseError::Location {
                    location: dir.display().to_string(),
                    why: "not an absolute path".into(),
                })
            }
            Place::Remote { url, .. } => {
                let segment = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                url.join(&format!("tables/{}/{}/", segment(schema), segment(&leaf)))
                    .map_err(|e| WarehouseError::Location {
                        location: url.to_string(),
                        why: e.to_string(),
                    })
            }
        }
    }
}

/// Removes a table's directory and every file under it (local or in an
/// object store); failures are logged, not returned: the table is gone
/// from the catalog already.
pub async fn remove_table_files(location: &Url) {
    if location.scheme() == "file" {
        if let Ok(dir) = location.to_file_path()
            && let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "a table's files stay");
        }
        return;
    }
    let (store, prefix) = match object_store_for(location) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%location, error = %e, "a table's files stay");
            return;
        }
    };
    if let Err(e) = strata_framework::write::delete_prefix(store.as_ref(), &prefix).await {
        tracing::warn!(%location, error = %e, "some of a table's files stay");
    }
}
