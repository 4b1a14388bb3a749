//! The response body type every handler returns.
//!
//! One boxed type lets a handler answer with a buffered JSON body or a live
//! SSE stream without the server caring which. Its error type is
//! `Infallible` because failures inside a stream are sent to the client as
//! SSE error events, never as a broken connection.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A body fed chunk by chunk from a channel: the relay task sends, hyper
/// writes each chunk out as soon as it arrives. The bounded channel gives
/// back-pressure, and a failed `send` tells the relay the client has gone.
pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(capacity);
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|next| next.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))))
    });
    (tx, StreamBody::new(stream).boxed())
}
