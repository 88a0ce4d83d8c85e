//! Packet encoding. The encoder checks field lengths and refuses properties a packet may not
//! carry, so whatever it produces decodes again to the same value.

use crate::decode::*;
use crate::packet::*;
use crate::properties::{PropContext, Properties};
use crate::wire::{self, MAX_VAR_INT, var_int_len};
use crate::{EncodeError, ReasonCode};

/// Appends the encoding of `packet` for `protocol` to `out`. On error `out` is left as it was.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let r = encode_inner(packet, protocol, out, start);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Convenience: the encoding as a new vector.
pub fn to_vec(packet: &Packet, protocol: Protocol) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode(packet, protocol, &mut out)?;
    Ok(out)
}

// Space reserved for the fixed header: one type byte and up to four length bytes.
const RESERVED: usize = 5;

fn encode_inner(
    packet: &Packet,
    protocol: Protocol,
    out: &mut Vec<u8>,
    start: usize,
) -> Result<(), EncodeError> {
    out.extend_from_slice(&[0; RESERVED]);
    let v5 = protocol.is_v5();
    let first: u8 = match packet {
        Packet::Connect(c) => {
            encode_connect(c, out)?;
            CONNECT << 4
        }
        Packet::ConnAck(c) => {
            out.push(u8::from(c.session_present));
            if v5 {
                out.push(c.reason_code as u8);
                c.properties.encode(out, PropContext::ConnAck)?;
            } else {
                out.push(c.reason_code.to_v3_connack());
            }
            CONNACK << 4
        }
        Packet::Publish(p) => {
            wire::write_str(out, "topic", &p.topic)?;
            if p.qos != QoS::AtMostOnce {
                if p.packet_id == 0 {
                    return Err(EncodeError::Invalid("QoS 1/2 PUBLISH needs a packet id"));
                }
                wire::write_u16(out, p.packet_id);
            }
            if v5 {
                p.properties.encode(out, PropContext::Publish)?;
            }
            out.extend_from_slice(&p.payload);
            if p.dup && p.qos == QoS::AtMostOnce {
                return Err(EncodeError::Invalid("DUP set on a QoS 0 PUBLISH"));
            }
            (PUBLISH << 4) | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(r) => encode_pub_resp(r, v5, out, PUBACK << 4)?,
        Packet::PubRec(r) => encode_pub_resp(r, v5, out, PUBREC << 4)?,
        Packet::PubRel(r) => encode_pub_resp(r, v5, out, (PUBREL << 4) | 2)?,
        Packet::PubComp(r) => encode_pub_resp(r, v5, out, PUBCOMP << 4)?,
        Packet::Subscribe(s) => {
            nonzero(s.packet_id)?;
            wire::write_u16(out, s.packet_id);
            if v5 {
                s.properties.encode(out, PropContext::Subscribe)?;
            }
            if s.filters.is_empty() {
                return Err(EncodeError::Invalid("SUBSCRIBE needs a topic filter"));
            }
            for (f, o) in &s.filters {
                wire::write_str(out, "topic filter", f)?;
                let mut b = o.qos as u8;
                if v5 {
                    b |= u8::from(o.no_local) << 2;
                    b |= u8::from(o.retain_as_published) << 3;
                    b |= (o.retain_handling as u8) << 4;
                }
                out.push(b);
            }
            (SUBSCRIBE << 4) | 2
        }
        Packet::SubAck(s) => {
            nonzero(s.packet_id)?;
            wire::write_u16(out, s.packet_id);
            if v5 {
                s.properties.encode(out, PropContext::SubAck)?;
            }
            if s.reason_codes.is_empty() {
                return Err(EncodeError::Invalid("SUBACK needs a reason code"));
            }
            for c in &s.reason_codes {
                out.push(if v5 { *c as u8 } else { c.to_v3_suback() });
            }
            SUBACK << 4
        }
        Packet::Unsubscribe(u) => {
            nonzero(u.packet_id)?;
            wire::write_u16(out, u.packet_id);
            if v5 {
                u.properties.encode(out, PropContext::Unsubscribe)?;
            }
            if u.filters.is_empty() {
                return Err(EncodeError::Invalid("UNSUBSCRIBE needs a topic filter"));
            }
            for f in &u.filters {
                wire::write_str(out, "topic filter", f)?;
            }
            (UNSUBSCRIBE << 4) | 2
        }
        Packet::UnsubAck(u) => {
            nonzero(u.packet_id)?;
            wire::write_u16(out, u.packet_id);
            if v5 {
                u.properties.encode(out, PropContext::UnsubAck)?;
                if u.reason_codes.is_empty() {
                    return Err(EncodeError::Invalid("UNSUBACK needs a reason code"));
                }
                out.extend(u.reason_codes.iter().map(|c| *c as u8));
            }
            UNSUBACK << 4
        }
        Packet::PingReq => PINGREQ << 4,
        Packet::PingResp => PINGRESP << 4,
        Packet::Disconnect(d) => {
            if v5 && (d.reason_code != ReasonCode::Success || !d.properties.is_empty()) {
                out.push(d.reason_code as u8);
                d.properties.encode(out, PropContext::Disconnect)?;
            }
            DISCONNECT << 4
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::Invalid("AUTH exists only in MQTT 5"));
            }
            if a.reason_code != ReasonCode::Success || !a.properties.is_empty() {
                out.push(a.reason_code as u8);
                a.properties.encode(out, PropContext::Auth)?;
            }
            AUTH << 4
        }
    };
    finish_header(out, start, first)
}

