//! Serving the router over TCP with bounded connections.
//!
//! - At most `max_connections` connections are open at once: the accept
//!   loop takes a slot before it accepts, so beyond the limit new
//!   connections wait in the kernel's listen backlog (no file descriptor,
//!   no memory of ours) until one closes.
//! - A request's head (request line and headers) must arrive within
//!   `header_read_timeout` of the connection being ready for it (its
//!   opening, or the end of the previous response), else the connection is
//!   closed: a client that sends half a request head, or holds an idle
//!   keep-alive connection, gives its slot back. Request bodies have their
//!   own deadline ([`super::limits`]); responses (`follow=true` flows,
//!   `/api/events`) are never cut.
//! - A request head larger than [`MAX_HEAD_BYTES`] or with more than
//!   [`MAX_HEAD_FIELDS`] fields is refused by the HTTP parser itself (431,
//!   no body); [`super::limits`] refuses smaller heads above its own
//!   limits with a JSON error first.
//! - At shutdown, the listener closes, idle connections close, and the
//!   answers in progress end before [`serve`] returns.

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{Router, body::Body};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// The largest request head the parser reads (a backstop above
/// [`super::limits::MAX_URI_BYTES`] and [`super::limits::MAX_HEADER_BYTES`]).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The most header fields the parser reads (a backstop above
/// [`super::limits::MAX_HEADERS`]).
pub const MAX_HEAD_FIELDS: usize = 256;

/// Connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time a connection has to send a complete request head.
    pub header_read_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// `--max-connections`: above what one browser opens (256 sockets in all,
/// 6 per host name) and what a node's scrapers and CLIs need; below the
/// usual soft limit of 1024 open files, with room for the agent's own
/// (maps, sockets, the pod source's connections).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How often a full connection table is reported at most.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// `--header-read-timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` until `shutdown` completes, then wait for the
/// answers in progress.
///
/// # Errors
/// None today: accept errors are logged and retried (a full file table
/// must not stop the API for good).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEAD_FIELDS);
    let mut shutdown = std::pin::pin!(shutdown);
    // When the limit was last reported (at most once a minute).
    let mut warned_full: Option<std::time::Instant> = None;
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned_full.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
                    warn!(
                        max_connections = options.max_connections,
                        "HTTP connection limit reached: new connections wait until one closes (--max-connections)"
                    );
                    warned_full = Some(std::time::Instant::now());
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_error(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|request: hyper::Request<Incoming>| request.map(Body::new)),
        );
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts, resets and unparsable heads: the client's doing.
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Per-connection errors (the peer went away before it was accepted) are
/// retried at once; resource errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) after
/// a pause, so that the loop does not spin while they last.
async fn accept_error(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        debug!(%error, "accept failed");
        return;
    }
    warn!(%error, "cannot accept HTTP connections; retrying");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
