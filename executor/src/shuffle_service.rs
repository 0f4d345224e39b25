//! Serving shuffle output over Arrow Flight.
//!
//! Map tasks write one Arrow IPC stream file per (map task, output
//! partition) under `{root}/{job}/s{stage}/p{partition}/`. A reader fetches
//! one output partition of a stage with `DoGet` and a [`ShuffleTicket`]:
//! the service streams every file of that partition, in name order. A
//! partition no map task wrote to is empty, not an error.

use std::path::{Path, PathBuf};
use std::pin::Pin;

use arrow_flight::decode::FlightDataDecoder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::ids::{PartitionId, StageId};

/// Names one output partition of one stage of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShuffleTicket {
    /// The job.
    pub job: String,
    /// The stage.
    pub stage: StageId,
    /// The output partition.
    pub partition: PartitionId,
    /// Only these map tasks' files (all of them when `None`).
    pub maps: Option<Vec<PartitionId>>,
}

/// Why a shuffle request failed.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    /// A ticket that does not parse or names a path outside the root.
    #[error("invalid shuffle ticket {ticket:?}: expected JOB/sSTAGE/pPARTITION[/mMAP,MAP…]")]
    BadTicket {
        /// The ticket as given.
        ticket: String,
    },
    /// A shuffle file could not be read.
    #[error("cannot read shuffle file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The remote executor could not be reached or failed.
    #[error("fetching {ticket} from {address}: {message}")]
    Fetch {
        /// The executor.
        address: String,
        /// The ticket.
        ticket: String,
        /// What went wrong.
        message: String,
    },
}

impl ShuffleTicket {
    /// The wire form: `JOB/sSTAGE/pPARTITION`, then `/mMAP,MAP…` when it
    /// names map tasks.
    pub fn encode(&self) -> String {
        let mut s = format!("{}/s{}/p{}", self.job, self.stage, self.partition);
        if let Some(maps) = &self.maps {
            s.push_str("/m");
            for (i, m) in maps.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&m.to_string());
            }
        }
        s
    }

    /// Parses the wire form, refusing anything that could leave the root.
    pub fn parse(text: &str) -> Result<ShuffleTicket, ShuffleError> {
        let bad = || ShuffleError::BadTicket {
            ticket: text.chars().take(200).collect(),
        };
        let mut parts = text.split('/');
        let (Some(job), Some(stage), Some(partition), maps, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let maps = match maps {
            None => None,
            Some(m) => {
                let list = m.strip_prefix('m').ok_or_else(bad)?;
                let parsed: Result<Vec<PartitionId>, _> = if list.is_empty() {
                    Ok(Vec::new())
                } else {
                    list.split(',').map(str::parse).collect()
                };
                Some(parsed.map_err(|_| bad())?)
            }
        };
        let job_ok = !job.is_empty()
            && job.len() <= 255
            && job != "."
            && job != ".."
            && job
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let stage = stage.strip_prefix('s').and_then(|s| s.parse().ok());
        let partition = partition.strip_prefix('p').and_then(|p| p.parse().ok());
        match (job_ok, stage, partition) {
            (true, Some(stage), Some(partition)) => Ok(ShuffleTicket {
                job: job.to_owned(),
                stage,
                partition,
                maps,
            }),
            _ => Err(bad()),
        }
    }

    /// The directory holding this partition's files under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.job)
            .join(format!("s{}", self.stage))
            .join(format!("p{}", self.partition))
    }
}

/// The map task that wrote a shuffle file (`from-{map}.arrow`).
fn map_of(path: &Path) -> Option<PartitionId> {
    path.file_stem()?
        .to_str()?
        .strip_prefix("from-")?
        .parse()
        .ok()
}

/// The files of one output partition under `root` (only the named map
/// tasks' when the ticket names them), in order.
fn partition_files(root: &Path, ticket: &ShuffleTicket) -> Result<Vec<PathBuf>, ShuffleError> {
    let dir = ticket.dir(root);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "arrow"))
            .filter(|p| match &ticket.maps {
                None => true,
                Some(maps) => map_of(p).is_some_and(|m| maps.contains(&m)),
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ShuffleError::Read {
                path: dir,
                message: e.to_string(),
            });
        }
    };
    files.sort();
    Ok(files)
}

/// Items read ahead of their consumer, per partition being read.
const READ_AHEAD: usize = 2;

