//! The MQTT 5 property codec: one encoder and one decoder for every packet,
//! with the spec's table (MQTT 5.0 §2.2.2.2) of which property each packet may
//! carry. A property on the wrong packet, or repeated where only one is
//! allowed, is a Protocol Error (0x82); an unknown identifier is Malformed (0x81).

use bytes::{BufMut, BytesMut};

use crate::codec::{
    binary_len, check_field, put_binary, put_string, put_varint, string_len, varint_len, Reader,
    MAX_VARINT,
};
use crate::{DecodeError, EncodeError, Properties};

/// Which packet (or the will inside CONNECT) a property block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

use PropertyContext as C;

/// Whether property `id` may appear in `ctx` (MQTT 5.0 §2.2.2.2).
fn allowed(id: u8, ctx: PropertyContext) -> bool {
    match id {
        0x01..=0x03 | 0x08 | 0x09 => matches!(ctx, C::Publish | C::Will),
        0x0B => matches!(ctx, C::Publish | C::Subscribe),
        0x11 => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28..=0x2A => ctx == C::ConnAck,
        0x15 | 0x16 => matches!(ctx, C::Connect | C::ConnAck | C::Auth),
        0x17 | 0x19 => ctx == C::Connect,
        0x18 => ctx == C::Will,
        0x1C => matches!(ctx, C::ConnAck | C::Disconnect),
        0x1F => !matches!(
            ctx,
            C::Connect | C::Will | C::Publish | C::Subscribe | C::Unsubscribe
        ),
        0x21 | 0x22 | 0x27 => matches!(ctx, C::Connect | C::ConnAck),
        0x23 => ctx == C::Publish,
        0x26 => true,
        _ => false,
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property appears more than once"));
    }
    *slot = Some(value);
    Ok(())
}

fn zero_or_one(v: u8) -> Result<u8, DecodeError> {
    if v > 1 {
        Err(DecodeError::Protocol("property value must be 0 or 1"))
    } else {
        Ok(v)
    }
}

/// Decodes a property block (length prefix included) for `ctx`.
pub(crate) fn decode_properties(
    r: &mut Reader,
    ctx: PropertyContext,
) -> Result<Properties, DecodeError> {
    let len = r.varint()? as usize;
    let mut r = r.sub(len)?;
    let mut p = Properties::default();
    while r.remaining() > 0 {
        let id = r.varint()?;
        let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property"))?;
        if !matches!(id, 0x01..=0x03 | 0x08 | 0x09 | 0x0B | 0x11..=0x13 | 0x15..=0x1A | 0x1C | 0x1F | 0x21..=0x2A)
        {
            return Err(DecodeError::Malformed("unknown property"));
        }
        if !allowed(id, ctx) {
            return Err(DecodeError::Protocol("property not allowed on this packet"));
        }
        decode_one(&mut r, id, ctx, &mut p)?;
    }
    Ok(p)
}

