//! Where tables live: an [`ObjectStoreRegistry`] that lets the driver and the
//! executors read table locations on the local file system (plain paths and
//! `file://` URLs) and in S3 or any S3-compatible server (`s3://bucket/...`).
//!
//! [`StrataObjectStoreRegistry`] serves `file://` like DataFusion's
//! `DefaultObjectStoreRegistry` and creates an S3 client for a bucket the
//! first time a location in that bucket is used, then keeps it. The client is
//! configured the standard AWS way, from the environment
//! ([`AmazonS3Builder::from_env`]): `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`) for a server other than AWS,
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint, and
//! `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`. Requests are path-style
//! (`endpoint/bucket/key`) unless virtual-hosted style is asked for, which is
//! what local S3-compatible servers need.
//! [`StrataObjectStoreRegistry::with_s3_options`] takes the same settings
//! explicitly instead of from the environment.
//!
//! A session uses it through its runtime:
//!
//! ```no_run
//! use datafusion::prelude::{SessionConfig, SessionContext};
//!
//! # fn main() -> datafusion::error::Result<()> {
//! let runtime = strata_executor::storage::runtime_env_builder().build_arc()?;
//! let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
//! # let _ = ctx;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use url::Url;

/// The URL schemes [`StrataObjectStoreRegistry`] serves, for error messages.
const SUPPORTED: &str = "file:// (or a plain local path), s3://bucket/ and s3a://bucket/";

/// Where the S3 settings of a [`StrataObjectStoreRegistry`] come from.
enum S3Settings {
    /// The `AWS_*` environment variables, read when a bucket is first used.
    Env,
    /// Explicit settings; the environment is not read.
    Options(Vec<(AmazonS3ConfigKey, String)>),
}

/// An [`ObjectStoreRegistry`] for Strata's table locations: the local file
/// system (`file://`) and S3 or S3-compatible buckets (`s3://`, `s3a://`).
///
/// Local paths are served by one [`LocalFileSystem`]. The store of a bucket
/// is created on the first [`get_store`](ObjectStoreRegistry::get_store) of
/// a URL in it and cached under `scheme://bucket`; stores registered with
/// [`register_store`](ObjectStoreRegistry::register_store) take precedence.
/// Any other scheme is an error that names the scheme and the supported ones.
///
/// An S3 store needs credentials: an access key and secret, a web-identity
/// token file and role, ECS/EKS container credentials, or
/// `aws_skip_signature=true` for public buckets. The EC2 instance-metadata
/// service is used only when its endpoint is set explicitly
/// (`AWS_METADATA_ENDPOINT`, e.g. `http://169.254.169.254`), so that a
/// machine without credentials gets a clear error at once rather than a
/// request to a metadata service that is not there.
pub struct StrataObjectStoreRegistry {
    /// Stores by `scheme://host[:port]` key (credentials removed).
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    s3: S3Settings,
}

impl StrataObjectStoreRegistry {
    /// A registry serving `file://` and creating S3 stores configured from
    /// the `AWS_*` environment variables (read when a bucket is first used).
    pub fn new() -> Self {
        Self::with_settings(S3Settings::Env)
    }

    /// A registry serving `file://` and creating S3 stores from exactly these
    /// settings (the bucket comes from each URL); the environment is not
    /// read. For a local S3-compatible server, set at least
    /// [`AmazonS3ConfigKey::Endpoint`], the access key and secret, and
    /// `AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)` to `"true"`
    /// for a plain-HTTP endpoint.
    pub fn with_s3_options<I, V>(options: I) -> Self
    where
        I: IntoIterator<Item = (AmazonS3ConfigKey, V)>,
        V: Into<String>,
    {
        let options = options.into_iter().map(|(k, v)| (k, v.into())).collect();
        Self::with_settings(S3Settings::Options(options))
    }

    fn with_settings(s3: S3Settings) -> Self {
        let mut stores: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        stores.insert("file://".to_string(), Arc::new(LocalFileSystem::new()));
        Self {
            stores: RwLock::new(stores),
            s3,
        }
    }

