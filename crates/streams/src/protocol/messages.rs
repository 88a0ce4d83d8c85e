//! The request and response maps (§1.7–1.11 of the reference), with the SDKs' exact keys.
//! Every request is validated again here (the Python SDK validates before sending, other
//! clients may not): a bad one is answered `3` InvalidRequest with a message naming the
//! field.

use ciborium::value::Value;

use super::Status;
use super::cbor::{self, CborError, Map, int, map, text};

/// `^[\w ,.\-_]*$`, 1–255 characters: stream names and export identifiers.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=255).contains(&n)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | ',' | '.' | '-'))
}

/// Why a request is refused, with the id to answer (when it could be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub request_id: Option<String>,
    pub status: Status,
    pub message: String,
}

impl Refusal {
    pub fn invalid(request_id: Option<String>, message: impl Into<String>) -> Refusal {
        Refusal {
            request_id,
            status: Status::InvalidRequest,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrategyOnFull {
    RejectNewData = 0,
    OverwriteOldestData = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persistence {
    File = 0,
    Memory = 1,
}

/// Where an export goes (the keys of `exportDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportKind {
    Http,
    IotAnalytics,
    Kinesis,
    IotSiteWise,
    S3TaskExecutor,
}

impl ExportKind {
    pub const ALL: [ExportKind; 5] = [
        ExportKind::Http,
        ExportKind::IotAnalytics,
        ExportKind::Kinesis,
        ExportKind::IotSiteWise,
        ExportKind::S3TaskExecutor,
    ];

    /// The key in `exportDefinition` (note SiteWise's `IotSitewise`).
    pub fn key(self) -> &'static str {
        match self {
            ExportKind::Http => "http",
            ExportKind::IotAnalytics => "iotAnalytics",
            ExportKind::Kinesis => "kinesis",
            ExportKind::IotSiteWise => "IotSitewise",
            ExportKind::S3TaskExecutor => "s3TaskExecutor",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ExportKind::Http => "HTTP",
            ExportKind::IotAnalytics => "IoT Analytics",
            ExportKind::Kinesis => "Kinesis",
            ExportKind::IotSiteWise => "IoT SiteWise",
            ExportKind::S3TaskExecutor => "S3",
        }
    }

    fn batch_max(self) -> i64 {
        match self {
            ExportKind::Http | ExportKind::Kinesis => 500,
            ExportKind::IotAnalytics => 100,
            ExportKind::IotSiteWise => 10,
            ExportKind::S3TaskExecutor => 1,
        }
    }

    fn fields(self) -> &'static [Field] {
        match self {
            ExportKind::Http => HTTP_FIELDS,
            ExportKind::Kinesis => KINESIS_FIELDS,
            ExportKind::IotAnalytics => IOT_ANALYTICS_FIELDS,
            ExportKind::IotSiteWise => &[],
            ExportKind::S3TaskExecutor => S3_FIELDS,
        }
    }
}

const HTTP_FIELDS: &[Field] = &[
    Field::req("uri", Kind::Text),
    Field::opt("exportFormat", Kind::Int(0, 1)),
];
const KINESIS_FIELDS: &[Field] = &[Field::req("kinesisStreamName", Kind::Text)];
const IOT_ANALYTICS_FIELDS: &[Field] = &[
    Field::req("iotChannel", Kind::Text),
    Field::opt("iotMsgIdPrefix", Kind::Text),
];
const S3_FIELDS: &[Field] = &[
    Field::opt(
        "sizeThresholdForMultipartUploadBytes",
        Kind::Int(5_242_880, i64::MAX),
    ),
    Field::opt("statusConfig", Kind::Map(STATUS_CONFIG)),
];

const STATUS_CONFIG: &[Field] = &[
    Field::opt("statusLevel", Kind::Int(0, 4)),
    Field::opt("statusStreamName", Kind::Text),
];

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int(i64, i64),
    Bool,
    Map(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    key: &'static str,
    kind: Kind,
    required: bool,
}

impl Field {
    const fn req(key: &'static str, kind: Kind) -> Field {
        Field {
            key,
            kind,
            required: true,
        }
    }
    const fn opt(key: &'static str, kind: Kind) -> Field {
        Field {
            key,
            kind,
            required: false,
        }
    }
}

/// Keeps only the known fields of `m`, each checked against its kind and range; unknown
/// fields are dropped, so nothing a client sent can come back to another client as an
/// enum value it does not know (hazard 2).
fn sanitize(m: &Map, fields: &[Field]) -> Result<Value, CborError> {
    let mut out = Vec::new();
    for f in fields {
        let v = match f.kind {
            Kind::Text => m.text(f.key)?.map(text),
            Kind::Int(lo, hi) => m.int(f.key, lo, hi)?.map(int),
            Kind::Bool => m.bool(f.key)?.map(Value::Bool),
            Kind::Map(sub) => match m.map(f.key)? {
                Some(sm) => Some(sanitize(&sm, sub)?),
                None => None,
            },
        };
        match v {
            Some(v) => out.push((Value::Text(f.key.to_string()), v)),
            None if f.required => {
                return Err(CborError::Field(format!(
                    "{}.{} is required",
                    m.path, f.key
                )));
            }
            None => {}
        }
    }
    Ok(Value::Map(out))
}

/// One export configuration: its kind and its (sanitized) map.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub kind: ExportKind,
    pub identifier: String,
    pub fields: Value,
}

