//! The `ringway.test.Echo` gRPC service and its client, written by hand with tonic's
//! lower-level API (no `protoc`, no build script): the messages derive
//! `prost::Message`, the server routes `/ringway.test.Echo/METHOD` to
//! `tonic::server::Grpc`, and the client calls `tonic::client::Grpc`.
//!
//! Every reply names the backend that served it, so routing and stickiness can be
//! checked; `Say` also returns the request metadata the backend saw, and `Count` can
//! end with trailing metadata (and a chosen `grpc-status`) to check trailers pass.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The service's full name.
pub const SERVICE: &str = "ringway.test.Echo";
/// Most messages one `Count` call may ask for: a test's stream, never a flood.
pub const MAX_COUNT: u32 = 10_000;
/// Longest pause `Count` makes between two messages.
pub const MAX_DELAY_MS: u32 = 5_000;

#[derive(Clone, PartialEq, prost::Message)]
pub struct SayRequest {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SayReply {
    #[prost(string, tag = "1")]
    pub backend: String,
    #[prost(string, tag = "2")]
    pub text: String,
    /// The ASCII request metadata the backend received.
    #[prost(map = "string, string", tag = "3")]
    pub metadata: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    #[prost(uint32, tag = "1")]
    pub n: u32,
    #[prost(uint32, tag = "2")]
    pub delay_ms: u32,
    /// The `grpc-status` the stream ends with (0: OK). Either way the trailers carry
    /// `x-backend` and `x-count`.
    #[prost(int32, tag = "3")]
    pub end_code: i32,
    #[prost(string, tag = "4")]
    pub end_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CountReply {
    #[prost(uint32, tag = "1")]
    pub i: u32,
    #[prost(string, tag = "2")]
    pub backend: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    #[prost(int64, tag = "1")]
    pub value: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SumReply {
    #[prost(int64, tag = "1")]
    pub total: i64,
    #[prost(uint32, tag = "2")]
    pub count: u32,
    #[prost(string, tag = "3")]
    pub backend: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChatMessage {
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    #[prost(string, tag = "2")]
    pub text: String,
    #[prost(string, tag = "3")]
    pub backend: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FailRequest {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

// ---------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Echo service of one backend, named `name`.
#[derive(Clone)]
pub struct EchoServer {
    name: Arc<str>,
}

impl EchoServer {
    pub fn new(name: &str) -> EchoServer {
        EchoServer { name: name.into() }
    }
}

impl NamedService for EchoServer {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<Body>> for EchoServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let name = self.name.clone();
        let method = req
            .uri()
            .path()
            .strip_prefix(&format!("/{SERVICE}/"))
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            let n = name.clone();
            let resp = match method.as_str() {
                "Say" => grpc().unary(fn_svc(n, say), req).await,
                "Fail" => grpc().unary(fn_svc(n, fail), req).await,
                "Count" => grpc().server_streaming(fn_svc(n, count), req).await,
                "Sum" => grpc().client_streaming(fn_svc(n, sum), req).await,
                "Chat" => grpc().streaming(fn_svc(n, chat), req).await,
                _ => Status::unimplemented(format!("no method {method}")).into_http(),
            };
            Ok(resp)
        })
    }
}

fn grpc<E, D>() -> tonic::server::Grpc<ProstCodec<E, D>>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    tonic::server::Grpc::new(ProstCodec::default())
}

/// A tower service calling `f(backend name, request)`.
fn fn_svc<Req, Fut, Resp>(
    name: Arc<str>,
    f: fn(Arc<str>, Request<Req>) -> Fut,
) -> impl tower::Service<Request<Req>, Response = Response<Resp>, Error = Status, Future = Fut>
where
    Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
{
    tower::service_fn(move |req| f(name.clone(), req))
}

fn say(name: Arc<str>, req: Request<SayRequest>) -> BoxFuture<Result<Response<SayReply>, Status>> {
    let metadata = req
        .metadata()
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.to_string(), v.to_str().ok()?.to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    let reply = SayReply {
        backend: name.to_string(),
        text: req.into_inner().text,
        metadata,
    };
    Box::pin(async move { Ok(Response::new(reply)) })
}

fn fail(
    name: Arc<str>,
    req: Request<FailRequest>,
) -> BoxFuture<Result<Response<SayReply>, Status>> {
    let r = req.into_inner();
    let mut md = MetadataMap::new();
    md.insert("x-backend", ascii(&name));
    let status = Status::with_metadata(Code::from_i32(r.code), r.message, md);
    Box::pin(async move { Err(status) })
}

fn count(
    name: Arc<str>,
    req: Request<CountRequest>,
) -> BoxFuture<Result<Response<MessageStream<CountReply>>, Status>> {
    let r = req.into_inner();
    Box::pin(async move {
        if r.n > MAX_COUNT || r.delay_ms > MAX_DELAY_MS {
            let why = format!("n at most {MAX_COUNT}, delay_ms at most {MAX_DELAY_MS}");
            return Err(Status::invalid_argument(why));
        }
        let delay = Duration::from_millis(r.delay_ms.into());
        let backend = name.to_string();
        let messages = tokio_stream::iter(0..r.n).then(move |i| {
            let backend = backend.clone();
            async move {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(CountReply { i, backend })
            }
        });
        let mut md = MetadataMap::new();
        md.insert("x-backend", ascii(&name));
        md.insert("x-count", ascii(&r.n.to_string()));
        md.insert_bin("x-raw-bin", MetadataValue::from_bytes(&[0, 1, 2, 0xff]));
        // A final "error" with code OK ends the stream with these trailers.
        let end = Status::with_metadata(Code::from_i32(r.end_code), r.end_message, md);
        let stream: MessageStream<CountReply> =
            Box::pin(messages.chain(tokio_stream::once(Err(end))));
        Ok(Response::new(stream))
    })
}

fn sum(
    name: Arc<str>,
    req: Request<Streaming<Number>>,
) -> BoxFuture<Result<Response<SumReply>, Status>> {
    let mut numbers = req.into_inner();
    Box::pin(async move {
        let (mut total, mut count) = (0i64, 0u32);
        while let Some(n) = numbers.message().await? {
            total = total.wrapping_add(n.value);
            count += 1;
        }
        let backend = name.to_string();
        Ok(Response::new(SumReply {
            total,
            count,
            backend,
        }))
    })
}

fn chat(
    name: Arc<str>,
    req: Request<Streaming<ChatMessage>>,
) -> BoxFuture<Result<Response<MessageStream<ChatMessage>>, Status>> {
    let incoming = req.into_inner();
    let backend = name.to_string();
    let echoed = incoming.map(move |m| {
        m.map(|m| ChatMessage {
            backend: backend.clone(),
            ..m
        })
    });
    Box::pin(async move { Ok(Response::new(Box::pin(echoed) as MessageStream<_>)) })
}

fn ascii(s: &str) -> MetadataValue<tonic::metadata::Ascii> {
    s.parse().expect("metadata value is ASCII")
}

// ---------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------

/// A client of the Echo service over one HTTP/2 connection.
#[derive(Clone)]
pub struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
}

fn path(method: &str) -> PathAndQuery {
    format!("/{SERVICE}/{method}")
        .parse()
        .expect("valid method path")
}

impl EchoClient {
    /// Connects (h2c, prior knowledge) to `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> EchoClient {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("valid URI")
            .connect_timeout(crate::common::WAIT)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        EchoClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))
    }

    /// `Say(text)` with `metadata` as request headers.
    pub async fn say(
        &mut self,
        text: &str,
        metadata: &[(&'static str, &str)],
    ) -> Result<Response<SayReply>, Status> {
        let mut req = Request::new(SayRequest { text: text.into() });
        for (k, v) in metadata {
            req.metadata_mut().insert(*k, ascii(v));
        }
        self.ready().await?;
        self.grpc
            .unary(req, path("Say"), ProstCodec::default())
            .await
    }

    pub async fn fail(&mut self, code: Code, message: &str) -> Result<Response<SayReply>, Status> {
        let req = Request::new(FailRequest {
            code: code as i32,
            message: message.into(),
        });
        self.ready().await?;
        self.grpc
            .unary(req, path("Fail"), ProstCodec::default())
            .await
    }

    pub async fn count(
        &mut self,
        req: CountRequest,
    ) -> Result<Response<Streaming<CountReply>>, Status> {
        self.ready().await?;
        self.grpc
            .server_streaming(Request::new(req), path("Count"), ProstCodec::default())
            .await
    }

    pub async fn sum(
        &mut self,
        numbers: impl Stream<Item = Number> + Send + 'static,
    ) -> Result<Response<SumReply>, Status> {
        self.ready().await?;
        self.grpc
            .client_streaming(Request::new(numbers), path("Sum"), ProstCodec::default())
            .await
    }

    /// Opens a `Chat` whose outgoing messages come from `outgoing`; `metadata` goes
    /// in the request headers.
    pub async fn chat(
        &mut self,
        outgoing: impl Stream<Item = ChatMessage> + Send + 'static,
        metadata: &[(&'static str, &str)],
    ) -> Result<Response<Streaming<ChatMessage>>, Status> {
        let mut req = Request::new(outgoing);
        for (k, v) in metadata {
            req.metadata_mut().insert(*k, ascii(v));
        }
        self.ready().await?;
        self.grpc
            .streaming(req, path("Chat"), ProstCodec::default())
            .await
    }
}