fn nonzero(id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        Err(EncodeError::Invalid("packet identifier 0"))
    } else {
        Ok(())
    }
}

/// Writes the fixed header into the reserved space and closes the gap before the body.
fn finish_header(out: &mut Vec<u8>, start: usize, first: u8) -> Result<(), EncodeError> {
    let body_start = start + RESERVED;
    let body_len = out.len() - body_start;
    let len = u32::try_from(body_len)
        .ok()
        .filter(|l| *l <= MAX_VAR_INT)
        .ok_or(EncodeError::PacketTooLarge(body_len))?;
    let n = var_int_len(len);
    let mut header = Vec::with_capacity(RESERVED);
    header.push(first);
    wire::write_var_int(&mut header, len)?;
    let header_start = body_start - 1 - n;
    out[header_start..body_start].copy_from_slice(&header);
    // Move header+body down to `start`.
    out.copy_within(header_start.., start);
    out.truncate(start + 1 + n + body_len);
    Ok(())
}

fn encode_pub_resp(r: &PubResp, v5: bool, out: &mut Vec<u8>, first: u8) -> Result<u8, EncodeError> {
    nonzero(r.packet_id)?;
    wire::write_u16(out, r.packet_id);
    if v5 && (r.reason_code != ReasonCode::Success || !r.properties.is_empty()) {
        out.push(r.reason_code as u8);
        if !r.properties.is_empty() {
            r.properties.encode(out, PropContext::PubResp)?;
        }
    }
    Ok(first)
}

fn encode_connect(c: &Connect, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    wire::write_str(out, "protocol name", "MQTT")?;
    out.push(c.protocol.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        if !v5 && c.username.is_none() {
            return Err(EncodeError::Invalid(
                "MQTT 3.1.1 forbids a password without a user name",
            ));
        }
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.push(flags);
    wire::write_u16(out, c.keep_alive);
    if v5 {
        c.properties.encode(out, PropContext::Connect)?;
    }
    wire::write_str(out, "client identifier", &c.client_id)?;
    if let Some(w) = &c.will {
        if v5 {
            w.properties.encode(out, PropContext::Will)?;
        }
        wire::write_str(out, "will topic", &w.topic)?;
        wire::write_binary(out, "will payload", &w.payload)?;
    }
    if let Some(u) = &c.username {
        wire::write_str(out, "user name", u)?;
    }
    if let Some(p) = &c.password {
        wire::write_binary(out, "password", p)?;
    }
    Ok(())
}

/// Size in bytes of `props` as encoded (length prefix included); used to budget packets.
pub fn properties_len(props: &Properties, ctx: PropContext) -> Result<usize, EncodeError> {
    let mut v = Vec::new();
    props.encode(&mut v, ctx)?;
    Ok(v.len())
}
