//! Ring and key-extraction micro-benchmarks: lookup at 3, 30 and 300 upstreams (goal:
//! under 100 ns at 300), ring build, and hashing a request's key.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method, Uri};
use ringway::balance::{HashKey, KeyInput};
use ringway::ring::{point, Member, Ring};

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
        .collect()
}

fn ring(ids: &[String]) -> Ring {
    let m: Vec<Member> = ids.iter().map(|id| Member { id, weight: 1 }).collect();
    Ring::build(&m, 150)
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_lookup");
    // Pre-hashed keys: this measures the binary search alone.
    let hashes: Vec<u32> = (0..4096u32).map(|k| point(&k.to_le_bytes())).collect();
    for n in [3, 30, 300] {
        let ids = ids(n);
        let r = ring(&ids);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(r.lookup(black_box(hashes[i])))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ring_walk_3_of");
    for n in [3, 30, 300] {
        let r = ring(&ids(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                r.walk(black_box(hashes[i]), 3).sum::<usize>()
            })
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_build");
    g.sample_size(20);
    for n in [3, 30, 300] {
        let ids = ids(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &ids, |b, ids| {
            b.iter(|| ring(ids))
        });
    }
    g.finish();
}

fn key(c: &mut Criterion) {
    let uri: Uri = "/catalog/items/123456?color=blue&size=m".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("shop.example.com"));
    headers.insert("x-tenant", HeaderValue::from_static("acme"));
    headers.insert(
        "cookie",
        HeaderValue::from_static("theme=dark; session=abcdef0123456789; lang=en"),
    );
    let input = KeyInput {
        method: &Method::GET,
        uri: &uri,
        headers: &headers,
        client_ip: "192.0.2.44".parse().unwrap(),
    };
    let mut g = c.benchmark_group("key_hash");
    for spec in [
        "path",
        "uri",
        "client_ip",
        "header:x-tenant",
        "cookie:session",
        "query:size",
        "{header:x-tenant}/{path}",
    ] {
        let key = HashKey::parse(spec).unwrap();
        g.bench_function(spec, |b| b.iter(|| black_box(key.hash(black_box(&input)))));
    }
    g.finish();

    // Key hash plus lookup: what the request path pays to pick an upstream.
    let r = ring(&ids(300));
    let key = HashKey::parse("uri").unwrap();
    c.bench_function("select_uri_300", |b| {
        b.iter(|| r.lookup(key.hash(black_box(&input)).unwrap()))
    });
}

criterion_group!(benches, lookup, build, key);
criterion_main!(benches);