impl ExportConfig {
    fn parse(kind: ExportKind, m: &Map) -> Result<ExportConfig, CborError> {
        let identifier = m.required_text("identifier")?.to_string();
        if !valid_name(&identifier) {
            return Err(CborError::Field(format!(
                "{}.identifier must be 1-255 characters of letters, digits, spaces and ,.-_",
                m.path
            )));
        }
        let mut common = vec![
            Field::req("identifier", Kind::Text),
            Field::opt("priority", Kind::Int(1, 10)),
            Field::opt("disabled", Kind::Bool),
        ];
        if kind != ExportKind::S3TaskExecutor {
            common.push(Field::opt("batchSize", Kind::Int(1, kind.batch_max())));
            common.push(Field::opt(
                "batchIntervalMillis",
                Kind::Int(60_000, 9_223_372_036_854),
            ));
            common.push(Field::opt("startSequenceNumber", Kind::Int(0, i64::MAX)));
        }
        common.extend_from_slice(kind.fields());
        let fields = sanitize(m, &common)?;
        Ok(ExportConfig {
            kind,
            identifier,
            fields,
        })
    }

    fn get(&self, key: &str) -> Option<&Value> {
        match &self.fields {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn int_field(&self, key: &str) -> Option<i64> {
        self.get(key)
            .and_then(|v| v.as_integer())
            .and_then(|i| i64::try_from(i).ok())
    }

    pub fn text_field(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_text())
    }

    pub fn disabled(&self) -> bool {
        self.get("disabled")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    }

    pub fn batch_size(&self) -> usize {
        self.int_field("batchSize").unwrap_or(self.kind.batch_max()) as usize
    }

    pub fn start_sequence_number(&self) -> u64 {
        self.int_field("startSequenceNumber").unwrap_or(0) as u64
    }

    /// Lower is more urgent; absent = lowest (10).
    pub fn priority(&self) -> i64 {
        self.int_field("priority").unwrap_or(10)
    }
}

/// `MessageStreamDefinition`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDefinition {
    pub name: String,
    pub max_size: i64,
    pub stream_segment_size: i64,
    pub time_to_live_millis: Option<i64>,
    pub strategy_on_full: StrategyOnFull,
    pub persistence: Persistence,
    pub flush_on_write: bool,
    pub exports: Vec<ExportConfig>,
}

pub const DEFAULT_MAX_SIZE: i64 = 268_435_456;
pub const DEFAULT_SEGMENT_SIZE: i64 = 16_777_216;

