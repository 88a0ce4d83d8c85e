//! MQTT 5 properties (§2.2.2.2). One struct serves every packet; the decoder refuses properties
//! that the packet type does not allow, duplicates of single-valued properties and out-of-range
//! values.

use bytes::Bytes;

use crate::wire::{self, Reader};
use crate::{DecodeError, EncodeError};

pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTHENTICATION_METHOD: u8 = 0x15;
pub const AUTHENTICATION_DATA: u8 = 0x16;
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub const RESPONSE_INFORMATION: u8 = 0x1A;
pub const SERVER_REFERENCE: u8 = 0x1C;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAXIMUM_QOS: u8 = 0x24;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// Where a property set appears; decides which identifiers are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropContext {
    pub fn name(self) -> &'static str {
        match self {
            PropContext::Connect => "CONNECT",
            PropContext::Will => "CONNECT will properties",
            PropContext::ConnAck => "CONNACK",
            PropContext::Publish => "PUBLISH",
            PropContext::PubResp => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            PropContext::Subscribe => "SUBSCRIBE",
            PropContext::SubAck => "SUBACK",
            PropContext::Unsubscribe => "UNSUBSCRIBE",
            PropContext::UnsubAck => "UNSUBACK",
            PropContext::Disconnect => "DISCONNECT",
            PropContext::Auth => "AUTH",
        }
    }

    /// Whether property `id` may appear in this context (MQTT 5 §2.2.2.2 table).
    pub fn allows(self, id: u8) -> bool {
        let allowed: &[u8] = match self {
            PropContext::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
            PropContext::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
            PropContext::ConnAck => &[
                0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
                0x28, 0x29, 0x2A,
            ],
            PropContext::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
            PropContext::PubResp | PropContext::SubAck | PropContext::UnsubAck => &[0x1F, 0x26],
            PropContext::Subscribe => &[0x0B, 0x26],
            PropContext::Unsubscribe => &[0x26],
            PropContext::Disconnect => &[0x11, 0x1C, 0x1F, 0x26],
            PropContext::Auth => &[0x15, 0x16, 0x1F, 0x26],
        };
        allowed.contains(&id)
    }
}

/// Every MQTT 5 property. `None` / empty means absent. Under MQTT 3.1.1 properties are neither
/// encoded nor decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// Several only in a server-to-client PUBLISH; at most one in SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