    /// Sets this registry as the object store registry of `builder`.
    pub fn install(self, builder: RuntimeEnvBuilder) -> RuntimeEnvBuilder {
        builder.with_object_store_registry(Arc::new(self))
    }

    /// An S3 builder with this registry's settings (no bucket yet).
    fn s3_builder(&self) -> AmazonS3Builder {
        match &self.s3 {
            S3Settings::Env => AmazonS3Builder::from_env(),
            S3Settings::Options(options) => options
                .iter()
                .fold(AmazonS3Builder::new(), |b, (k, v)| b.with_config(*k, v)),
        }
    }

    /// Creates the store of the bucket of `url` (whose key is `key`).
    fn create_s3_store(&self, url: &Url, key: &str) -> Result<Arc<dyn ObjectStore>> {
        let bucket = match url.host_str() {
            Some(bucket) if !bucket.is_empty() => bucket,
            _ => {
                return Err(DataFusionError::Configuration(format!(
                    "{url}: an S3 location needs a bucket, as in s3://bucket/path/"
                )));
            }
        };
        let builder = self.s3_builder().with_bucket_name(bucket);
        if !has_credentials(&builder) {
            return Err(DataFusionError::Configuration(format!(
                "{key}: no S3 credentials configured (set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, \
                 or AWS_SKIP_SIGNATURE=true for a public bucket, or \
                 AWS_METADATA_ENDPOINT to use the EC2 instance metadata service)"
            )));
        }
        let store = builder.build().map_err(|e| {
            DataFusionError::ObjectStore(Box::new(e))
                .context(format!("{key}: cannot configure the S3 client"))
        })?;
        Ok(Arc::new(store))
    }
}

impl Default for StrataObjectStoreRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StrataObjectStoreRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<String> = self
            .stores
            .read()
            .map(|stores| stores.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        let s3 = match &self.s3 {
            S3Settings::Env => "environment",
            S3Settings::Options(_) => "explicit options",
        };
        f.debug_struct("StrataObjectStoreRegistry")
            .field("stores", &keys)
            .field("s3_settings", &s3)
            .finish()
    }
}

impl ObjectStoreRegistry for StrataObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.insert(url_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = url_key(url);
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.remove(&key).ok_or_else(|| {
            DataFusionError::Configuration(format!("no object store is registered for {key}"))
        })
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = url_key(url);
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(store));
        }
        match url.scheme() {
            "s3" | "s3a" => {
                let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
                // Another caller may have created it meanwhile.
                if let Some(store) = stores.get(&key) {
                    return Ok(Arc::clone(store));
                }
                let store = self.create_s3_store(url, &key)?;
                stores.insert(key, Arc::clone(&store));
                Ok(store)
            }
            scheme => Err(DataFusionError::Configuration(format!(
                "{key}: unsupported storage scheme \"{scheme}://\"; Strata supports {SUPPORTED}"
            ))),
        }
    }
}

/// Whether `builder` has a source of credentials other than the EC2
/// instance-metadata service at its default address (see
/// [`StrataObjectStoreRegistry`]).
fn has_credentials(builder: &AmazonS3Builder) -> bool {
    let set = |key: AmazonS3ConfigKey| {
        builder
            .get_config_value(&key)
            .is_some_and(|v| !v.trim().is_empty())
    };
    let truthy = |key: AmazonS3ConfigKey| {
        builder.get_config_value(&key).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "on" | "yes" | "y"
            )
        })
    };
    // A partial key pair is left to the builder, which names what is missing.
    set(AmazonS3ConfigKey::AccessKeyId)
        || set(AmazonS3ConfigKey::SecretAccessKey)
        || (set(AmazonS3ConfigKey::WebIdentityTokenFile) && set(AmazonS3ConfigKey::RoleArn))
        || set(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || (set(AmazonS3ConfigKey::ContainerCredentialsFullUri)
            && set(AmazonS3ConfigKey::ContainerAuthorizationTokenFile))
        || set(AmazonS3ConfigKey::MetadataEndpoint)
        || truthy(AmazonS3ConfigKey::SkipSignature)
}