impl StreamDefinition {
    /// A definition with the SDK defaults (for tests and the Rust client).
    pub fn new(name: &str, strategy_on_full: StrategyOnFull) -> StreamDefinition {
        StreamDefinition {
            name: name.to_string(),
            max_size: DEFAULT_MAX_SIZE,
            stream_segment_size: DEFAULT_SEGMENT_SIZE,
            time_to_live_millis: None,
            strategy_on_full,
            persistence: Persistence::File,
            flush_on_write: false,
            exports: Vec::new(),
        }
    }

    pub fn from_map(m: &Map) -> Result<StreamDefinition, CborError> {
        let name = m.required_text("name")?.to_string();
        if !valid_name(&name) {
            return Err(CborError::Field(format!(
                "{}.name must be 1-255 characters of letters, digits, spaces and ,.-_",
                m.path
            )));
        }
        let strategy_on_full = match m.int("strategyOnFull", 0, 1)? {
            Some(0) => StrategyOnFull::RejectNewData,
            Some(_) => StrategyOnFull::OverwriteOldestData,
            None => {
                return Err(CborError::Field(format!(
                    "{}.strategyOnFull is required",
                    m.path
                )));
            }
        };
        let persistence = match m.int("persistence", 0, 1)? {
            Some(1) => Persistence::Memory,
            _ => Persistence::File,
        };
        let mut exports = Vec::new();
        if let Some(ed) = m.map("exportDefinition")? {
            for kind in ExportKind::ALL {
                for c in ed.maps(kind.key())? {
                    let config = ExportConfig::parse(kind, &c)?;
                    if exports
                        .iter()
                        .any(|e: &ExportConfig| e.identifier == config.identifier)
                    {
                        return Err(CborError::Field(format!(
                            "{}: export identifier {:?} is used twice",
                            ed.path, config.identifier
                        )));
                    }
                    exports.push(config);
                }
            }
        }
        Ok(StreamDefinition {
            name,
            max_size: m
                .int("maxSize", 1024, i64::MAX)?
                .unwrap_or(DEFAULT_MAX_SIZE),
            stream_segment_size: m
                .int("streamSegmentSize", 1024, i64::from(i32::MAX))?
                .unwrap_or(DEFAULT_SEGMENT_SIZE),
            time_to_live_millis: m.int("timeToLiveMillis", 60_000, 9_223_372_036_854)?,
            strategy_on_full,
            persistence,
            flush_on_write: m.bool("flushOnWrite")?.unwrap_or(false),
            exports,
        })
    }

    pub fn to_value(&self) -> Value {
        let mut export = Vec::new();
        for kind in ExportKind::ALL {
            let list: Vec<Value> = self
                .exports
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.fields.clone())
                .collect();
            export.push((kind.key(), Some(Value::Array(list))));
        }
        map(vec![
            ("name", Some(text(&self.name))),
            ("maxSize", Some(int(self.max_size))),
            ("streamSegmentSize", Some(int(self.stream_segment_size))),
            ("timeToLiveMillis", self.time_to_live_millis.map(int)),
            ("strategyOnFull", Some(int(self.strategy_on_full as i64))),
            ("persistence", Some(int(self.persistence as i64))),
            ("flushOnWrite", Some(Value::Bool(self.flush_on_write))),
            ("exportDefinition", Some(map(export))),
        ])
    }
}

/// `ReadMessagesOptions`, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    pub desired_start: u64,
    pub min_count: u64,
    pub max_count: u64,
    pub timeout_millis: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            desired_start: 0,
            min_count: 1,
            max_count: 1,
            timeout_millis: 0,
        }
    }
}

/// `ConnectRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub request_id: String,
    pub protocol_version: String,
    pub other_supported_protocol_versions: Vec<String>,
    pub sdk_version: Option<String>,
    /// Absent when the client has no token (Python); `""` from Java.
    pub auth_token: Option<String>,
}