/// Streams one output partition under `root` (only the named map tasks'
/// files when the ticket names them): a blocking thread hands each file to
/// `read_file`, which sends its items and returns `false` to stop (an
/// error, or a consumer that went away). At most [`READ_AHEAD`] items wait
/// for the consumer, so a partition is never held whole in memory.
fn stream_partition<T: Send + 'static>(
    root: PathBuf,
    ticket: ShuffleTicket,
    mut read_file: impl FnMut(&Path, &Sender<T>) -> bool + Send + 'static,
) -> futures::stream::BoxStream<'static, Result<T, ShuffleError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || match partition_files(&root, &ticket) {
        Ok(files) => {
            for path in files {
                if !read_file(&path, &tx) {
                    return;
                }
            }
        }
        Err(e) => {
            tx.blocking_send(Err(e)).ok();
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Where a partition's reading thread sends what it reads.
type Sender<T> = tokio::sync::mpsc::Sender<Result<T, ShuffleError>>;

/// The error of reading shuffle file `path`.
fn read_err(path: &Path, message: impl ToString) -> ShuffleError {
    ShuffleError::Read {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Streams every batch of one output partition under `root`, decoded.
pub fn partition_stream(
    root: PathBuf,
    ticket: ShuffleTicket,
) -> futures::stream::BoxStream<'static, Result<RecordBatch, ShuffleError>> {
    stream_partition(root, ticket, |path, tx| {
        let reader = std::fs::File::open(path)
            .map_err(|e| read_err(path, e))
            .and_then(|file| {
                StreamReader::try_new(std::io::BufReader::with_capacity(1 << 16, file), None)
                    .map_err(|e| read_err(path, e))
                    // SAFETY: shuffle files are written by this
                    // executor's own shuffle writers (under a temporary
                    // name, renamed when complete) from batches that
                    // were valid; they are trusted like DataFusion's
                    // own spill files, which it reads unvalidated too.
                    .map(|r| unsafe { r.with_skip_validation(true) })
            });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                tx.blocking_send(Err(e)).ok();
                return false;
            }
        };
        for batch in reader {
            let item = batch.map_err(|e| read_err(path, e));
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return false;
            }
        }
        true
    })
}

/// Streams one output partition as Flight messages cut straight from its
/// files: the files are Arrow IPC streams, whose encapsulated messages are
/// exactly what Flight carries (a message's flatbuffer header and its
/// body), so serving a partition never decodes or re-encodes a batch. The
/// first file's schema message opens the stream; the other files'
/// (identical) schema messages are skipped.
pub fn partition_flight_data(
    root: PathBuf,
    ticket: ShuffleTicket,
) -> futures::stream::BoxStream<'static, Result<FlightData, ShuffleError>> {
    let mut schema_sent = false;
    stream_partition(root, ticket, move |path, tx| {
        let mut reader = match std::fs::File::open(path) {
            Ok(f) => std::io::BufReader::with_capacity(1 << 16, f),
            Err(e) => {
                tx.blocking_send(Err(read_err(path, e))).ok();
                return false;
            }
        };
        loop {
            let message = match next_ipc_message(&mut reader) {
                Ok(Some(m)) => m,
                Ok(None) => return true,
                Err(e) => {
                    tx.blocking_send(Err(read_err(path, e))).ok();
                    return false;
                }
            };
            if message.is_schema {
                if schema_sent {
                    continue;
                }
                schema_sent = true;
            }
            let data = FlightData::new()
                .with_data_header(message.header)
                .with_data_body(message.body);
            if tx.blocking_send(Ok(data)).is_err() {
                return false;
            }
        }
    })
}

/// One encapsulated message of an Arrow IPC stream.
struct IpcMessage {
    /// The `Message` flatbuffer (with its padding).
    header: prost::bytes::Bytes,
    /// The message body (empty for a schema).
    body: prost::bytes::Bytes,
    /// Whether it is the schema message.
    is_schema: bool,
}

