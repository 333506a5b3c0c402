//! The node's own listener: it accepts peers' connections itself, does the TLS
//! handshake (with a time limit), and hands each stream to ractor_cluster's node
//! server as an external transport — so that a stranger who does not know the
//! cookie cannot take the node's memory or hold its door:
//!
//! - until the session is authenticated, a frame may announce at most
//!   [`PRE_AUTH_FRAME`] bytes (ractor_cluster would allocate up to its frame limit,
//!   64 MiB, for each connection that says so);
//! - a connection that has not authenticated within the handshake time is closed;
//! - at most [`HANDSHAKES_PER_ADDRESS`] connections from one address, and
//!   [`HANDSHAKES`] in all, may be in their handshake at once;
//! - a slow TLS client holds only its own connection, not the accept loop.
//!
//! ractor_cluster's node server always starts a listener of its own; that one is
//! bound to a port of 127.0.0.1 and refuses every TLS handshake, so nothing reaches
//! a session through it.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::watch::{Frames, Handshakes};

/// The largest frame a peer may announce before it has authenticated. The
/// handshake's own frames are a few hundred bytes; right after it, a node sends its
/// process groups (a name per specialist), which may be read before the
/// authentication is heard of here, so this leaves room for tens of thousands.
pub const PRE_AUTH_FRAME: u64 = 1024 * 1024;

/// Connections from one address that may be in their handshake at once.
pub const HANDSHAKES_PER_ADDRESS: usize = 8;

/// Connections that may be in their handshake at once, from all addresses.
pub const HANDSHAKES: usize = 64;

/// What the door and its connections share.
pub(crate) struct Watch {
    handshakes: Mutex<Handshakes>,
    /// Connections in their handshake, by peer label (`IP:PORT`).
    pending: Mutex<HashMap<String, Weak<Pass>>>,
    timeout: Duration,
}

impl Watch {
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            handshakes: Mutex::new(Handshakes::new(HANDSHAKES_PER_ADDRESS, HANDSHAKES)),
            pending: Mutex::new(HashMap::new()),
            timeout,
        })
    }

    /// The session of the connection labelled `peer` has authenticated.
    pub(crate) fn authenticated(&self, peer: &str) {
        let pass = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(peer))
            .and_then(|w| w.upgrade());
        if let Some(pass) = pass {
            pass.admit();
        }
    }

    fn end_handshake(&self, ip: IpAddr, label: &str) {
        if let Ok(mut h) = self.handshakes.lock() {
            h.end(ip);
        }
        if let Ok(mut p) = self.pending.lock() {
            p.remove(label);
        }
    }
}

/// One connection's standing: in its handshake until the session authenticates.
pub(crate) struct Pass {
    watch: Arc<Watch>,
    ip: IpAddr,
    label: String,
    admitted: AtomicBool,
}

impl Pass {
    fn admit(&self) {
        if !self.admitted.swap(true, Ordering::AcqRel) {
            self.watch.end_handshake(self.ip, &self.label);
        }
    }

    fn admitted(&self) -> bool {
        self.admitted.load(Ordering::Acquire)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if !self.admitted.swap(true, Ordering::AcqRel) {
            self.watch.end_handshake(self.ip, &self.label);
        }
    }
}

/// The read side of a peer's stream, watched until the session authenticates.
struct Guarded<R> {
    inner: R,
    pass: Arc<Pass>,
    frames: Frames,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Guarded<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let watching = !this.pass.admitted();
        if watching && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no cluster handshake in time",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if watching => {
                let read = &buf.filled()[before..];
                match this.frames.read(read, PRE_AUTH_FRAME) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(length) => {
                        tracing::warn!(peer = %this.pass.label, length, "a frame too large before the handshake; closing");
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("a {length}-byte frame before the cluster handshake"),
                        )))
                    }
                }
            }
            other => other,
        }
    }
}

/// A peer's stream, for ractor_cluster.
struct Peer<S> {
    stream: S,
    pass: Arc<Pass>,
    local: String,
}

impl<S: AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> ClusterBidiStream for Peer<S> {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(self.stream);
        let deadline = Box::pin(tokio::time::sleep(self.pass.watch.timeout));
        let read = Guarded {
            inner: read,
            pass: self.pass,
            frames: Frames::default(),
            deadline,
        };
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.pass.label.clone())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.clone())
    }
}

/// Accepts peers on `listener` until aborted, handing each to `server`.
pub(crate) async fn open(
    listener: TcpListener,
    server: ActorRef<NodeServerMessage>,
    tls: Option<TlsAcceptor>,
    watch: Arc<Watch>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::warn!(error = %e, "the cluster listener could not accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let room = watch
            .handshakes
            .lock()
            .map(|mut h| h.begin(peer.ip()))
            .unwrap_or(false);
        if !room {
            tracing::warn!(%peer, "too many cluster connections in their handshake; closing");
            continue;
        }
        let pass = Arc::new(Pass {
            watch: watch.clone(),
            ip: peer.ip(),
            label: peer.to_string(),
            admitted: AtomicBool::new(false),
        });
        if let Ok(mut p) = watch.pending.lock() {
            p.insert(pass.label.clone(), Arc::downgrade(&pass));
        }
        tokio::spawn(welcome(stream, peer, pass, server.clone(), tls.clone()));
    }
}

/// One peer: its TLS handshake (within the handshake time), then to the server.
async fn welcome(
    stream: TcpStream,
    peer: SocketAddr,
    pass: Arc<Pass>,
    server: ActorRef<NodeServerMessage>,
    tls: Option<TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let stream: Box<dyn ClusterBidiStream> = match tls {
        None => Box::new(Peer {
            stream,
            pass,
            local,
        }),
        Some(acceptor) => {
            let timeout = pass.watch.timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => Box::new(Peer {
                    stream,
                    pass,
                    local,
                }),
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "a cluster TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "no TLS handshake in time; closing");
                    return;
                }
            }
        }
    };
    let _ = server.cast(NodeServerMessage::ConnectionOpenedExternal {
        stream,
        is_server: true,
    });
}

/// A TLS acceptor that refuses every handshake (it has no certificate to show):
/// the one given to ractor_cluster's own listener, which nothing should use.
pub(crate) fn refuse_all() -> Result<TlsAcceptor, crate::ClusterError> {
    #[derive(Debug)]
    struct NoCertificate;
    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::ClusterError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    Ok(TlsAcceptor::from(Arc::new(config)))
}