fn set<T>(slot: &mut Option<T>, id: u8, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(r: &mut Reader<'_>, id: u8) -> Result<u8, DecodeError> {
    let v = r.u8()?;
    if v > 1 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(v)
}

impl Properties {
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Reads a property length followed by that many bytes of properties.
    pub fn decode(r: &mut Reader<'_>, ctx: PropContext) -> Result<Properties, DecodeError> {
        let len = r.var_int()? as usize;
        let body = r.take(len)?;
        let mut r = Reader::new(body, r.packet());
        let mut p = Properties::default();
        while !r.is_empty() {
            // The identifier is a variable byte integer; every defined one fits in one byte.
            let id = r.var_int()?;
            let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(0xFF))?;
            if !(1..=0x2A).contains(&id) || !KNOWN.contains(&id) {
                return Err(DecodeError::UnknownProperty(id));
            }
            if !ctx.allows(id) {
                return Err(DecodeError::PropertyNotAllowed {
                    id,
                    packet: ctx.name(),
                });
            }
            match id {
                PAYLOAD_FORMAT_INDICATOR => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.payload_format_indicator, id, v)?
                }
                MESSAGE_EXPIRY_INTERVAL => set(&mut p.message_expiry_interval, id, r.u32()?)?,
                CONTENT_TYPE => set(&mut p.content_type, id, r.string()?)?,
                RESPONSE_TOPIC => {
                    let t = r.string()?;
                    if t.is_empty() || t.contains(['+', '#']) {
                        return Err(DecodeError::InvalidPropertyValue(id));
                    }
                    set(&mut p.response_topic, id, t)?
                }
                CORRELATION_DATA => set(&mut p.correlation_data, id, r.bytes()?)?,
                SUBSCRIPTION_IDENTIFIER => {
                    let v = r.var_int()?;
                    if v == 0 {
                        return Err(DecodeError::InvalidPropertyValue(id));
                    }
                    if ctx != PropContext::Publish && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::DuplicateProperty(id));
                    }
                    if p.subscription_identifiers.len() >= MAX_SUBSCRIPTION_IDS {
                        return Err(DecodeError::InvalidPropertyValue(id));
                    }
                    p.subscription_identifiers.push(v)
                }
                SESSION_EXPIRY_INTERVAL => set(&mut p.session_expiry_interval, id, r.u32()?)?,
                ASSIGNED_CLIENT_IDENTIFIER => {
                    set(&mut p.assigned_client_identifier, id, r.string()?)?
                }
                SERVER_KEEP_ALIVE => set(&mut p.server_keep_alive, id, r.u16()?)?,
                AUTHENTICATION_METHOD => set(&mut p.authentication_method, id, r.string()?)?,
                AUTHENTICATION_DATA => set(&mut p.authentication_data, id, r.bytes()?)?,
                REQUEST_PROBLEM_INFORMATION => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.request_problem_information, id, v)?
                }
                WILL_DELAY_INTERVAL => set(&mut p.will_delay_interval, id, r.u32()?)?,
                REQUEST_RESPONSE_INFORMATION => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.request_response_information, id, v)?
                }
                RESPONSE_INFORMATION => set(&mut p.response_information, id, r.string()?)?,
                SERVER_REFERENCE => set(&mut p.server_reference, id, r.string()?)?,
                REASON_STRING => set(&mut p.reason_string, id, r.string()?)?,
                RECEIVE_MAXIMUM => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(DecodeError::InvalidPropertyValue(id));
                    }
                    set(&mut p.receive_maximum, id, v)?
                }
                TOPIC_ALIAS_MAXIMUM => set(&mut p.topic_alias_maximum, id, r.u16()?)?,
                TOPIC_ALIAS => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("topic alias 0"));
                    }
                    set(&mut p.topic_alias, id, v)?
                }
                MAXIMUM_QOS => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.maximum_qos, id, v)?
                }
                RETAIN_AVAILABLE => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.retain_available, id, v)?
                }
                USER_PROPERTY => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v))
                }
                MAXIMUM_PACKET_SIZE => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(DecodeError::InvalidPropertyValue(id));
                    }
                    set(&mut p.maximum_packet_size, id, v)?
                }
                WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.wildcard_subscription_available, id, v)?
                }
                SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.subscription_identifier_available, id, v)?
                }
                SHARED_SUBSCRIPTION_AVAILABLE => {
                    let v = flag(&mut r, id)?;
                    set(&mut p.shared_subscription_available, id, v)?
                }
                other => return Err(DecodeError::UnknownProperty(other)),
            }
        }
        Ok(p)
    }

    /// Appends the property length and the properties. Properties that `ctx` does not allow
    /// are refused, so the encoder never produces what the decoder would reject.
    pub fn encode(&self, out: &mut Vec<u8>, ctx: PropContext) -> Result<(), EncodeError> {
        let mut body = Vec::new();
        self.encode_body(&mut body, ctx)?;
        let len = u32::try_from(body.len()).map_err(|_| EncodeError::PacketTooLarge(body.len()))?;
        wire::write_var_int(out, len)?;
        out.extend_from_slice(&body);
        Ok(())
    }

    fn encode_body(&self, out: &mut Vec<u8>, ctx: PropContext) -> Result<(), EncodeError> {
        let check = |id: u8| {
            if ctx.allows(id) {
                Ok(())
            } else {
                Err(EncodeError::Invalid("property not allowed in this packet"))
            }
        };
        macro_rules! byte {
            ($f:expr, $id:expr) => {
                if let Some(v) = $f {
                    check($id)?;
                    out.push($id);
                    out.push(v);
                }
            };
        }
        macro_rules! two {
            ($f:expr, $id:expr) => {
                if let Some(v) = $f {
                    check($id)?;
                    out.push($id);
                    wire::write_u16(out, v);
                }
            };
        }
        macro_rules! four {
            ($f:expr, $id:expr) => {
                if let Some(v) = $f {
                    check($id)?;
                    out.push($id);
                    wire::write_u32(out, v);
                }
            };
        }
        macro_rules! string {
            ($f:expr, $id:expr, $name:expr) => {
                if let Some(v) = &$f {
                    check($id)?;
                    out.push($id);
                    wire::write_binary(out, $name, v.as_ref())?;
                }
            };
        }
        byte!(self.payload_format_indicator, PAYLOAD_FORMAT_INDICATOR);
        four!(self.message_expiry_interval, MESSAGE_EXPIRY_INTERVAL);
        string!(self.content_type, CONTENT_TYPE, "content type");
        string!(self.response_topic, RESPONSE_TOPIC, "response topic");
        string!(self.correlation_data, CORRELATION_DATA, "correlation data");
        for &id in &self.subscription_identifiers {
            check(SUBSCRIPTION_IDENTIFIER)?;
            out.push(SUBSCRIPTION_IDENTIFIER);
            wire::write_var_int(out, id)?;
        }
        four!(self.session_expiry_interval, SESSION_EXPIRY_INTERVAL);
        string!(
            self.assigned_client_identifier,
            ASSIGNED_CLIENT_IDENTIFIER,
            "assigned client identifier"
        );
        two!(self.server_keep_alive, SERVER_KEEP_ALIVE);
        string!(
            self.authentication_method,
            AUTHENTICATION_METHOD,
            "authentication method"
        );
        string!(
            self.authentication_data,
            AUTHENTICATION_DATA,
            "authentication data"
        );
        byte!(
            self.request_problem_information,
            REQUEST_PROBLEM_INFORMATION
        );
        four!(self.will_delay_interval, WILL_DELAY_INTERVAL);
        byte!(
            self.request_response_information,
            REQUEST_RESPONSE_INFORMATION
        );
        string!(
            self.response_information,
            RESPONSE_INFORMATION,
            "response information"
        );
        string!(self.server_reference, SERVER_REFERENCE, "server reference");
        string!(self.reason_string, REASON_STRING, "reason string");
        two!(self.receive_maximum, RECEIVE_MAXIMUM);
        two!(self.topic_alias_maximum, TOPIC_ALIAS_MAXIMUM);
        two!(self.topic_alias, TOPIC_ALIAS);
        byte!(self.maximum_qos, MAXIMUM_QOS);
        byte!(self.retain_available, RETAIN_AVAILABLE);
        for (k, v) in &self.user_properties {
            check(USER_PROPERTY)?;
            out.push(USER_PROPERTY);
            wire::write_str(out, "user property name", k)?;
            wire::write_str(out, "user property value", v)?;
        }
        four!(self.maximum_packet_size, MAXIMUM_PACKET_SIZE);
        byte!(
            self.wildcard_subscription_available,
            WILDCARD_SUBSCRIPTION_AVAILABLE
        );
        byte!(
            self.subscription_identifier_available,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE
        );
        byte!(
            self.shared_subscription_available,
            SHARED_SUBSCRIPTION_AVAILABLE
        );
        Ok(())
    }
}

/// Bound on subscription identifiers in one PUBLISH (one per matching subscription).
pub const MAX_SUBSCRIPTION_IDS: usize = 1024;

const KNOWN: &[u8] = &[
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
];
