//! Serving the API's HTTP/1 connections with hyper, directly: axum's own `serve`
//! gives hyper no timer, so no header read timeout, and a client that sent its
//! headers a byte at a time (slowloris) held a connection and its task for as long
//! as it liked. Here a request's headers must arrive within the header time.
//!
//! At most [`Limits::connections`] are open at once: beyond, the listener waits
//! (new clients wait in the kernel's backlog) rather than spend the process's open
//! files, which the journal and the calls to the provider need too.
//!
//! On shutdown it stops accepting, asks every connection to close once its request
//! in progress is answered (an idle one closes at once), and waits for them up to
//! [`Limits::linger`]; then whatever is still open is closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The most bytes a request's head may take (hyper's read buffer; its least is 8 KiB).
pub(crate) const MAX_HEADER_BYTES: usize = 64 << 10;

/// What the connections may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// Most connections open at once.
    pub connections: usize,
    /// How long a shutdown waits for connections to close by themselves.
    pub linger: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; see the module docs.
pub(crate) async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    let room = Arc::new(Semaphore::new(limits.connections.max(1)));
    let header_timeout = limits.header_timeout;
    tokio::pin!(shutdown);
    loop {
        let accepted = async {
            let place = room.clone().acquire_owned().await;
            (place, listener.accept().await)
        };
        let (place, io) = tokio::select! {
            (place, (io, _)) = accepted => (place, io),
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut closed = closed.clone();
        connections.spawn(async move {
            let _place = place;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                // hyper's default (~400 KB) let 1,000 strangers sending endless
                // headers hold 400 MB before any check: headers beyond are a 431.
                .max_buf_size(MAX_HEADER_BYTES);
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Every connection is accepted before the word is sent: it hears it.
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Connections that ended are reaped as others come, so the set stays small.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(true);
    let closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.linger, closed).await.is_err() {
        tracing::warn!(
            "connections still open {:?} after shutdown began (a client holding a half-sent request): closed",
            limits.linger
        );
    }
}
