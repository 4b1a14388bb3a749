//! The upstream bytes of a stream on their way to its SSE parser.
//!
//! [`Watched`] notes when bytes arrive, so the idle timeout counts silence
//! on the wire rather than between events (a slow drip or SSE comments keep
//! a stream alive), and ends the body with an error once one event grows
//! past `[upstream] max_response_bytes`, which a parser would otherwise
//! buffer without limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// What [`Watched`] saw of an upstream body, shared with the relay.
#[derive(Clone)]
pub struct Watch {
    start: tokio::time::Instant,
    /// Milliseconds after `start` when bytes last arrived.
    last_ms: Arc<AtomicU64>,
    too_large: Arc<AtomicBool>,
    pub max_event_bytes: u64,
}

impl Watch {
    /// Starts watching now (the response headers count as activity).
    pub fn new(max_event_bytes: u64) -> Self {
        Watch {
            start: tokio::time::Instant::now(),
            last_ms: Arc::default(),
            too_large: Arc::default(),
            max_event_bytes,
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// When bytes last arrived.
    pub fn last_bytes(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
    }

    /// Whether the body was cut off because one event passed the limit.
    pub fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Acquire)
    }
}

/// An upstream SSE body on its way to the parser: notes when bytes arrive,
/// and ends with an error once one event (the bytes since the last blank
/// line) passes `max_event_bytes`, which a parser would otherwise buffer
/// without limit.
pub struct Watched<S> {
    inner: S,
    watch: Watch,
    /// Bytes since the last event boundary.
    pending: u64,
    /// At the start of a line: a line break here ends the event.
    line_start: bool,
    /// The last byte was a CR: an LF now only completes that line break.
    after_cr: bool,
    done: bool,
}

/// Why a watched body stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchedError {
    #[error("{0}")]
    Read(String),
    #[error("an event passed {0} bytes")]
    TooLarge(u64),
}

impl<S> Watched<S> {
    pub fn new(inner: S, watch: Watch) -> Self {
        Watched {
            inner,
            watch,
            pending: 0,
            line_start: true,
            after_cr: false,
            done: false,
        }
    }

    /// Follows SSE line breaks (LF, CRLF, CR) through `bytes`; an empty
    /// line ends an event.
    fn follow(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.pending += 1;
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    if self.line_start {
                        self.pending = 0;
                    }
                    self.line_start = true;
                    self.after_cr = byte == b'\r';
                }
                _ => {
                    self.line_start = false;
                    self.after_cr = false;
                }
            }
        }
    }
}

impl<S, E> Stream for Watched<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error,
{
    type Item = Result<Bytes, WatchedError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match self.inner.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        match next {
            None => Poll::Ready(None),
            // "connection reset by peer" is in the source chain, not in
            // hyper's top message.
            Some(Err(e)) => Poll::Ready(Some(Err(WatchedError::Read(
                crate::wire::upstream::error_chain(&e),
            )))),
            Some(Ok(bytes)) => {
                self.watch.touch();
                self.follow(&bytes);
                if self.pending > self.watch.max_event_bytes {
                    self.done = true;
                    self.watch.too_large.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(WatchedError::TooLarge(
                        self.watch.max_event_bytes,
                    ))));
                }
                Poll::Ready(Some(Ok(bytes)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` through a watched stream with a limit of `max` bytes
    /// and says where it ended: every piece passed, or an error at piece n.
    async fn watch_pieces(pieces: &[&str], max: u64) -> (usize, Option<WatchedError>, Watch) {
        let watch = Watch::new(max);
        let bytes: Vec<Result<Bytes, std::io::Error>> = pieces
            .iter()
            .map(|p| Ok(Bytes::copy_from_slice(p.as_bytes())))
            .collect();
        let mut watched = Watched::new(futures_util::stream::iter(bytes), watch.clone());
        let mut passed = 0;
        while let Some(next) = watched.next().await {
            match next {
                Ok(_) => passed += 1,
                Err(e) => return (passed, Some(e), watch),
            }
        }
        (passed, None, watch)
    }

    #[tokio::test]
    async fn an_event_may_not_grow_past_the_limit_whatever_its_line_breaks() {
        // Many small events, with each kind of SSE line break, pass a limit
        // far below their total.
        for line_break in ["\n", "\r\n", "\r"] {
            let event = format!("data: {}{line_break}{line_break}", "x".repeat(20));
            let pieces: Vec<&str> = std::iter::repeat_n(event.as_str(), 50).collect();
            let (passed, error, watch) = watch_pieces(&pieces, 64).await;
            assert_eq!((passed, error.is_none()), (50, true), "{line_break:?}");
            assert!(!watch.too_large());
        }
        // An event split over chunks, the blank line between two of them.
        let (passed, error, _) =
            watch_pieces(&["data: abc\r", "\n\r", "\ndata: d\n", "\n"], 12).await;
        assert_eq!((passed, error.is_none()), (4, true));
        // Many data lines without a blank line are one growing event.
        let line = "data: xxxxxxxxxx\n";
        let (passed, error, watch) = watch_pieces(&[line; 10], 64).await;
        assert_eq!(passed, 3, "the fourth line takes the event past 64 bytes");
        assert!(matches!(error, Some(WatchedError::TooLarge(64))));
        assert!(watch.too_large());
        // And so is one line that never ends.
        let (passed, error, _) = watch_pieces(&["data: ", &"y".repeat(100)], 64).await;
        assert_eq!(passed, 1);
        assert!(error.is_some());
    }

    #[tokio::test]
    async fn bytes_count_as_activity_even_without_an_event() {
        let watch = Watch::new(1024);
        let before = watch.last_bytes();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let comment: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b": keep-alive\n"))];
        let mut watched = Watched::new(futures_util::stream::iter(comment), watch.clone());
        while watched.next().await.is_some() {}
        assert!(watch.last_bytes() >= before + Duration::from_millis(20));
    }
}
