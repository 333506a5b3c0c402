//! The admission gate's learned limits survive a restart: kept in the journal at
//! shutdown, and a server started on the same journal starts its gate from them.

use std::net::SocketAddr;
use std::sync::Arc;

use fanfare::provider::{AdmissionConfig, Gate, Learned, SimConfig, SimProvider, Stack};
use fanfare::Fanfare;
use fanfare_serve::{Catalog, ServeConfig, Server};
use tokio::sync::oneshot;

const ENDPOINT: &str = "https://api.example.com key:0123456789abcdef";

/// A server on `db` whose provider has an admission gate; returns the gate and a
/// way to stop the server (which returns once it has stopped).
async fn serve(db: &std::path::Path) -> (Arc<Gate>, impl FnOnce() -> tokio::task::JoinHandle<()>) {
    let (provider, gate) = Stack::new()
        .admission(AdmissionConfig::default())
        .build(SimProvider::new(SimConfig::default()));
    let gate = gate.unwrap();
    let fanfare = Fanfare::builder(provider).start().await.unwrap();
    let mut config = ServeConfig::new(db);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.gate = Some(gate.clone());
    config.endpoint = Some(ENDPOINT.to_owned());
    let server = Server::start(fanfare, Catalog::default(), config)
        .await
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (gate, move || {
        let _ = stop.send(());
        task
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_starts_its_gate_from_the_limits_it_learned_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let (gate, stop) = serve(&db).await;
    let fresh = gate.metrics().cap;
    assert_eq!(fresh, 0, "no lane before the first call");
    // What a wave of 429s would have taught it.
    let learned = Learned {
        cap: 7,
        refused_at: 8,
    };
    gate.remember(None, learned);
    stop().await.unwrap();
    let (gate, stop) = serve(&db).await;
    assert_eq!(
        gate.learned().iter().map(|(_, l)| *l).collect::<Vec<_>>(),
        [learned]
    );
    assert_eq!(gate.metrics().cap, 7);
    stop().await.unwrap();
    // Another endpoint (another key) learns on its own.
    let journal = fanfare_serve::Journal::open(&db).unwrap();
    let other = journal
        .learned_limits(
            "https://api.example.com key:ffff".into(),
            std::time::SystemTime::now(),
        )
        .await
        .unwrap();
    assert!(other.is_empty(), "{other:?}");
}
