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
//! - With TLS ([`serve_tls`], the relay listener), each connection's
//!   handshake runs in its own task within `header_read_timeout`; a failed
//!   one (no client certificate, one from another CA, not TLS at all) is
//!   logged with the peer's address and counted
//!   (`weir_relay_tls_handshake_failures_total`), and the listener goes on.

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{Router, body::Body};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::metrics::Metrics;

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
    serve_with(listener, app, options, None, shutdown).await
}

/// TLS on a listener, and where its failed handshakes are counted.
#[derive(Clone)]
pub struct Tls {
    /// The server configuration (for the relay listener, one that requires
    /// a client certificate: [`crate::tls::server_config`]).
    pub acceptor: TlsAcceptor,
    /// Counts the failed handshakes.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// [`serve`] over TLS.
///
/// # Errors
/// None today, as [`serve`]; failed handshakes are logged and counted.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    tls: Tls,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with(listener, app, options, Some(tls), shutdown).await
}

async fn serve_with(
    listener: TcpListener,
    app: Router,
    options: ServerOptions,
    tls: Option<Tls>,
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
        let Some(tls) = &tls else {
            let connection =
                graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(finish(connection, peer, slot));
            continue;
        };
        // The handshake runs in the connection's task: a slow or silent
        // client holds its slot only, never the accept loop.
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        let timeout = options.header_read_timeout;
        tokio::spawn(async move {
            let Some(stream) = handshake(&tls, stream, peer, timeout).await else {
                return;
            };
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
            finish(connection, peer, slot).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serve one connection to its end, then give its slot back.
async fn finish<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    peer: std::net::SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    if let Err(error) = connection.await {
        // Timeouts, resets and unparsable heads: the client's doing.
        debug!(%peer, %error, "HTTP connection ended with an error");
    }
    drop(slot);
}

/// The TLS handshake of one connection within `timeout`; `None`, logged
/// and counted, when it fails.
async fn handshake(
    tls: &Tls,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let error = match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err(error)) => error,
        Err(_) => io::Error::new(io::ErrorKind::TimedOut, "no complete handshake in time"),
    };
    let reason = handshake_failure(&error);
    tls.metrics.relay_handshake_failed(reason);
    if reason == "certificate" {
        // A client that is not the relay, or a relay with other
        // certificates: worth an operator's look.
        warn!(%peer, %error, "TLS handshake refused: the client's certificate is missing or not signed by the CA");
    } else {
        debug!(%peer, %error, reason, "TLS handshake failed");
    }
    None
}

/// Why a handshake failed: `certificate` (the client presented none, or
/// one the CA did not sign, or refused ours), `protocol` (not TLS, or no
/// common parameters), `timeout` or `io` (the peer went away).
fn handshake_failure(error: &io::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, Error as Tls};
    if error.kind() == io::ErrorKind::TimedOut {
        return "timeout";
    }
    match error.get_ref().and_then(|e| e.downcast_ref::<Tls>()) {
        Some(
            Tls::NoCertificatesPresented
            | Tls::InvalidCertificate(_)
            | Tls::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::UnsupportedCertificate
                | Alert::CertificateExpired
                | Alert::CertificateRevoked
                | Alert::CertificateRequired,
            ),
        ) => "certificate",
        Some(_) => "protocol",
        None => "io",
    }
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