/// A client request after the handshake.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Create(StreamDefinition),
    Update(StreamDefinition),
    Delete {
        name: String,
    },
    Describe {
        name: String,
    },
    Append {
        name: String,
        payload: Vec<u8>,
    },
    Read {
        stream_name: String,
        options: ReadOptions,
    },
    List,
}

fn request_id(m: &Map) -> Result<String, CborError> {
    let id = m.required_text("requestId")?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_alphanumeric() || "_ ,.-".contains(c))
    {
        return Err(CborError::Field(
            "requestId must be 1 or more letters, digits, spaces and ,.-_".into(),
        ));
    }
    Ok(id.to_string())
}

pub fn parse_connect(payload: &[u8]) -> Result<ConnectRequest, Refusal> {
    let m = cbor::decode_map(payload).map_err(|e| Refusal::invalid(None, e.to_string()))?;
    let id = request_id(&m).map_err(|e| Refusal::invalid(None, e.to_string()))?;
    let refuse = |e: CborError| Refusal::invalid(Some(id.clone()), e.to_string());
    let others = match m.get("otherSupportedProtocolVersions") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_text().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok(ConnectRequest {
        protocol_version: m
            .required_text("protocolVersion")
            .map_err(refuse)?
            .to_string(),
        other_supported_protocol_versions: others,
        sdk_version: m.text("sdkVersion").map_err(refuse)?.map(str::to_string),
        auth_token: m.text("authToken").map_err(refuse)?.map(str::to_string),
        request_id: id,
    })
}

/// Parses a request frame's payload. `Err` carries the status to answer; an operation this
/// server does not serve is [`Status::UnknownOperation`].
pub fn parse_request(operation: u8, payload: &[u8]) -> Result<(String, Request), Refusal> {
    use super::Operation as Op;
    let m = cbor::decode_map(payload).map_err(|e| Refusal::invalid(None, e.to_string()))?;
    let id = request_id(&m).map_err(|e| Refusal::invalid(None, e.to_string()))?;
    let refuse = |e: CborError| Refusal::invalid(Some(id.clone()), e.to_string());
    let name = |key: &str| -> Result<String, Refusal> {
        let n = m.required_text(key).map_err(refuse)?;
        if !valid_name(n) {
            return Err(Refusal::invalid(
                Some(id.clone()),
                format!("{key} {n:?} is not a valid stream name"),
            ));
        }
        Ok(n.to_string())
    };
    let definition = || -> Result<StreamDefinition, Refusal> {
        let d = m
            .map("definition")
            .map_err(refuse)?
            .ok_or_else(|| Refusal::invalid(Some(id.clone()), "definition is required"))?;
        StreamDefinition::from_map(&d).map_err(refuse)
    };
    let request = match Op::from_u8(operation) {
        Some(Op::CreateMessageStream) => Request::Create(definition()?),
        Some(Op::UpdateMessageStream) => Request::Update(definition()?),
        Some(Op::DeleteMessageStream) => Request::Delete {
            name: name("name")?,
        },
        Some(Op::DescribeMessageStream) => Request::Describe {
            name: name("name")?,
        },
        Some(Op::AppendMessage) => {
            let stream = name("name")?;
            let payload = m
                .bytes("payload")
                .map_err(refuse)?
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    Refusal::invalid(Some(id.clone()), "payload must be 1 or more bytes")
                })?;
            Request::Append {
                name: stream,
                payload: payload.to_vec(),
            }
        }
        Some(Op::ReadMessages) => {
            let stream_name = name("streamName")?;
            let mut options = ReadOptions::default();
            if let Some(o) = m.map("readMessagesOptions").map_err(refuse)? {
                let big = i64::from(i32::MAX);
                let r = |e| refuse(e);
                options.desired_start = o
                    .int("desiredStartSequenceNumber", 0, i64::MAX)
                    .map_err(r)?
                    .unwrap_or(0) as u64;
                options.min_count =
                    o.int("minMessageCount", 1, big).map_err(r)?.unwrap_or(1) as u64;
                options.max_count = match o.int("maxMessageCount", 1, big).map_err(r)? {
                    Some(n) => n as u64,
                    None => options.min_count.max(1),
                };
                options.timeout_millis = o
                    .int("readTimeoutMillis", 0, 9_223_372_036_854)
                    .map_err(r)?
                    .unwrap_or(0) as u64;
                if options.min_count > options.max_count {
                    return Err(Refusal::invalid(
                        Some(id),
                        "readMessagesOptions.minMessageCount must not exceed maxMessageCount",
                    ));
                }
            }
            Request::Read {
                stream_name,
                options,
            }
        }
        Some(Op::ListStreams) => Request::List,
        _ => {
            return Err(Refusal {
                request_id: Some(id),
                status: Status::UnknownOperation,
                message: format!("operation {operation} is not a Stream Manager request"),
            });
        }
    };
    Ok((id, request))
}

