//! Messages per second for the TTLV codec and the typed model, on the two messages atrest
//! exchanges most: a Get response carrying a 256-bit key, and a Create request.
//!
//! Run: `cargo bench -p kmip --bench codec`. Results go in `bench/RESULTS.md`.

#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kmip::message::{RequestMessage, ResponseMessage};
use kmip::ttlv;

// PyKMIP 0.11.0 captures (throw-away key): Get response, KMIP 1.2, AES-256 Raw; and a
// Create request, KMIP 1.2, Template-Attribute with algorithm, length, mask and Name.
const GET_RESPONSE: &str = "42007b010000011042007a0100000048420069010000002042006a0200000004000000010000000042006b020000000400000002000000004200920900000008000000006b0b11fa42000d0200000004000000010000000042000f01000000b842005c05000000040000000a0000000042007f0500000004000000000000000042007c0100000090420057050000000400000002000000004200940700000001310000000000000042008f0100000068420040010000006042004205000000040000000100000000420045010000002842004308000000202655e6facec9cb183728f8bca8b94ed8fb027faba20b6cdf68a1cde80fd5ece44200280500000004000000030000000042002a02000000040000010000000000";
const CREATE_REQUEST: &str = "42007801000001b04200770100000088420069010000002042006a0200000004000000010000000042006b0200000004000000020000000042000c010000004842002301000000404200240500000004000000010000000042002501000000284200990700000005616c6963650000004200a1070000000e77726f6e672d70617373776f7264000042000d0200000004000000010000000042000f010000011842005c0500000004000000010000000042007901000001004200570500000004000000020000000042009101000000e8420008010000003042000a070000001743727970746f6772617068696320416c676f726974686d0042000b05000000040000000300000000420008010000003042000a070000001443727970746f67726170686963204c656e6774680000000042000b02000000040000010000000000420008010000003042000a070000001843727970746f67726170686963205573616765204d61736b42000b02000000040000000c00000000420008010000003842000a07000000044e616d650000000042000b010000002042005507000000086469736b2d6b657942005405000000040000000100000000";

fn codec(c: &mut Criterion) {
    let get = hex::decode(GET_RESPONSE).unwrap();
    let create = hex::decode(CREATE_REQUEST).unwrap();
    let mut g = c.benchmark_group("ttlv");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode get response", |b| {
        b.iter(|| ttlv::decode(black_box(&get)).unwrap())
    });
    g.bench_function("decode+type get response", |b| {
        b.iter(|| ResponseMessage::from_item(&ttlv::decode(black_box(&get)).unwrap()).unwrap())
    });
    let get_msg = ResponseMessage::from_item(&ttlv::decode(&get).unwrap()).unwrap();
    g.bench_function("encode get response", |b| {
        b.iter(|| black_box(&get_msg).encode())
    });
    g.bench_function("decode+type create request", |b| {
        b.iter(|| RequestMessage::from_item(&ttlv::decode(black_box(&create)).unwrap()).unwrap())
    });
    let create_msg = RequestMessage::from_item(&ttlv::decode(&create).unwrap()).unwrap();
    g.bench_function("encode create request", |b| {
        b.iter(|| black_box(&create_msg).encode())
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
