//! Service limits as named constants (AWS documentation, checked 2026).

/// Kinesis: records per `PutRecords` call.
pub const KINESIS_MAX_RECORDS_PER_PUT: usize = 500;
/// Kinesis: bytes per `PutRecords` call (data plus partition keys).
pub const KINESIS_MAX_BYTES_PER_PUT: usize = 5 * 1024 * 1024;
/// Kinesis: bytes per record (data plus partition key).
pub const KINESIS_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Kinesis: partition key length in Unicode characters.
pub const KINESIS_MAX_PARTITION_KEY_CHARS: usize = 256;
/// Kinesis: write limit per shard, bytes per second.
pub const KINESIS_SHARD_WRITE_BYTES_PER_SEC: usize = 1_000_000;
/// Kinesis: write limit per shard, records per second.
pub const KINESIS_SHARD_WRITE_RECORDS_PER_SEC: usize = 1_000;
/// Kinesis: read limit per shard, bytes per second (shared by polling consumers).
pub const KINESIS_SHARD_READ_BYTES_PER_SEC: usize = 2 * 1024 * 1024;
/// Kinesis: `GetRecords` calls per shard per second.
pub const KINESIS_GET_RECORDS_PER_SHARD_PER_SEC: u32 = 5;
/// Kinesis: records per `GetRecords` call.
pub const KINESIS_MAX_GET_RECORDS: usize = 10_000;

/// Firehose: records per `PutRecordBatch` call.
pub const FIREHOSE_MAX_RECORDS_PER_BATCH: usize = 500;
/// Firehose: bytes per `PutRecordBatch` call.
pub const FIREHOSE_MAX_BYTES_PER_BATCH: usize = 4 * 1024 * 1024;
/// Firehose: bytes per record.
pub const FIREHOSE_MAX_RECORD_BYTES: usize = 1000 * 1024;

/// SageMaker inference container: the port it listens on.
pub const SAGEMAKER_CONTAINER_PORT: u16 = 8080;
/// SageMaker: largest request payload.
pub const SAGEMAKER_MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// SageMaker: seconds the container has to answer an invocation.
pub const SAGEMAKER_INVOCATION_TIMEOUT_SECS: u64 = 60;