fn decode_one(
    r: &mut Reader,
    id: u8,
    ctx: PropertyContext,
    p: &mut Properties,
) -> Result<(), DecodeError> {
    match id {
        0x01 => set_once(&mut p.payload_format_indicator, zero_or_one(r.u8()?)?),
        0x02 => set_once(&mut p.message_expiry_interval, r.u32()?),
        0x03 => set_once(&mut p.content_type, r.string()?),
        0x08 => {
            // A Topic Name: no wildcards (MQTT-3.3.2-14), not empty.
            let topic = r.string()?;
            crate::topic::validate_topic_name(&topic).map_err(|e| DecodeError::InvalidTopic {
                topic: topic.clone(),
                why: e.rule(),
            })?;
            set_once(&mut p.response_topic, topic)
        }
        0x09 => set_once(&mut p.correlation_data, r.binary()?),
        0x0B => {
            let v = r.varint()?;
            if v == 0 {
                return Err(DecodeError::Protocol("subscription identifier 0"));
            }
            if ctx == C::Subscribe && !p.subscription_identifiers.is_empty() {
                return Err(DecodeError::Protocol("property appears more than once"));
            }
            p.subscription_identifiers.push(v);
            Ok(())
        }
        0x11 => set_once(&mut p.session_expiry_interval, r.u32()?),
        0x12 => set_once(&mut p.assigned_client_identifier, r.string()?),
        0x13 => set_once(&mut p.server_keep_alive, r.u16()?),
        0x15 => set_once(&mut p.authentication_method, r.string()?),
        0x16 => set_once(&mut p.authentication_data, r.binary()?),
        0x17 => set_once(&mut p.request_problem_information, zero_or_one(r.u8()?)?),
        0x18 => set_once(&mut p.will_delay_interval, r.u32()?),
        0x19 => set_once(&mut p.request_response_information, zero_or_one(r.u8()?)?),
        0x1A => set_once(&mut p.response_information, r.string()?),
        0x1C => set_once(&mut p.server_reference, r.string()?),
        0x1F => set_once(&mut p.reason_string, r.string()?),
        0x21 => set_once(
            &mut p.receive_maximum,
            nonzero_u16(r.u16()?, "receive maximum 0")?,
        ),
        0x22 => set_once(&mut p.topic_alias_maximum, r.u16()?),
        0x23 => set_once(&mut p.topic_alias, nonzero_u16(r.u16()?, "topic alias 0")?),
        0x24 => set_once(&mut p.maximum_qos, zero_or_one(r.u8()?)?),
        0x25 => set_once(&mut p.retain_available, zero_or_one(r.u8()?)?),
        0x26 => {
            let k = r.string()?;
            let v = r.string()?;
            p.user_properties.push((k, v));
            Ok(())
        }
        0x27 => {
            let v = r.u32()?;
            if v == 0 {
                return Err(DecodeError::Protocol("maximum packet size 0"));
            }
            set_once(&mut p.maximum_packet_size, v)
        }
        0x28 => set_once(
            &mut p.wildcard_subscription_available,
            zero_or_one(r.u8()?)?,
        ),
        0x29 => set_once(
            &mut p.subscription_identifier_available,
            zero_or_one(r.u8()?)?,
        ),
        0x2A => set_once(&mut p.shared_subscription_available, zero_or_one(r.u8()?)?),
        _ => Err(DecodeError::Malformed("unknown property")),
    }
}

fn nonzero_u16(v: u16, why: &'static str) -> Result<u16, DecodeError> {
    if v == 0 {
        Err(DecodeError::Protocol(why))
    } else {
        Ok(v)
    }
}

/// Wire size of the property block's content (without its length prefix).
pub(crate) fn properties_len(p: &Properties) -> usize {
    let mut n = 0;
    let byte = |o: &Option<u8>| o.map_or(0, |_| 2);
    let two = |o: &Option<u16>| o.map_or(0, |_| 3);
    let four = |o: &Option<u32>| o.map_or(0, |_| 5);
    let string = |o: &Option<String>| o.as_ref().map_or(0, |s| 1 + string_len(s));
    let binary = |o: &Option<bytes::Bytes>| o.as_ref().map_or(0, |b| 1 + binary_len(b));
    n += byte(&p.payload_format_indicator) + four(&p.message_expiry_interval);
    n += string(&p.content_type) + string(&p.response_topic) + binary(&p.correlation_data);
    n += p
        .subscription_identifiers
        .iter()
        .map(|&id| 1 + varint_len(id as usize))
        .sum::<usize>();
    n += four(&p.session_expiry_interval) + string(&p.assigned_client_identifier);
    n += two(&p.server_keep_alive) + string(&p.authentication_method);
    n += binary(&p.authentication_data) + byte(&p.request_problem_information);
    n += four(&p.will_delay_interval) + byte(&p.request_response_information);
    n += string(&p.response_information) + string(&p.server_reference);
    n += string(&p.reason_string) + two(&p.receive_maximum) + two(&p.topic_alias_maximum);
    n += two(&p.topic_alias) + byte(&p.maximum_qos) + byte(&p.retain_available);
    n += p
        .user_properties
        .iter()
        .map(|(k, v)| 1 + string_len(k) + string_len(v))
        .sum::<usize>();
    n += four(&p.maximum_packet_size) + byte(&p.wildcard_subscription_available);
    n += byte(&p.subscription_identifier_available) + byte(&p.shared_subscription_available);
    n
}

