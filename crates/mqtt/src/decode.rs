//! Packet decoding. The size check happens on the fixed header, before any body byte is looked
//! at or any allocation is made, and every length inside a packet is checked against the bytes
//! actually present.

use std::sync::Arc;

use crate::packet::*;
use crate::properties::{PropContext, Properties};
use crate::reason::ReasonContext;
use crate::wire::{Reader, read_var_int};
use crate::{DecodeError, ReasonCode};

pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const UNSUBSCRIBE: u8 = 10;
pub const UNSUBACK: u8 = 11;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;
pub const AUTH: u8 = 15;

/// The fixed header of a packet whose total size is known and allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub first_byte: u8,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
    pub remaining_len: usize,
}

impl FixedHeader {
    pub fn packet_type(&self) -> u8 {
        self.first_byte >> 4
    }

    pub fn flags(&self) -> u8 {
        self.first_byte & 0x0F
    }

    /// Total bytes of the packet, header included.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Parses a fixed header at the start of `buf`. `Ok(None)`: more bytes are needed. Fails with
/// [`DecodeError::PacketTooLarge`] as soon as the announced size exceeds `max_packet_size`, so a
/// caller never buffers an oversized packet.
pub fn parse_fixed_header(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first_byte) = buf.first() else {
        return Ok(None);
    };
    let ptype = first_byte >> 4;
    if ptype == 0 {
        return Err(DecodeError::InvalidPacketType(ptype));
    }
    let Some((remaining, n)) = read_var_int(&buf[1..])? else {
        return Ok(None);
    };
    let header = FixedHeader {
        first_byte,
        header_len: 1 + n,
        remaining_len: remaining as usize,
    };
    if header.packet_len() > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: header.packet_len(),
            max: max_packet_size,
        });
    }
    Ok(Some(header))
}

/// Decodes one packet from the start of `buf`. Returns the packet and the bytes it used, or
/// `Ok(None)` when `buf` does not yet hold a whole packet. `protocol` is the version negotiated
/// on the connection (CONNECT carries its own).
pub fn decode(
    buf: &[u8],
    protocol: Protocol,
    max_packet_size: usize,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(header) = parse_fixed_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.packet_len() {
        return Ok(None);
    }
    let body = &buf[header.header_len..header.packet_len()];
    let packet = decode_body(header.first_byte, body, protocol)?;
    Ok(Some((packet, header.packet_len())))
}

fn expect_flags(first: u8, want: u8, packet: &'static str) -> Result<(), DecodeError> {
    if first & 0x0F != want {
        return Err(DecodeError::InvalidFlags {
            packet,
            flags: first & 0x0F,
        });
    }
    Ok(())
}

fn packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    let id = r.u16()?;
    if id == 0 {
        return Err(DecodeError::Protocol("packet identifier 0"));
    }
    Ok(id)
}

fn reason(r: &mut Reader<'_>, ctx: ReasonContext) -> Result<ReasonCode, DecodeError> {
    let v = r.u8()?;
    match ReasonCode::from_u8(v) {
        Some(c) if c.allowed_in(ctx) => Ok(c),
        _ => Err(DecodeError::InvalidReasonCode {
            packet: r.packet(),
            code: v,
        }),
    }
}