/// Reads the next message of an Arrow IPC stream; `None` at its
/// end-of-stream marker (or at the end of the file).
fn next_ipc_message(r: &mut impl std::io::Read) -> Result<Option<IpcMessage>, IpcError> {
    use datafusion::arrow::ipc::{MessageHeader, root_as_message};
    let mut word = [0u8; 4];
    if !read_exact_or_eof(r, &mut word)? {
        return Ok(None);
    }
    if word == [0xff; 4] {
        // The continuation marker; the length follows.
        if !read_exact_or_eof(r, &mut word)? {
            return Err(IpcError::TruncatedLength);
        }
    }
    let len = u32::from_le_bytes(word) as usize;
    if len == 0 {
        return Ok(None);
    }
    let mut header = vec![0u8; len];
    r.read_exact(&mut header)
        .map_err(IpcError::TruncatedHeader)?;
    let message = root_as_message(&header).map_err(|e| IpcError::InvalidHeader(e.to_string()))?;
    let is_schema = message.header_type() == MessageHeader::Schema;
    let body_len = usize::try_from(message.bodyLength())
        .map_err(|_| IpcError::BodyLength(message.bodyLength()))?;
    let mut body = vec![0u8; body_len];
    r.read_exact(&mut body).map_err(IpcError::TruncatedBody)?;
    Ok(Some(IpcMessage {
        header: header.into(),
        body: body.into(),
        is_schema,
    }))
}

/// Fills `buf`, or returns `false` at a clean end of file.
fn read_exact_or_eof(r: &mut impl std::io::Read, buf: &mut [u8]) -> Result<bool, IpcError> {
    let mut read = 0;
    while read < buf.len() {
        match r.read(&mut buf[read..]) {
            Ok(0) if read == 0 => return Ok(false),
            Ok(0) => return Err(IpcError::Truncated),
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IpcError::Io(e)),
        }
    }
    Ok(true)
}

/// Why a shuffle file's IPC stream could not be read.
#[derive(Debug, thiserror::Error)]
enum IpcError {
    /// The file ends inside a message's length.
    #[error("truncated message length")]
    TruncatedLength,
    /// The file ends inside a message's first word.
    #[error("truncated message")]
    Truncated,
    /// The file ends inside a message's header.
    #[error("truncated message header: {0}")]
    TruncatedHeader(#[source] std::io::Error),
    /// A header that is not an Arrow IPC message.
    #[error("invalid message header: {0}")]
    InvalidHeader(String),
    /// A negative body length.
    #[error("invalid body length {0}")]
    BodyLength(i64),
    /// The file ends inside a message's body.
    #[error("truncated message body: {0}")]
    TruncatedBody(#[source] std::io::Error),
    /// Reading failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

/// The Flight service of an executor's shuffle output.
#[derive(Clone, Debug)]
pub struct ShuffleService {
    root: PathBuf,
}

impl ShuffleService {
    /// Serves the shuffle files under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ShuffleService { root: root.into() }
    }

    /// As a tonic service.
    pub fn into_server(self) -> FlightServiceServer<ShuffleService> {
        FlightServiceServer::new(self)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "the shuffle service does not support {what}"
    )))
}

#[tonic::async_trait]
impl FlightService for ShuffleService {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("handshake")
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("list_flights")
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("get_flight_info")
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("poll_flight_info")
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("get_schema")
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let text = String::from_utf8_lossy(&request.into_inner().ticket).into_owned();
        let ticket =
            ShuffleTicket::parse(&text).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stream = partition_flight_data(self.root.clone(), ticket)
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(stream.boxed()))
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported("do_put")
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("do_exchange")
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("do_action")
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("list_actions")
    }
}

/// One channel per remote executor, shared by every fetch of this process
/// (a tonic channel multiplexes requests over one HTTP/2 connection).
fn channel(address: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CHANNELS: OnceLock<Mutex<HashMap<String, tonic::transport::Channel>>> = OnceLock::new();
    let mut map = CHANNELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = map.get(address) {
        return Ok(c.clone());
    }
    let c = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy();
    map.insert(address.to_owned(), c.clone());
    Ok(c)
}

/// A stream of one output partition's batches from the executor at
/// `address` (`host:port`).
pub async fn fetch_stream(
    address: &str,
    ticket: &ShuffleTicket,
) -> Result<impl Stream<Item = Result<RecordBatch, ShuffleError>> + Send + 'static, ShuffleError> {
    let fail = {
        let address = address.to_owned();
        let ticket = ticket.encode();
        move |message: String| ShuffleError::Fetch {
            address: address.clone(),
            ticket: ticket.clone(),
            message,
        }
    };
    let channel = channel(address).map_err(|e| fail(e.to_string()))?;
    // One batch may exceed tonic's default 4 MiB message limit.
    let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(1 << 30);
    let mut client = inner;
    let response = client
        .do_get(Ticket::new(ticket.encode()))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let data = response.into_inner().map_err(FlightError::from);
    // SAFETY: the sender is another executor of the same driver, serving
    // the files its own shuffle writers wrote from valid batches (see
    // `partition_stream`); the bytes are checked as Arrow messages, not
    // revalidated array by array.
    let decoder = unsafe { FlightDataDecoder::new(data).with_skip_validation() };
    let stream = arrow_flight::decode::FlightRecordBatchStream::new(decoder);
    Ok(stream.map_err(move |e| fail(e.to_string())))
}