/// Wire size of the property block including its length prefix.
pub(crate) fn properties_block_len(p: &Properties) -> usize {
    let len = properties_len(p);
    varint_len(len) + len
}

/// Checks every field fits its wire type, before anything is written.
pub(crate) fn check_properties(p: &Properties) -> Result<(), EncodeError> {
    for s in [
        &p.content_type,
        &p.response_topic,
        &p.assigned_client_identifier,
        &p.authentication_method,
        &p.response_information,
        &p.server_reference,
        &p.reason_string,
    ]
    .into_iter()
    .flatten()
    {
        check_field("property string", s.len())?;
    }
    for b in [&p.correlation_data, &p.authentication_data]
        .into_iter()
        .flatten()
    {
        check_field("property binary", b.len())?;
    }
    for (k, v) in &p.user_properties {
        check_field("user property", k.len().max(v.len()))?;
    }
    if p.subscription_identifiers
        .iter()
        .any(|&id| id == 0 || id > MAX_VARINT)
    {
        return Err(EncodeError::Invalid("subscription identifier out of range"));
    }
    Ok(())
}

/// Appends the property block (length prefix and content), in identifier order.
pub(crate) fn put_properties(out: &mut BytesMut, p: &Properties) {
    put_varint(out, properties_len(p));
    put_property_fields(out, p);
}

/// Appends the properties' content, without the length prefix.
pub(crate) fn put_property_fields(out: &mut BytesMut, p: &Properties) {
    let byte = |out: &mut BytesMut, id: u8, v: &Option<u8>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u8(*v);
        }
    };
    let two = |out: &mut BytesMut, id: u8, v: &Option<u16>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u16(*v);
        }
    };
    let four = |out: &mut BytesMut, id: u8, v: &Option<u32>| {
        if let Some(v) = v {
            out.put_u8(id);
            out.put_u32(*v);
        }
    };
    let string = |out: &mut BytesMut, id: u8, v: &Option<String>| {
        if let Some(v) = v {
            out.put_u8(id);
            put_string(out, v);
        }
    };
    let binary = |out: &mut BytesMut, id: u8, v: &Option<bytes::Bytes>| {
        if let Some(v) = v {
            out.put_u8(id);
            put_binary(out, v);
        }
    };
    byte(out, 0x01, &p.payload_format_indicator);
    four(out, 0x02, &p.message_expiry_interval);
    string(out, 0x03, &p.content_type);
    string(out, 0x08, &p.response_topic);
    binary(out, 0x09, &p.correlation_data);
    for &id in &p.subscription_identifiers {
        out.put_u8(0x0B);
        put_varint(out, id as usize);
    }
    four(out, 0x11, &p.session_expiry_interval);
    string(out, 0x12, &p.assigned_client_identifier);
    two(out, 0x13, &p.server_keep_alive);
    string(out, 0x15, &p.authentication_method);
    binary(out, 0x16, &p.authentication_data);
    byte(out, 0x17, &p.request_problem_information);
    four(out, 0x18, &p.will_delay_interval);
    byte(out, 0x19, &p.request_response_information);
    string(out, 0x1A, &p.response_information);
    string(out, 0x1C, &p.server_reference);
    string(out, 0x1F, &p.reason_string);
    two(out, 0x21, &p.receive_maximum);
    two(out, 0x22, &p.topic_alias_maximum);
    two(out, 0x23, &p.topic_alias);
    byte(out, 0x24, &p.maximum_qos);
    byte(out, 0x25, &p.retain_available);
    for (k, v) in &p.user_properties {
        out.put_u8(0x26);
        put_string(out, k);
        put_string(out, v);
    }
    four(out, 0x27, &p.maximum_packet_size);
    byte(out, 0x28, &p.wildcard_subscription_available);
    byte(out, 0x29, &p.subscription_identifier_available);
    byte(out, 0x2A, &p.shared_subscription_available);
}
