//! The harness itself, with no proxy between: every call pattern against an h2c
//! backend, and a graceful shutdown (GOAWAY, refused connects) then a restart on the
//! same port. The same checks run through ringway in `calls`.

use tonic::Code;

use crate::common::within;
use crate::grpc::backend::Backend;
use crate::grpc::check;
use crate::grpc::echo::EchoClient;

#[tokio::test]
async fn every_call_pattern_direct() {
    let backend = Backend::h2c("b1").await;
    let mut client = EchoClient::connect(backend.addr).await;
    assert_eq!(check::unary(&mut client, "ann").await, "b1");
    assert_eq!(check::server_streaming(&mut client, 20).await, "b1");
    assert_eq!(
        check::trailer_status(&mut client, Code::FailedPrecondition).await,
        "b1"
    );
    check::unary_error(&mut client, Code::NotFound).await;
    assert_eq!(check::client_streaming(&mut client, 50).await, "b1");
    assert_eq!(check::bidi(&mut client, 10).await, "b1");
    assert_eq!(
        backend.conns.accepted(),
        1,
        "one HTTP/2 connection carries all"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_open_calls_then_refuses_then_restarts() {
    let mut backend = Backend::h2c("b1").await;
    let mut client = EchoClient::connect(backend.addr).await;
    let mut chat = check::Chat::open(&mut client, "x").await;
    backend.begin_shutdown();
    // The open stream still works after GOAWAY.
    chat.round().await;
    chat.round().await;
    assert_eq!(chat.finish().await, 3);
    within("shutdown", backend.shutdown()).await;
    assert_eq!(backend.conns.open(), 0);
    let refused = tokio::net::TcpStream::connect(backend.addr).await;
    assert!(refused.is_err(), "connects are refused once shut down");
    backend.restart().await;
    let mut client = EchoClient::connect(backend.addr).await;
    assert_eq!(check::unary(&mut client, "ann").await, "b1");
    assert_eq!(backend.conns.accepted(), 2);
}