/// Fetches one output partition from the executor at `address` (`host:port`).
pub async fn fetch(
    address: &str,
    ticket: &ShuffleTicket,
) -> Result<Vec<RecordBatch>, ShuffleError> {
    fetch_stream(address, ticket).await?.try_collect().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::ipc::writer::StreamWriter;
    use std::sync::Arc;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + n)),
                Arc::new(StringArray::from_iter_values(
                    (from..from + n).map(|i| format!("row{i}")),
                )),
            ],
        )
        .unwrap()
    }

    fn write(path: &Path, batches: &[RecordBatch]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w =
            StreamWriter::try_new(std::fs::File::create(path).unwrap(), &batches[0].schema())
                .unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn tickets_parse_and_refuse_escapes() {
        let t = ShuffleTicket::parse("q1/s0/p3").unwrap();
        assert_eq!(
            t,
            ShuffleTicket {
                job: "q1".into(),
                stage: StageId::new(0),
                partition: PartitionId::new(3),
                maps: None,
            }
        );
        assert_eq!(ShuffleTicket::parse(&t.encode()).unwrap(), t);
        for bad in [
            "../etc/s0/p0",
            "q1/s0",
            "q1/0/p1",
            "q1/s0/p1/x",
            "a b/s0/p0",
            "",
            "../s0/p0",
        ] {
            assert!(ShuffleTicket::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_partitions_over_flight() {
        let root = tempfile::tempdir().unwrap();
        let t = ShuffleTicket {
            job: "j".into(),
            stage: StageId::new(1),
            partition: PartitionId::new(0),
            maps: None,
        };
        write(
            &t.dir(root.path()).join("from-0.arrow"),
            &[batch(0, 10), batch(10, 5)],
        );
        write(&t.dir(root.path()).join("from-1.arrow"), &[batch(100, 3)]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ShuffleService::new(root.path()).into_server())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let got = fetch(&addr, &t).await.unwrap();
        let rows: usize = got.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 18);
        assert_eq!(
            got[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            0
        );
        // A partition nobody wrote is empty.
        let empty = ShuffleTicket {
            partition: PartitionId::new(7),
            ..t.clone()
        };
        assert!(fetch(&addr, &empty).await.unwrap().is_empty());
        // Naming map tasks reads only their files.
        let only = ShuffleTicket {
            maps: Some(vec![PartitionId::new(1)]),
            ..t.clone()
        };
        assert_eq!(ShuffleTicket::parse(&only.encode()).unwrap(), only);
        let rows: usize = fetch(&addr, &only)
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 3);
        // A bad ticket is refused with a clear error, and the service carries on.
        let mut client = arrow_flight::FlightClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        let Err(err) = client.do_get(Ticket::new("../../etc/s0/p0")).await else {
            panic!("a ticket escaping the root must be refused");
        };
        assert!(err.to_string().contains("invalid shuffle ticket"), "{err}");
        assert_eq!(fetch(&addr, &t).await.unwrap().len(), 3);
        // A truncated file is a clear error, not a short partition.
        let cut = ShuffleTicket {
            partition: PartitionId::new(2),
            ..t.clone()
        };
        let whole = t.dir(root.path()).join("from-0.arrow");
        let bytes = std::fs::read(&whole).unwrap();
        let torn = cut.dir(root.path()).join("from-0.arrow");
        std::fs::create_dir_all(torn.parent().unwrap()).unwrap();
        std::fs::write(&torn, &bytes[..bytes.len() - 20]).unwrap();
        let err = fetch(&addr, &cut).await.unwrap_err().to_string();
        assert!(err.contains("cannot read shuffle file"), "{err}");
        assert_eq!(fetch(&addr, &t).await.unwrap().len(), 3);
        server.abort();
    }
}