/// A response map: `requestId`, `status`, `errorMessage?` and the operation's extras.
pub fn response(
    request_id: &str,
    status: Status,
    error_message: Option<&str>,
    extras: Vec<(&str, Option<Value>)>,
) -> Value {
    let mut entries = vec![
        ("requestId", Some(text(request_id))),
        ("status", Some(int(status as i64))),
        ("errorMessage", error_message.map(text)),
    ];
    entries.extend(extras);
    map(entries)
}

/// The ConnectResponse map.
pub fn connect_response(
    request_id: &str,
    status: Status,
    error_message: Option<&str>,
    server_version: &str,
) -> Value {
    response(
        request_id,
        status,
        error_message,
        vec![
            ("protocolVersion", Some(text(super::PROTOCOL_VERSION))),
            (
                "supportedProtocolVersions",
                Some(Value::Array(
                    super::SUPPORTED_PROTOCOL_VERSIONS
                        .iter()
                        .map(|v| text(v))
                        .collect(),
                )),
            ),
            ("serverVersion", Some(text(server_version))),
        ],
    )
}

/// A `Message` map (`ingestTime` in epoch milliseconds; `payload` a byte string).
pub fn message_value(
    stream_name: &str,
    sequence_number: u64,
    ingest_time: i64,
    payload: &[u8],
) -> Value {
    map(vec![
        ("streamName", Some(text(stream_name))),
        ("sequenceNumber", Some(int(sequence_number as i64))),
        ("ingestTime", Some(int(ingest_time))),
        ("payload", Some(Value::Bytes(payload.to_vec()))),
    ])
}

/// One entry of `exportStatuses`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ExportStatus {
    pub identifier: String,
    /// −1 before the first export.
    pub last_exported_sequence_number: i64,
    pub last_export_time: Option<i64>,
    pub error_message: Option<String>,
    pub exported_bytes: u64,
    pub exported_messages: u64,
}

/// `MessageStreamInfo`.
pub fn stream_info_value(
    definition: &StreamDefinition,
    oldest: i64,
    newest: i64,
    total_bytes: u64,
    exports: &[ExportStatus],
) -> Value {
    let statuses = exports
        .iter()
        .map(|s| {
            map(vec![
                ("exportConfigIdentifier", Some(text(&s.identifier))),
                (
                    "lastExportedSequenceNumber",
                    Some(int(s.last_exported_sequence_number)),
                ),
                ("lastExportTime", s.last_export_time.map(int)),
                ("errorMessage", s.error_message.as_deref().map(text)),
                (
                    "exportedBytesFromStream",
                    Some(int(s.exported_bytes as i64)),
                ),
                (
                    "exportedMessagesCount",
                    Some(int(s.exported_messages as i64)),
                ),
            ])
        })
        .collect();
    map(vec![
        ("definition", Some(definition.to_value())),
        (
            "storageStatus",
            Some(map(vec![
                ("oldestSequenceNumber", Some(int(oldest))),
                ("newestSequenceNumber", Some(int(newest))),
                ("totalBytes", Some(int(total_bytes as i64))),
            ])),
        ),
        ("exportStatuses", Some(Value::Array(statuses))),
    ])
}
