//! A request body streamed through to a provider, with a deadline on the
//! client that sends it.
//!
//! A forwarded upload is not read whole before it goes on (it may be
//! hundreds of megabytes), so its concurrency permit is held while it
//! streams. A client that trickles a byte now and then would hold that
//! place for ever, and a few of them would starve `[limits]
//! concurrent_requests`. So the client gets `[server]
//! body_read_timeout_seconds` in total to send it, as for a model call's
//! body; only the time spent waiting for the client counts, not the time
//! the provider takes to read what it was sent, so a slow provider never
//! cuts off a fast client.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body whose client ran out of time ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct TooSlow(pub Duration);

/// `inner`, failing with [`TooSlow`] once its sender has kept the reader
/// waiting for `allowed` in total.
pub struct Paced<B> {
    inner: B,
    /// What is left of the allowance, when no wait is under way.
    left: Duration,
    /// The wait under way: when it started, and when it runs out.
    waiting: Option<(Instant, Pin<Box<Sleep>>)>,
    allowed: Duration,
    /// Set when the allowance ran out, for whoever answers the client.
    expired: Arc<AtomicBool>,
}

impl<B> Paced<B> {
    /// The body and a flag that says, after the fact, whether it expired.
    pub fn new(inner: B, allowed: Duration) -> (Self, Arc<AtomicBool>) {
        let expired = Arc::new(AtomicBool::new(false));
        let paced = Paced {
            inner,
            left: allowed,
            waiting: None,
            allowed,
            expired: expired.clone(),
        };
        (paced, expired)
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some((started, _)) = this.waiting.take() {
                    this.left = this.left.saturating_sub(started.elapsed());
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let left = this.left;
                let (_, sleep) = this.waiting.get_or_insert_with(|| {
                    let now = Instant::now();
                    (now, Box::pin(tokio::time::sleep_until(now + left)))
                });
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.expired.store(true, Ordering::Release);
                        Poll::Ready(Some(Err(Box::new(TooSlow(this.allowed)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Chunk = Result<Frame<Bytes>, std::convert::Infallible>;

    #[tokio::test(start_paused = true)]
    async fn a_sender_that_dawdles_past_its_allowance_is_cut_off() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
        let body = StreamBody::new(tokio_stream_from(rx));
        let (paced, expired) = Paced::new(body, Duration::from_secs(30));
        let reader = tokio::spawn(async move { paced.collect().await.map(|_| ()) });
        // Two waits of 20 s: the second one passes the 30 s in total.
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_secs(20)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let read = reader.await.expect("joined");
        assert!(read.is_err());
        assert!(expired.load(Ordering::Acquire));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_its_time_does_not_count_against_the_sender() {
        let chunks: Vec<Chunk> = (0..5)
            .map(|_| Ok(Frame::data(Bytes::from_static(b"x"))))
            .collect();
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let (mut paced, expired) = Paced::new(body, Duration::from_secs(1));
        let mut read = 0;
        while let Some(frame) = paced.frame().await {
            read += frame
                .expect("no deadline")
                .into_data()
                .map_or(0, |d| d.len());
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert_eq!(read, 5);
        assert!(!expired.load(Ordering::Acquire));
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Chunk>,
    ) -> impl futures_util::Stream<Item = Chunk> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
