//! A connection's bytes: the service that answers its requests, the
//! answer body that reports when it is done, and the wrapper that times
//! reads and rewrites hyper's own bare error answers as JSON.

#![allow(clippy::wildcard_imports)]

use super::*;

/// The routes as a hyper service for one connection: marks the connection
/// busy while it answers, and answers through [`crate::app::handle`]
/// (metrics, access log, faults) with the client's address.
#[derive(Clone)]
pub(super) struct Service {
    pub(super) routes: Router,
    pub(super) shared: Arc<Shared>,
    pub(super) conn: Arc<Conn>,
    pub(super) remote: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let head = self.conn.on_request();
        let req = req.map(Body::new);
        let mut routes = self.routes.clone();
        let shared = Arc::clone(&self.shared);
        let conn = Arc::clone(&self.conn);
        let peer = self.remote.ip();
        Box::pin(async move {
            // A router is always ready (its `poll_ready` is `Ready`), so
            // calling it directly is sound; it never fails.
            let kept = &shared;
            let inner = |req| async move {
                // The hot path skips the router's matching and boxing.
                if let Some(answer) = crate::app::kept_answer(kept, &req) {
                    return answer;
                }
                match tower_service::Service::call(&mut routes, req).await {
                    Ok(answer) => answer,
                    Err(never) => match never {},
                }
            };
            // Timed from the head's first byte, a clock read the
            // connection made already.
            let started = head.unwrap_or_else(Instant::now);
            let (answer, made) = crate::app::handle(&shared, Some(peer), started, req, inner).await;
            Ok(answer.map(|inner| Body::new(Answer { inner, conn, made })))
        })
    }
}

/// An answer's body that tells its connection when it has ended, and when
/// the answer was made.
pub(super) struct Answer {
    inner: Body,
    conn: Arc<Conn>,
    made: Instant,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.conn.on_answer_done(self.made);
    }
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket as hyper sees it: reports reads and flushes to the
/// connection's state, and rewrites hyper's own error answers as JSON.
pub(super) struct Guarded<I> {
    pub(super) io: I,
    pub(super) conn: Arc<Conn>,
    /// A JSON error answer being written in place of hyper's, and how much
    /// of it is out.
    pub(super) rewrite: Option<(Vec<u8>, usize)>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let Poll::Ready(read) = Pin::new(&mut self.io).poll_read(cx, buf) else {
            self.conn.on_empty_read();
            return Poll::Pending;
        };
        read?;
        if buf.filled().len() > before {
            self.conn.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> Guarded<I> {
    /// Writes the rest of the rewritten answer; `Ready` once all is out.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.rewrite {
            if *sent == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Starts a rewrite if `first` opens hyper's answer to an unparsable head.
    fn intercept(&mut self, first: &[u8]) {
        if self.rewrite.is_none()
            && let Some(status) = hyper_error_status(first)
            && self.conn.waiting()
        {
            self.rewrite = Some((json_answer(status), 0));
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.intercept(buf);
        if self.rewrite.is_some() {
            // hyper's bytes are swallowed once ours are out.
            ready!(self.poll_rewrite(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.intercept(first);
        }
        if self.rewrite.is_some() {
            ready!(self.poll_rewrite(cx))?;
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_rewrite(cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.conn.on_flushed();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_rewrite(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The status of an error answer that starts with `bytes`, if they open one
/// (`HTTP/1.1 431 ...`).
pub(super) fn hyper_error_status(bytes: &[u8]) -> Option<StatusCode> {
    let rest = bytes.strip_prefix(b"HTTP/1.1 ").or_else(|| bytes.strip_prefix(b"HTTP/1.0 "))?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    (status.is_client_error() || status.is_server_error()).then_some(status)
}

/// A whole HTTP answer with the API's JSON error body, allowing any origin
/// as every answer does; the connection closes after it, as hyper's would.
pub(super) fn json_answer(status: StatusCode) -> Vec<u8> {
    let body = serde_json::json!({ "detail": crate::app::status_detail(status) }).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         access-control-allow-origin: *\r\nconnection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}
