//! The call patterns every path is checked with, direct to a backend or through
//! ringway: each asserts the whole exchange and returns the backend that served it.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::Code;

use crate::common::within;
use crate::grpc::echo::{ChatMessage, CountRequest, EchoClient, Number};

/// `Say` with `x-user: user` in the metadata: the backend saw it, and `te: trailers`.
pub async fn unary(client: &mut EchoClient, user: &str) -> String {
    let reply = within("Say", client.say("hello", &[("x-user", user)]))
        .await
        .unwrap_or_else(|s| panic!("Say failed: {s:?}"))
        .into_inner();
    assert_eq!(reply.text, "hello");
    assert_eq!(reply.metadata.get("x-user").map(String::as_str), Some(user));
    assert_eq!(
        reply.metadata.get("te").map(String::as_str),
        Some("trailers"),
        "te: trailers must reach the backend; it saw {:?}",
        reply.metadata
    );
    assert_eq!(
        reply.metadata.get("content-type").map(String::as_str),
        Some("application/grpc")
    );
    reply.backend
}

/// `Count` of `n` messages in order, then trailers with `grpc-status: 0` and the
/// backend's own trailing metadata (ASCII and binary) intact.
pub async fn server_streaming(client: &mut EchoClient, n: u32) -> String {
    let req = CountRequest {
        n,
        ..Default::default()
    };
    let mut stream = within("Count", client.count(req))
        .await
        .unwrap_or_else(|s| panic!("Count failed: {s:?}"))
        .into_inner();
    let mut backend = None;
    for i in 0..n {
        let m = within("Count message", stream.message())
            .await
            .unwrap_or_else(|s| panic!("Count message {i}: {s:?}"))
            .unwrap_or_else(|| panic!("Count ended after {i} of {n}"));
        assert_eq!(m.i, i);
        assert_eq!(*backend.get_or_insert(m.backend.clone()), m.backend);
    }
    let end = within("Count end", stream.message()).await;
    assert!(matches!(end, Ok(None)), "Count must end OK: {end:?}");
    let trailers = within("trailers", stream.trailers())
        .await
        .expect("trailers")
        .expect("trailers present");
    let backend = backend.unwrap_or_default();
    assert_trailers(&trailers, &backend, n);
    backend
}

/// `Count` that ends with `code` and a message: the status and the metadata arrive
/// in the trailers after the messages.
pub async fn trailer_status(client: &mut EchoClient, code: Code) -> String {
    let req = CountRequest {
        n: 3,
        end_code: code as i32,
        end_message: "ended on purpose: ünïcode".into(),
        ..Default::default()
    };
    let mut stream = within("Count", client.count(req))
        .await
        .expect("Count accepted")
        .into_inner();
    for _ in 0..3 {
        let m = within("message", stream.message()).await;
        assert!(matches!(m, Ok(Some(_))), "message before the status: {m:?}");
    }
    let status = within("status", stream.message())
        .await
        .expect_err("the stream ends with an error status");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), "ended on purpose: ünïcode");
    let backend = status
        .metadata()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("x-backend in the trailers: {status:?}"))
        .to_owned();
    assert_trailers(status.metadata(), &backend, 3);
    backend
}

fn assert_trailers(trailers: &MetadataMap, backend: &str, n: u32) {
    let get = |k: &str| trailers.get(k).and_then(|v| v.to_str().ok());
    assert_eq!(get("x-backend"), Some(backend), "{trailers:?}");
    assert_eq!(get("x-count"), Some(n.to_string().as_str()), "{trailers:?}");
    let raw = trailers
        .get_bin("x-raw-bin")
        .and_then(|v| v.to_bytes().ok());
    assert_eq!(raw.as_deref(), Some(&[0u8, 1, 2, 0xff][..]), "{trailers:?}");
}

/// A unary error: a trailers-only response with `code`, the message and metadata.
pub async fn unary_error(client: &mut EchoClient, code: Code) {
    let status = within("Fail", client.fail(code, "no such thing"))
        .await
        .expect_err("Fail fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), "no such thing");
    assert!(status.metadata().get("x-backend").is_some(), "{status:?}");
}

/// `Sum` of `1..=n` sent one message at a time.
pub async fn client_streaming(client: &mut EchoClient, n: i64) -> String {
    let numbers = tokio_stream::iter((1..=n).map(|value| Number { value }));
    let reply = within("Sum", client.sum(numbers))
        .await
        .unwrap_or_else(|s| panic!("Sum failed: {s:?}"))
        .into_inner();
    assert_eq!(reply.total, n * (n + 1) / 2);
    assert_eq!(reply.count as i64, n);
    reply.backend
}

/// An open `Chat` in lockstep: the next message is sent only once the previous one's
/// echo came back, so nothing along the way may hold the stream back.
pub struct Chat {
    tx: mpsc::Sender<ChatMessage>,
    rx: tonic::Streaming<ChatMessage>,
    next: u32,
    pub backend: String,
}

impl Chat {
    pub async fn open(client: &mut EchoClient, user: &str) -> Chat {
        let (tx, out) = mpsc::channel(1);
        let first = ChatMessage {
            seq: 0,
            text: "m0".into(),
            backend: String::new(),
        };
        tx.send(first).await.expect("queue first message");
        let rx = within(
            "Chat",
            client.chat(ReceiverStream::new(out), &[("x-user", user)]),
        )
        .await
        .unwrap_or_else(|s| panic!("Chat failed: {s:?}"))
        .into_inner();
        let mut chat = Chat {
            tx,
            rx,
            next: 0,
            backend: String::new(),
        };
        chat.backend = chat.receive().await;
        chat
    }

    /// Waits for the echo of the message sent last; returns the backend.
    async fn receive(&mut self) -> String {
        let seq = self.next;
        let m = within("Chat echo", self.rx.message())
            .await
            .unwrap_or_else(|s| panic!("Chat echo {seq}: {s:?}"))
            .unwrap_or_else(|| panic!("Chat ended before echo {seq}"));
        assert_eq!((m.seq, m.text), (seq, format!("m{seq}")));
        self.next += 1;
        m.backend
    }

    /// Sends the next message and waits for its echo (from the same backend).
    pub async fn round(&mut self) {
        let seq = self.next;
        let m = ChatMessage {
            seq,
            text: format!("m{seq}"),
            backend: String::new(),
        };
        within("Chat send", self.tx.send(m))
            .await
            .expect("chat stream open");
        let backend = self.receive().await;
        assert_eq!(backend, self.backend, "a stream stays on its backend");
    }

    /// Half-closes and expects the stream to end OK.
    pub async fn finish(mut self) -> u32 {
        drop(self.tx);
        let end = within("Chat end", self.rx.message()).await;
        assert!(matches!(end, Ok(None)), "Chat must end OK: {end:?}");
        self.next
    }
}

/// A chat of `rounds` lockstep messages; returns the backend.
pub async fn bidi(client: &mut EchoClient, rounds: u32) -> String {
    let mut chat = Chat::open(client, "bidi").await;
    for _ in 1..rounds {
        chat.round().await;
    }
    let backend = chat.backend.clone();
    assert_eq!(chat.finish().await, rounds);
    backend
}
