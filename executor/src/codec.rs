//! Serialising Strata's operators with datafusion-proto: plan fragments
//! travel to executors as bytes (DataFusion's protobuf plus these
//! extension nodes).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use datafusion_proto::physical_plan::from_proto::parse_protobuf_partitioning;
use datafusion_proto::physical_plan::to_proto::serialize_partitioning;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::ids::StageId;
use crate::shuffle::{ShuffleLocation, ShuffleReaderExec, ShuffleWriterExec};
use crate::write::{DEFAULT_ROW_GROUP_ROWS, FileFormat, TableWriterExec, WriteSpec};

#[derive(Clone, PartialEq, prost::Message)]
struct LocationProto {
    #[prost(string, tag = "1")]
    root: String,
    #[prost(string, tag = "2")]
    job: String,
    #[prost(uint32, tag = "3")]
    stage: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WriterProto {
    #[prost(message, optional, tag = "1")]
    location: Option<LocationProto>,
    #[prost(message, optional, tag = "2")]
    partitioning: Option<protobuf::Partitioning>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ReaderProto {
    #[prost(message, optional, tag = "1")]
    location: Option<LocationProto>,
    #[prost(message, optional, tag = "2")]
    schema: Option<protobuf::Schema>,
    #[prost(uint64, tag = "3")]
    partitions: u64,
    #[prost(uint64, repeated, tag = "4")]
    constant_columns: Vec<u64>,
    /// How the stage's output is partitioned (absent: unknown, `partitions`
    /// of them).
    #[prost(message, optional, tag = "5")]
    partitioning: Option<protobuf::Partitioning>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TableWriterProto {
    /// The table directory's URL.
    #[prost(string, tag = "1")]
    table: String,
    #[prost(string, tag = "2")]
    prefix: String,
    /// `parquet` (or empty), `csv` or `json`.
    #[prost(string, tag = "3")]
    format: String,
    /// Parquet's codec.
    #[prost(string, tag = "4")]
    compression: String,
    #[prost(bool, tag = "5")]
    csv_header: bool,
    #[prost(uint32, tag = "6")]
    csv_delimiter: u32,
    #[prost(string, repeated, tag = "7")]
    partition_by: Vec<String>,
    /// Parquet's rows per row group (0: the default).
    #[prost(uint64, tag = "8")]
    row_group_rows: u64,
}

impl TableWriterProto {
    fn spec(&self) -> Result<WriteSpec> {
        let format = match self.format.as_str() {
            "" | "parquet" => FileFormat::Parquet {
                compression: match self.compression.as_str() {
                    "" => "snappy".into(),
                    c => c.into(),
                },
                row_group_rows: match self.row_group_rows {
                    0 => DEFAULT_ROW_GROUP_ROWS,
                    n => usize::try_from(n).unwrap_or(usize::MAX),
                },
            },
            "csv" => FileFormat::Csv {
                header: self.csv_header,
                delimiter: u8::try_from(self.csv_delimiter)
                    .map_err(|_| DataFusionError::Internal("a CSV delimiter is one byte".into()))?,
            },
            "json" => FileFormat::Json,
            other => return internal_err!("unknown write format {other}"),
        };
        Ok(WriteSpec {
            format,
            partition_by: self.partition_by.clone(),
        })
    }

    fn from_writer(w: &TableWriterExec) -> TableWriterProto {
        let spec = w.spec();
        let mut proto = TableWriterProto {
            table: w.table().to_string(),
            prefix: w.prefix().to_owned(),
            partition_by: spec.partition_by.clone(),
            ..Default::default()
        };
        match &spec.format {
            FileFormat::Parquet {
                compression,
                row_group_rows,
            } => {
                proto.format = "parquet".into();
                proto.compression = compression.clone();
                proto.row_group_rows = *row_group_rows as u64;
            }
            FileFormat::Csv { header, delimiter } => {
                proto.format = "csv".into();
                proto.csv_header = *header;
                proto.csv_delimiter = u32::from(*delimiter);
            }
            FileFormat::Json => proto.format = "json".into(),
        }
        proto
    }
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum NodeKind {
    #[prost(message, tag = "1")]
    Writer(WriterProto),
    #[prost(message, tag = "2")]
    Reader(ReaderProto),
    #[prost(message, tag = "3")]
    TableWriter(TableWriterProto),
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(oneof = "NodeKind", tags = "1, 2, 3")]
    kind: Option<NodeKind>,
}

fn location_to_proto(l: &ShuffleLocation) -> LocationProto {
    LocationProto {
        root: l.root.to_string_lossy().into_owned(),
        job: l.job.clone(),
        stage: l.stage.get(),
    }
}

fn location_from_proto(l: Option<LocationProto>) -> Result<ShuffleLocation> {
    let l = l.ok_or_else(|| DataFusionError::Internal("shuffle node without a location".into()))?;
    Ok(ShuffleLocation {
        root: PathBuf::from(l.root),
        job: l.job,
        stage: StageId::new(l.stage),
    })
}

/// The extension codec for Strata's operators.
#[derive(Debug, Default, Clone, Copy)]
pub struct StrataCodec;

impl PhysicalExtensionCodec for StrataCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = NodeProto::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("bad strata plan node: {e}")))?;
        match node.kind {
            Some(NodeKind::Writer(w)) => {
                let [input] = inputs else {
                    return internal_err!(
                        "ShuffleWriterExec takes one input, got {}",
                        inputs.len()
                    );
                };
                let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
                let partitioning = parse_protobuf_partitioning(
                    w.partitioning.as_ref(),
                    &decode_ctx,
                    input.schema().as_ref(),
                    proto_converter,
                )?;
                Ok(Arc::new(ShuffleWriterExec::new(
                    input.clone(),
                    location_from_proto(w.location)?,
                    partitioning,
                )))
            }
            Some(NodeKind::Reader(r)) => {
                let schema = r.schema.as_ref().ok_or_else(|| {
                    DataFusionError::Internal("shuffle reader without a schema".into())
                })?;
                let schema: Schema = schema.try_into()?;
                let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
                let partitioning = parse_protobuf_partitioning(
                    r.partitioning.as_ref(),
                    &decode_ctx,
                    &schema,
                    proto_converter,
                )?
                .unwrap_or(Partitioning::UnknownPartitioning(r.partitions as usize));
                Ok(Arc::new(ShuffleReaderExec::with_properties(
                    location_from_proto(r.location)?,
                    Arc::new(schema),
                    partitioning,
                    r.constant_columns.iter().map(|&c| c as usize).collect(),
                )))
            }
            Some(NodeKind::TableWriter(w)) => {
                let [input] = inputs else {
                    return internal_err!("TableWriterExec takes one input, got {}", inputs.len());
                };
                let table = url::Url::parse(&w.table)
                    .map_err(|e| DataFusionError::Internal(format!("bad table URL: {e}")))?;
                let spec = w.spec()?;
                Ok(Arc::new(TableWriterExec::with_spec(
                    input.clone(),
                    table,
                    w.prefix,
                    spec,
                )))
            }
            None => internal_err!("empty strata plan node"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let kind = if let Some(w) = node.downcast_ref::<ShuffleWriterExec>() {
            let partitioning = w
                .partitioning()
                .map(|p| serialize_partitioning(p, self, proto_converter))
                .transpose()?;
            NodeKind::Writer(WriterProto {
                location: Some(location_to_proto(w.location())),
                partitioning,
            })
        } else if let Some(r) = node.downcast_ref::<ShuffleReaderExec>() {
            let partitioning = match r.partitioning() {
                Partitioning::UnknownPartitioning(_) => None,
                p => Some(serialize_partitioning(p, self, proto_converter)?),
            };
            NodeKind::Reader(ReaderProto {
                partitioning,
                location: Some(location_to_proto(r.location())),
                schema: Some(r.schema().as_ref().try_into()?),
                partitions: r.partitions() as u64,
                constant_columns: r.constant_columns().iter().map(|&c| c as u64).collect(),
            })
        } else if let Some(w) = node.downcast_ref::<TableWriterExec>() {
            NodeKind::TableWriter(TableWriterProto::from_writer(w))
        } else if matches!(node.name(), "WorkTableExec" | "RecursiveQueryExec") {
            return Err(DataFusionError::NotImplemented(
                "recursive queries (WITH RECURSIVE) do not run on the cluster yet".into(),
            ));
        } else {
            return internal_err!("strata codec cannot encode {}", node.name());
        };
        NodeProto { kind: Some(kind) }
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("encoding strata plan node: {e}")))
    }
}

