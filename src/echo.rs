//! `ringway echo`: a tiny upstream for demos and tests. It answers every request with
//! its own name in the `x-upstream` header and, in the body, either the request's body
//! streamed back or one line `NAME METHOD URI`. A `Connection: upgrade` request is
//! switched (101) and its bytes echoed back raw.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type EchoBody = BoxBody<Bytes, hyper::Error>;

/// Serves the echo upstream on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, name: String) {
    let name: Arc<str> = name.into();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(answer(&name, req)) }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` and serves forever.
pub async fn run(addr: SocketAddr, name: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    // The bound address: with port 0 the requested one names no port.
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %name, "echo upstream listening");
    serve(listener, name).await;
    Ok(())
}

fn answer(name: &str, mut req: Request<Incoming>) -> Response<EchoBody> {
    let has_body = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let mut resp = match upgrade {
        Some(proto) => switch(&mut req, proto),
        None if has_body => Response::new(req.into_body().boxed()),
        None => {
            let line = format!("{name} {} {}\n", req.method(), req.uri());
            Response::new(Full::new(Bytes::from(line)).map_err(|e| match e {}).boxed())
        }
    };
    if let Ok(v) = HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-upstream", v);
    }
    resp
}

fn switch(req: &mut Request<Incoming>, proto: HeaderValue) -> Response<EchoBody> {
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, proto);
    resp
}
