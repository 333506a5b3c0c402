//! Serving the API's HTTP/1 connections with hyper, directly: axum's own `serve`
//! gives hyper no timer, so no header read timeout, and a client that sent its
//! headers a byte at a time (slowloris) held a connection and its task for as long
//! as it liked. Here a request's headers must arrive within the header time.
//!
//! On shutdown it stops accepting, asks every connection to close once its request
//! in progress is answered (an idle one closes at once), and waits for them.

use std::future::Future;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Serves `router` on `listener` until `shutdown` resolves; see the module docs.
pub(crate) async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let io = tokio::select! {
            (io, _) = listener.accept() => io,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut closed = closed.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
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
    while connections.join_next().await.is_some() {}
}
