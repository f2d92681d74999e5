//! Codec throughput: PUBLISH decode/encode at 64 B and 4 KiB payloads, and a
//! CONNECT with properties. Run with `cargo bench -p vigil-proto --bench codec`.
#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use vigil_proto::{Connect, Packet, Properties, ProtocolVersion, Publish, QoS};

fn publish(size: usize) -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 42,
        topic: "sensors/building-7/floor-3/temperature".into(),
        payload: Bytes::from(vec![0xAB; size]),
        ..Publish::default()
    })
}

fn connect() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: "device-000123".into(),
        username: Some("fleet".into()),
        password: Some(Bytes::from_static(b"secret")),
        properties: Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(100),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(10),
            user_properties: vec![("region".into(), "eu-west".into())],
            ..Properties::default()
        },
        will: None,
    }))
}

fn bench_packet(c: &mut Criterion, name: &str, packet: &Packet) {
    let v = ProtocolVersion::V5;
    let mut wire = BytesMut::new();
    packet.encode(v, &mut wire).expect("encodes");
    let wire = wire.freeze();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            black_box(Packet::decode(&mut buf, v, u32::MAX).expect("decodes"))
        })
    });
    let mut out = BytesMut::with_capacity(wire.len() * 2);
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            packet.encode(v, &mut out).expect("encodes");
            black_box(out.len())
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_packet(c, "publish_64B", &publish(64));
    bench_packet(c, "publish_4KiB", &publish(4096));
    bench_packet(c, "connect_v5_props", &connect());
}

criterion_group!(benches, codec);
criterion_main!(benches);