fn props(
    r: &mut Reader<'_>,
    protocol: Protocol,
    ctx: PropContext,
) -> Result<Properties, DecodeError> {
    if protocol.is_v5() {
        Properties::decode(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// Decodes a packet body given its first header byte.
pub fn decode_body(first: u8, body: &[u8], protocol: Protocol) -> Result<Packet, DecodeError> {
    let ptype = first >> 4;
    let packet = match ptype {
        CONNECT => {
            expect_flags(first, 0, "CONNECT")?;
            Packet::Connect(Box::new(decode_connect(body)?))
        }
        CONNACK => {
            expect_flags(first, 0, "CONNACK")?;
            let mut r = Reader::new(body, "CONNACK");
            let ack_flags = r.u8()?;
            if ack_flags & 0xFE != 0 {
                return Err(DecodeError::Protocol("CONNACK reserved flags set"));
            }
            let reason_code = if protocol.is_v5() {
                reason(&mut r, ReasonContext::ConnAck)?
            } else {
                let v = r.u8()?;
                ReasonCode::from_v3_connack(v).ok_or(DecodeError::InvalidReasonCode {
                    packet: "CONNACK",
                    code: v,
                })?
            };
            let properties = props(&mut r, protocol, PropContext::ConnAck)?;
            r.finish()?;
            Packet::ConnAck(ConnAck {
                session_present: ack_flags & 1 == 1,
                reason_code,
                properties,
            })
        }
        PUBLISH => Packet::Publish(decode_publish(first, body, protocol)?),
        PUBACK | PUBREC | PUBREL | PUBCOMP => {
            let (name, flags, ctx) = match ptype {
                PUBACK => ("PUBACK", 0, ReasonContext::PubAck),
                PUBREC => ("PUBREC", 0, ReasonContext::PubRec),
                PUBREL => ("PUBREL", 2, ReasonContext::PubRel),
                _ => ("PUBCOMP", 0, ReasonContext::PubComp),
            };
            expect_flags(first, flags, name)?;
            let mut r = Reader::new(body, name);
            let packet_id = packet_id(&mut r)?;
            let mut reason_code = ReasonCode::Success;
            let mut properties = Properties::default();
            if protocol.is_v5() && !r.is_empty() {
                reason_code = reason(&mut r, ctx)?;
                if !r.is_empty() {
                    properties = Properties::decode(&mut r, PropContext::PubResp)?;
                }
            }
            r.finish()?;
            let resp = PubResp {
                packet_id,
                reason_code,
                properties,
            };
            match ptype {
                PUBACK => Packet::PubAck(resp),
                PUBREC => Packet::PubRec(resp),
                PUBREL => Packet::PubRel(resp),
                _ => Packet::PubComp(resp),
            }
        }
        SUBSCRIBE => {
            expect_flags(first, 2, "SUBSCRIBE")?;
            let mut r = Reader::new(body, "SUBSCRIBE");
            let packet_id = packet_id(&mut r)?;
            let properties = props(&mut r, protocol, PropContext::Subscribe)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                let o = r.u8()?;
                let qos = QoS::from_u8(o & 0x03).ok_or(DecodeError::InvalidQos)?;
                let options = if protocol.is_v5() {
                    if o & 0xC0 != 0 {
                        return Err(DecodeError::Protocol("subscription options reserved bits"));
                    }
                    SubscriptionOptions {
                        qos,
                        no_local: o & 0x04 != 0,
                        retain_as_published: o & 0x08 != 0,
                        retain_handling: match (o >> 4) & 0x03 {
                            0 => RetainHandling::SendAtSubscribe,
                            1 => RetainHandling::SendIfNew,
                            2 => RetainHandling::DoNotSend,
                            _ => return Err(DecodeError::Protocol("retain handling 3")),
                        },
                    }
                } else {
                    if o & 0xFC != 0 {
                        return Err(DecodeError::Protocol("SUBSCRIBE reserved bits"));
                    }
                    SubscriptionOptions {
                        qos,
                        ..Default::default()
                    }
                };
                filters.push((filter, options));
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        }
        SUBACK => {
            expect_flags(first, 0, "SUBACK")?;
            let mut r = Reader::new(body, "SUBACK");
            let packet_id = packet_id(&mut r)?;
            let properties = props(&mut r, protocol, PropContext::SubAck)?;
            let mut reason_codes = Vec::new();
            while !r.is_empty() {
                let code = if protocol.is_v5() {
                    reason(&mut r, ReasonContext::SubAck)?
                } else {
                    let v = r.u8()?;
                    ReasonCode::from_v3_suback(v).ok_or(DecodeError::InvalidReasonCode {
                        packet: "SUBACK",
                        code: v,
                    })?
                };
                reason_codes.push(code);
            }
            if reason_codes.is_empty() {
                return Err(DecodeError::Protocol("SUBACK without reason codes"));
            }
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        }
        UNSUBSCRIBE => {
            expect_flags(first, 2, "UNSUBSCRIBE")?;
            let mut r = Reader::new(body, "UNSUBSCRIBE");
            let packet_id = packet_id(&mut r)?;
            let properties = props(&mut r, protocol, PropContext::Unsubscribe)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        }
        UNSUBACK => {
            expect_flags(first, 0, "UNSUBACK")?;
            let mut r = Reader::new(body, "UNSUBACK");
            let packet_id = packet_id(&mut r)?;
            let properties = props(&mut r, protocol, PropContext::UnsubAck)?;
            let mut reason_codes = Vec::new();
            if protocol.is_v5() {
                while !r.is_empty() {
                    reason_codes.push(reason(&mut r, ReasonContext::UnsubAck)?);
                }
                if reason_codes.is_empty() {
                    return Err(DecodeError::Protocol("UNSUBACK without reason codes"));
                }
            }
            r.finish()?;
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        }
        PINGREQ | PINGRESP => {
            let name = if ptype == PINGREQ {
                "PINGREQ"
            } else {
                "PINGRESP"
            };
            expect_flags(first, 0, name)?;
            Reader::new(body, name).finish()?;
            if ptype == PINGREQ {
                Packet::PingReq
            } else {
                Packet::PingResp
            }
        }
        DISCONNECT => {
            expect_flags(first, 0, "DISCONNECT")?;
            let mut r = Reader::new(body, "DISCONNECT");
            let mut reason_code = ReasonCode::Success;
            let mut properties = Properties::default();
            if protocol.is_v5() && !r.is_empty() {
                reason_code = reason(&mut r, ReasonContext::Disconnect)?;
                if !r.is_empty() {
                    properties = Properties::decode(&mut r, PropContext::Disconnect)?;
                }
            }
            r.finish()?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        AUTH if protocol.is_v5() => {
            expect_flags(first, 0, "AUTH")?;
            let mut r = Reader::new(body, "AUTH");
            let mut reason_code = ReasonCode::Success;
            let mut properties = Properties::default();
            if !r.is_empty() {
                reason_code = reason(&mut r, ReasonContext::Auth)?;
                if !r.is_empty() {
                    properties = Properties::decode(&mut r, PropContext::Auth)?;
                }
            }
            r.finish()?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
        other => return Err(DecodeError::InvalidPacketType(other)),
    };
    Ok(packet)
}

fn decode_publish(first: u8, body: &[u8], protocol: Protocol) -> Result<Publish, DecodeError> {
    let flags = first & 0x0F;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQos)?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::InvalidFlags {
            packet: "PUBLISH",
            flags,
        });
    }
    let mut r = Reader::new(body, "PUBLISH");
    let topic: Arc<str> = Arc::from(r.str()?);
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(&mut r)?
    };
    let properties = props(&mut r, protocol, PropContext::Publish)?;
    let payload = bytes::Bytes::copy_from_slice(r.rest());
    Ok(Publish {
        dup,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload,
    })
}

fn decode_connect(body: &[u8]) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body, "CONNECT");
    let name = r.str()?;
    let level = r.u8()?;
    let protocol = match (name, level) {
        ("MQTT", 4) => Protocol::V311,
        ("MQTT", 5) => Protocol::V5,
        _ => {
            return Err(DecodeError::UnsupportedProtocol {
                name: name.chars().take(16).collect(),
                level,
            });
        }
    };
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::Protocol("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0x03).ok_or(DecodeError::InvalidQos)?;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Protocol(
            "will QoS or retain set without a will",
        ));
    }
    if protocol == Protocol::V311 && password_flag && !username_flag {
        return Err(DecodeError::Protocol("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = props(&mut r, protocol, PropContext::Connect)?;
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = props(&mut r, protocol, PropContext::Will)?;
        let topic = r.string()?;
        let payload = r.bytes()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.bytes()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}
