//! The node: names and the cookie, and its door against strangers — each of those
//! cases is what a probe did to the orchestrator's cluster port before it had one
//! (10 unauthenticated connections announcing 64 MiB frames took it to 930 MB; an
//! idle connection was held forever).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;

async fn node(handshake_timeout: Duration) -> Node {
    start(&NodeConfig {
        name: "door-test".into(),
        listen: ([127, 0, 0, 1], 0).into(),
        cookie: "the-cookie".into(),
        tls: None,
        handshake_timeout,
    })
    .await
    .unwrap()
}

/// Reads until the node closes the connection; how long that took (`None`: still
/// open after `within`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within.saturating_sub(t0.elapsed()), stream.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_stranger_announcing_a_huge_frame_is_closed_before_it_is_read() {
    let node = node(HANDSHAKE_TIMEOUT).await;
    let mut stranger = TcpStream::connect(node.addr).await.unwrap();
    stranger
        .write_all(&(64u64 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    assert!(
        closed_within(&mut stranger, Duration::from_secs(5))
            .await
            .is_some(),
        "a 64 MiB frame announced before the handshake was waited for"
    );
    node.door.abort();
    node.server.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_an_idle_stranger_is_closed_at_the_handshake_timeout() {
    let node = node(Duration::from_millis(300)).await;
    let mut idle = TcpStream::connect(node.addr).await.unwrap();
    let after = closed_within(&mut idle, Duration::from_secs(10)).await;
    assert!(
        after.is_some_and(|d| d >= Duration::from_millis(250)),
        "an idle connection was held: {after:?}"
    );
    node.door.abort();
    node.server.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_one_address_may_hold_only_a_few_handshakes_open() {
    let node = node(HANDSHAKE_TIMEOUT).await;
    let mut open = Vec::new();
    for _ in 0..door::HANDSHAKES_PER_ADDRESS {
        open.push(TcpStream::connect(node.addr).await.unwrap());
    }
    // Let the door count them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut one_more = TcpStream::connect(node.addr).await.unwrap();
    assert!(
        closed_within(&mut one_more, Duration::from_secs(5))
            .await
            .is_some(),
        "a connection past the per-address cap was kept"
    );
    for s in &mut open {
        assert!(
            closed_within(s, Duration::from_millis(50)).await.is_none(),
            "one within the cap was closed"
        );
    }
    // When they go, there is room again.
    drop(open);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(node.addr).await.unwrap();
    assert!(closed_within(&mut again, Duration::from_millis(300))
        .await
        .is_none());
    node.door.abort();
    node.server.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_knows_the_cookie_comes_in_through_the_door() {
    let mut server = node(Duration::from_millis(500)).await;
    let client = start(&NodeConfig {
        name: "door-client".into(),
        listen: ([127, 0, 0, 1], 0).into(),
        cookie: "the-cookie".into(),
        tls: None,
        handshake_timeout: HANDSHAKE_TIMEOUT,
    })
    .await
    .unwrap();
    connect(&client.server, &server.addr.to_string(), None)
        .await
        .unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = server.events.recv().await {
            if let NodeEvent::Ready { name, .. } = event {
                return name;
            }
        }
        String::new()
    })
    .await
    .unwrap();
    assert_eq!(ready, "door-client");
    // Past the handshake timeout the authenticated session stays.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        server.events.try_recv().is_err(),
        "the session ended after the handshake timeout"
    );
    for n in [server, client] {
        n.door.abort();
        n.server.stop(None);
    }
}

#[test]
fn node_names_the_cluster_cannot_use_are_refused() {
    for good in ["w1", "worker-7", "eu_west.3"] {
        assert!(check_name(good).is_ok(), "{good}");
    }
    for bad in ["", "a@b", "two words", "é", &"x".repeat(65)] {
        assert!(
            matches!(check_name(bad), Err(ClusterError::BadName(_))),
            "{bad}"
        );
    }
}

#[test]
fn the_cookie_is_never_in_debug_output() {
    let config = NodeConfig {
        name: "w1".into(),
        listen: ([127, 0, 0, 1], 0).into(),
        cookie: "s3cret-cookie".into(),
        tls: None,
        handshake_timeout: HANDSHAKE_TIMEOUT,
    };
    assert!(!format!("{config:?}").contains("s3cret"));
}
