//! Encode and decode cost of the two frames the server's hot path lives on.
//!
//! Groups:
//! - `put32`: a PUT of 32 blocks of 256 KiB. `encode` builds the header and 32-entry index
//!   and borrows the blocks (it must not depend on block size: nothing is copied); `decode`
//!   validates the index against the data section and yields the 32 borrowed blocks.
//! - `match32`: a MATCH of 32 hashes. `encode` and `decode` (which iterates the 32 hashes) of
//!   the request, `decode_no_iter` (framing and validation only), and the 32-entry reply's
//!   `encode_reply`.
//! - `resp_get`: parsing 16 pipelined redis-benchmark-style `GET key:000000001234` commands,
//!   with `parse_command` (a new argument vector per command) and `parse_command_into` (one
//!   vector reused, as a connection does).
//!
//! Run: `cargo bench -p kvtier-proto --bench codec` (criterion; ns per frame).
//! Reference figures are in `docs/protocol.md` ("Codec speed").

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kvtier_core::SequenceHash;
use kvtier_proto::resp::{Command, RespLimits, parse_command, parse_command_into};
use kvtier_proto::{
    HashList, Limits, PutBlocks, Request, Response, TierId, TierSet, WriteBuf, decode_request,
};

fn chain(n: u64) -> Vec<SequenceHash> {
    let mut out = Vec::with_capacity(n as usize);
    let mut h = SequenceHash::root(0x9E37_79B9_7F4A_7C15);
    out.push(h);
    for i in 1..n {
        h = SequenceHash::child_of(h, i.wrapping_mul(0x2545_F491_4F6C_DD1D));
        out.push(h);
    }
    out
}

fn put32(c: &mut Criterion) {
    let limits = Limits {
        max_frame_bytes: u32::MAX,
        ..Limits::default()
    };
    let hashes = chain(32);
    let data: Vec<Vec<u8>> = (0..32).map(|i| vec![i as u8; 256 * 1024]).collect();
    let blocks: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let put = Request::Put {
        durable: false,
        blocks: PutBlocks::new(&hashes, &blocks).expect("same lengths"),
    };
    let mut g = c.benchmark_group("put32");
    let mut out = WriteBuf::new();
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            put.encode(black_box(1), &limits, &mut out).expect("fits");
            black_box(out.len())
        })
    });
    let mut out = WriteBuf::new();
    put.encode(1, &limits, &mut out).expect("fits");
    let wire = out.to_vec();
    g.bench_function("decode", |b| {
        b.iter(|| {
            let (_, req) = decode_request(black_box(&wire), &limits).expect("valid");
            let Request::Put { blocks, .. } = req else {
                unreachable!()
            };
            blocks
                .iter()
                .map(|(h, b)| h.chained() as usize ^ b.len())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn match32(c: &mut Criterion) {
    let limits = Limits::default();
    let hashes = chain(32);
    let mut g = c.benchmark_group("match32");
    let mut out = WriteBuf::new();
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            Request::Match(HashList::new(black_box(&hashes)))
                .encode(7, &limits, &mut out)
                .expect("fits");
            black_box(out.len())
        })
    });
    let mut out = WriteBuf::new();
    Request::Match(HashList::new(&hashes))
        .encode(7, &limits, &mut out)
        .expect("fits");
    let wire = out.to_vec();
    g.bench_function("decode", |b| {
        b.iter(|| {
            let (_, req) = decode_request(black_box(&wire), &limits).expect("valid");
            let Request::Match(list) = req else {
                unreachable!()
            };
            list.iter().fold(0u64, |a, h| a ^ h.chained())
        })
    });
    g.bench_function("decode_no_iter", |b| {
        b.iter(|| {
            let (_, req) = decode_request(black_box(&wire), &limits).expect("valid");
            let Request::Match(list) = req else {
                unreachable!()
            };
            list.len()
        })
    });
    let tiers = vec![TierSet::EMPTY.with(TierId::G2); 32];
    let mut out = WriteBuf::new();
    g.bench_function("encode_reply", |b| {
        b.iter(|| {
            out.clear();
            Response::Match(black_box(tiers.clone()))
                .encode(7, &limits, &mut out)
                .expect("fits");
            black_box(out.len())
        })
    });
    g.finish();
}

fn resp_get(c: &mut Criterion) {
    let limits = RespLimits::default();
    let wire = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000001234\r\n".repeat(16);
    c.bench_function("resp_get/parse16", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut n = 0;
            while let Some(p) = parse_command(&wire[offset..], &limits).expect("valid") {
                offset += p.consumed;
                if let Ok(Command::Get(k)) = Command::from_args(&p.args) {
                    n += k.len();
                }
            }
            n
        })
    });
}

fn resp_get_into(c: &mut Criterion) {
    let limits = RespLimits::default();
    let wire = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000001234\r\n".repeat(16);
    c.bench_function("resp_get/parse16_into", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut n = 0;
            let mut args = Vec::new();
            while let Some(used) =
                parse_command_into(&wire[offset..], &limits, &mut args).expect("valid")
            {
                offset += used;
                if let Ok(Command::Get(k)) = Command::from_args(&args) {
                    n += k.len();
                }
            }
            n
        })
    });
}

criterion_group!(benches, put32, match32, resp_get, resp_get_into);
criterion_main!(benches);