/// The registry key of `url`: `scheme://host[:port]`, without credentials,
/// as DataFusion's default registry keys it.
fn url_key(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

/// A [`RuntimeEnvBuilder`] whose object store registry is a
/// [`StrataObjectStoreRegistry::new`] (S3 configured from the environment):
/// what the driver and the executors build their runtimes from.
pub fn runtime_env_builder() -> RuntimeEnvBuilder {
    StrataObjectStoreRegistry::new().install(RuntimeEnvBuilder::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::File;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use object_store::path::Path as ObjectPath;
    use object_store::{ClientConfigKey, ObjectStoreExt, PutPayload};

    /// The S3-compatible server the tests run: moto's, from PyPI.
    const SERVER_ENV: &str = "STRATA_MOTO_SERVER";
    const INSTALL_HINT: &str = "install it with `python3 -m pip install 'moto[server]'` \
         (.ci/run does this), or point STRATA_MOTO_SERVER at a moto_server binary";
    /// How long the server may take to come up.
    const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
    /// How long a query against the server may take before the test fails.
    const QUERY_DEADLINE: Duration = Duration::from_secs(120);

    /// A moto S3 server on 127.0.0.1, started by the test and killed on drop.
    struct S3Server {
        child: Child,
        addr: SocketAddr,
        log: tempfile::NamedTempFile,
    }

    /// Why the S3 test server did not come up.
    #[derive(Debug, thiserror::Error)]
    enum NotReady {
        /// It exited.
        #[error("it exited with {status}; its log:\n{log}")]
        Exited {
            status: std::process::ExitStatus,
            log: String,
        },
        /// It did not answer in time.
        #[error("no answer on {addr} within {STARTUP_DEADLINE:?}; its log:\n{log}")]
        Silent { addr: SocketAddr, log: String },
    }

    impl S3Server {
        /// Starts the server on a free port and waits until it answers.
        fn start() -> Self {
            let program = std::env::var(SERVER_ENV).unwrap_or_else(|_| "moto_server".into());
            let mut last_failure = None;
            // A port found free can be taken by someone else before the
            // server binds it: then try another.
            for _ in 0..3 {
                let port = free_port();
                let log = tempfile::NamedTempFile::new().expect("temp file for the server log");
                let spawned = Command::new(&program)
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(log.reopen().expect("server log"))
                    .stderr(log.reopen().expect("server log"))
                    .spawn();
                let child = match spawned {
                    Ok(child) => child,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        panic!("S3 test server `{program}` not found: {INSTALL_HINT}")
                    }
                    Err(e) => panic!("cannot start S3 test server `{program}`: {e}"),
                };
                let mut server = S3Server {
                    child,
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    log,
                };
                match server.wait_ready() {
                    Ok(()) => return server,
                    Err(failure) => last_failure = Some(failure),
                }
            }
            let why = last_failure.map_or_else(String::new, |f| f.to_string());
            panic!("S3 test server `{program}` did not start: {why}\n({INSTALL_HINT})")
        }

        /// Polls the server until it answers an S3 request, it exits, or the
        /// deadline passes.
        fn wait_ready(&mut self) -> Result<(), NotReady> {
            let deadline = Instant::now() + STARTUP_DEADLINE;
            let mut delay = Duration::from_millis(20);
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(NotReady::Exited {
                        status,
                        log: self.log(),
                    });
                }
                if http(self.addr, "GET", "/").is_ok_and(|code| code == 200) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(NotReady::Silent {
                        addr: self.addr,
                        log: self.log(),
                    });
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }

        fn log(&self) -> String {
            let mut text = String::new();
            File::open(self.log.path())
                .and_then(|mut f| f.read_to_string(&mut text))
                .ok();
            text
        }

        fn endpoint(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Creates a bucket (moto does not check request signatures).
        fn create_bucket(&self, bucket: &str) {
            let code = http(self.addr, "PUT", &format!("/{bucket}")).expect("create bucket");
            assert_eq!(
                code,
                200,
                "creating bucket {bucket}; server log:\n{}",
                self.log()
            );
        }

        /// The S3 settings for this server, with test credentials.
        fn options(&self) -> Vec<(AmazonS3ConfigKey, String)> {
            vec![
                (AmazonS3ConfigKey::Endpoint, self.endpoint()),
                (AmazonS3ConfigKey::Region, "us-east-1".into()),
                (AmazonS3ConfigKey::AccessKeyId, "strata-test".into()),
                (
                    AmazonS3ConfigKey::SecretAccessKey,
                    "strata-test-secret".into(),
                ),
                (
                    AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
                    "true".into(),
                ),
            ]
        }

        /// A session whose runtime reads `s3://` from this server.
        fn session(&self) -> (SessionContext, Arc<StrataObjectStoreRegistry>) {
            let registry = Arc::new(StrataObjectStoreRegistry::with_s3_options(self.options()));
            let runtime = RuntimeEnvBuilder::new()
                .with_object_store_registry(Arc::clone(&registry) as _)
                .build_arc()
                .expect("runtime");
            let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
            (ctx, registry)
        }
    }

    impl Drop for S3Server {
        fn drop(&mut self) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }

    /// A port on 127.0.0.1 that was free a moment ago.
    fn free_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port()
    }

    /// One bodiless HTTP/1.1 request; returns the status code.
    fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<u16> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let head = String::from_utf8_lossy(&response);
        head.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad HTTP response: {head:.200}")))
    }

    /// A small Parquet file: ids 1..=10 and their names.
    fn parquet_bytes() -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let ids: Vec<i64> = (1..=10).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .expect("batch");
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).expect("parquet writer");
        writer.write(&batch).expect("write parquet");
        writer.into_inner().expect("finish parquet")
    }

    async fn put(registry: &StrataObjectStoreRegistry, url: &str, bytes: Vec<u8>) {
        let url = Url::parse(url).expect("url");
        let store = registry.get_store(&url).expect("store");
        let path = ObjectPath::from_url_path(url.path()).expect("object path");
        store
            .put(&path, PutPayload::from(bytes))
            .await
            .unwrap_or_else(|e| panic!("put {url}: {e}"));
    }

    /// Runs `sql` and returns its single row of two Int64 values.
    async fn two_ints(ctx: &SessionContext, sql: &str) -> (i64, i64) {
        let batches = tokio::time::timeout(QUERY_DEADLINE, async {
            ctx.sql(sql).await?.collect().await
        })
        .await
        .unwrap_or_else(|_| panic!("query timed out: {sql}"))
        .unwrap_or_else(|e| panic!("query failed: {sql}: {e}"));
        let batch = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .expect("a result row");
        let col = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64 column")
                .value(0)
        };
        (col(0), col(1))
    }

    /// Runs `sql`, expecting an error, and returns its message.
    async fn error_of(ctx: &SessionContext, sql: &str) -> String {
        let result = tokio::time::timeout(QUERY_DEADLINE, async {
            ctx.sql(sql).await?.collect().await
        })
        .await
        .unwrap_or_else(|_| panic!("no answer (hang?): {sql}"));
        match result {
            Ok(_) => panic!("expected an error from: {sql}"),
            Err(e) => e.strip_backtrace(),
        }
    }

    #[tokio::test]
    async fn parquet_table_on_s3() {
        let server = S3Server::start();
        server.create_bucket("strata-pq");
        let (ctx, registry) = server.session();
        put(
            &registry,
            "s3://strata-pq/tables/nums/part-0.parquet",
            parquet_bytes(),
        )
        .await;
        ctx.sql(
            "CREATE EXTERNAL TABLE nums STORED AS PARQUET \
             LOCATION 's3://strata-pq/tables/nums/'",
        )
        .await
        .expect("create external table");
        let (count, sum) = two_ints(&ctx, "SELECT count(*), sum(id) FROM nums").await;
        assert_eq!((count, sum), (10, 55));
        let (count, max) = two_ints(
            &ctx,
            "SELECT count(*), max(id) FROM nums WHERE name LIKE 'n1%'",
        )
        .await;
        assert_eq!((count, max), (2, 10));
    }

    /// Set in the child process of [`s3_settings_from_the_environment`].
    const ENV_CHILD: &str = "STRATA_STORAGE_TEST_ENV_CHILD";

    /// The default registry reads the standard `AWS_*` variables. They are
    /// process-global, so the check runs in a child process of this test
    /// binary, with only the child's environment set.
    #[tokio::test]
    async fn s3_settings_from_the_environment() {
        if std::env::var_os(ENV_CHILD).is_some() {
            let runtime = runtime_env_builder().build_arc().expect("runtime");
            let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
            ctx.sql("CREATE EXTERNAL TABLE e STORED AS PARQUET LOCATION 's3://strata-env/e/'")
                .await
                .expect("create external table");
            assert_eq!(
                two_ints(&ctx, "SELECT count(*), sum(id) FROM e").await,
                (10, 55)
            );
            return;
        }
        let server = S3Server::start();
        server.create_bucket("strata-env");
        let (_ctx, registry) = server.session();
        put(
            &registry,
            "s3://strata-env/e/part-0.parquet",
            parquet_bytes(),
        )
        .await;

        let mut child = Command::new(std::env::current_exe().expect("test binary"));
        child.args([
            "--exact",
            "storage::tests::s3_settings_from_the_environment",
            "--nocapture",
        ]);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                child.env_remove(name);
            }
        }
        let output = child
            .env(ENV_CHILD, "1")
            .env("AWS_ENDPOINT_URL", server.endpoint())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "strata-test")
            .env("AWS_SECRET_ACCESS_KEY", "strata-test-secret")
            .stdin(Stdio::null())
            .output()
            .expect("run the child test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child test failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[tokio::test]
    async fn csv_table_on_s3() {
        let server = S3Server::start();
        server.create_bucket("strata-csv");
        let (ctx, registry) = server.session();
        let csv = "k,v\na,1\nb,2\na,3\n".as_bytes().to_vec();
        put(&registry, "s3://strata-csv/kv/1.csv", csv).await;
        put(
            &registry,
            "s3://strata-csv/kv/2.csv",
            b"k,v\nc,4\n".to_vec(),
        )
        .await;
        ctx.sql(
            "CREATE EXTERNAL TABLE kv (k VARCHAR, v BIGINT) STORED AS CSV \
             LOCATION 's3://strata-csv/kv/' OPTIONS ('format.has_header' 'true')",
        )
        .await
        .expect("create external table");
        let (count, sum) = two_ints(&ctx, "SELECT count(*), sum(v) FROM kv").await;
        assert_eq!((count, sum), (4, 10));
        let (count, sum) = two_ints(&ctx, "SELECT count(*), sum(v) FROM kv WHERE k = 'a'").await;
        assert_eq!((count, sum), (2, 4));
    }

    #[tokio::test]
    async fn missing_bucket_and_object_give_clear_errors() {
        let server = S3Server::start();
        server.create_bucket("strata-present");
        let (ctx, _registry) = server.session();

        let err = error_of(
            &ctx,
            "CREATE EXTERNAL TABLE gone STORED AS PARQUET \
             LOCATION 's3://strata-no-such-bucket/t/'",
        )
        .await;
        assert!(
            err.contains("NoSuchBucket") || err.contains("does not exist"),
            "unclear error for a missing bucket: {err}"
        );

        let err = error_of(
            &ctx,
            "CREATE EXTERNAL TABLE gone2 STORED AS PARQUET \
             LOCATION 's3://strata-present/no/such/file.parquet'",
        )
        .await;
        assert!(
            err.contains("No files found at s3://strata-present/no/such/file.parquet"),
            "unclear error for a missing object: {err}"
        );
    }

    #[tokio::test]
    async fn local_paths_and_file_urls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let table = dir.path().join("nums");
        std::fs::create_dir(&table).expect("table dir");
        std::fs::write(table.join("part-0.parquet"), parquet_bytes()).expect("write parquet");
        let runtime = runtime_env_builder().build_arc().expect("runtime");
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let path = table.display().to_string();
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE plain STORED AS PARQUET LOCATION '{path}/'"
        ))
        .await
        .expect("plain path");
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE url STORED AS PARQUET LOCATION 'file://{path}/'"
        ))
        .await
        .expect("file:// URL");
        assert_eq!(
            two_ints(&ctx, "SELECT count(*), sum(id) FROM plain").await,
            (10, 55)
        );
        assert_eq!(
            two_ints(&ctx, "SELECT count(*), sum(id) FROM url").await,
            (10, 55)
        );
    }

    #[tokio::test]
    async fn unsupported_scheme_is_a_clear_error() {
        let registry = StrataObjectStoreRegistry::new();
        for url in ["gs://bucket/t/", "hdfs://namenode:8020/t/"] {
            let err = registry
                .get_store(&Url::parse(url).expect("url"))
                .expect_err(url)
                .strip_backtrace();
            let scheme = url.split("://").next().unwrap_or_default();
            assert!(
                err.contains(&format!("\"{scheme}://\"")) && err.contains("s3://"),
                "unclear error for {url}: {err}"
            );
        }
        let runtime = runtime_env_builder().build_arc().expect("runtime");
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let err = error_of(
            &ctx,
            "CREATE EXTERNAL TABLE g STORED AS PARQUET LOCATION 'gs://bucket/t/'",
        )
        .await;
        assert!(
            err.contains("unsupported storage scheme \"gs://\""),
            "unclear error: {err}"
        );
    }

    #[test]
    fn s3_store_without_credentials_is_a_clear_error() {
        let registry = StrataObjectStoreRegistry::with_s3_options([(
            AmazonS3ConfigKey::Endpoint,
            "http://127.0.0.1:9",
        )]);
        let err = registry
            .get_store(&Url::parse("s3://bucket/t/").expect("url"))
            .expect_err("no credentials")
            .strip_backtrace();
        assert!(
            err.contains("s3://bucket") && err.contains("no S3 credentials configured"),
            "unclear error: {err}"
        );

        let registry = StrataObjectStoreRegistry::with_s3_options([
            (AmazonS3ConfigKey::Endpoint, "http://127.0.0.1:9"),
            (AmazonS3ConfigKey::AccessKeyId, "key-without-secret"),
        ]);
        let err = registry
            .get_store(&Url::parse("s3://bucket/t/").expect("url"))
            .expect_err("half a key pair")
            .strip_backtrace();
        assert!(
            err.contains("s3://bucket: cannot configure the S3 client") && err.contains("Secret"),
            "unclear error: {err}"
        );
    }

    #[test]
    fn s3_stores_are_cached_per_bucket() {
        let registry = StrataObjectStoreRegistry::with_s3_options([
            (AmazonS3ConfigKey::Endpoint, "http://127.0.0.1:9"),
            (AmazonS3ConfigKey::AccessKeyId, "k"),
            (AmazonS3ConfigKey::SecretAccessKey, "s"),
        ]);
        let get = |u: &str| registry.get_store(&Url::parse(u).expect("url")).expect(u);
        let a = get("s3://a/x/");
        assert!(Arc::ptr_eq(&a, &get("s3://a/y/z.parquet")));
        assert!(!Arc::ptr_eq(&a, &get("s3://b/x/")));
        let local = get("file:///tmp/x");
        assert!(Arc::ptr_eq(&local, &get("file:///var/y")));
        let replacement: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let url = Url::parse("s3://a/").expect("url");
        assert!(
            registry
                .register_store(&url, Arc::clone(&replacement))
                .is_some()
        );
        assert!(Arc::ptr_eq(&replacement, &get("s3://a/x/")));
        registry.deregister_store(&url).expect("deregister");
        assert!(!Arc::ptr_eq(&replacement, &get("s3://a/x/")));
    }
}