/// A plan fragment as bytes.
pub fn plan_to_bytes(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    Ok(
        datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &StrataCodec)?
            .to_vec(),
    )
}

/// A plan fragment from bytes.
pub fn plan_from_bytes(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(bytes, ctx, &StrataCodec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn a_table_writer_keeps_its_format_and_partition_columns_over_the_wire() {
        let ctx = SessionContext::new();
        let input = ctx
            .sql("SELECT * FROM (VALUES (1, 'eu')) AS t(x, region)")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let table = url::Url::parse("file:///tmp/out/").unwrap();
        for format in [
            FileFormat::Csv {
                header: false,
                delimiter: b'|',
            },
            FileFormat::Json,
            FileFormat::Parquet {
                compression: "zstd(3)".into(),
                row_group_rows: 20_000,
            },
        ] {
            let spec = WriteSpec {
                format,
                partition_by: vec!["region".into()],
            };
            let writer = Arc::new(TableWriterExec::with_spec(
                input.clone(),
                table.clone(),
                "part-1".into(),
                spec.clone(),
            ));
            let bytes = plan_to_bytes(writer).unwrap();
            let back = plan_from_bytes(&bytes, &ctx.task_ctx()).unwrap();
            let back = back.downcast_ref::<TableWriterExec>().unwrap();
            assert_eq!(back.spec(), &spec);
            assert_eq!(back.table(), &table);
            assert_eq!(back.prefix(), "part-1");
        }
    }
}
