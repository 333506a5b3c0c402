//! The node: names and the cookie, and its door against strangers — each of those
//! cases is what a probe did to the orchestrator's cluster port before it had one
//! (10 unauthenticated connections announcing 64 MiB frames took it to 930 MB; an
//! idle connection was held forever).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;

async fn node(handshake_timeout: Duration) -> Node {
    start(
        &NodeConfig {
            name: "door-test".into(),
            listen: ([127, 0, 0, 1], 0).into(),
            cookie: "the-cookie".into(),
            tls: None,
            handshake_timeout,
        },
        None,
    )
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
    let client = start(
        &NodeConfig {
            name: "door-client".into(),
            listen: ([127, 0, 0, 1], 0).into(),
            cookie: "the-cookie".into(),
            tls: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        },
        None,
    )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_second_node_of_a_joined_name_is_refused_before_it_is_ready() {
    // A second worker started with an existing --name knocked the first off the
    // cluster (ractor_cluster's rule for a duplicate name picked one at random).
    let taken = Arc::new(std::sync::Mutex::new(vec!["w1".to_owned()]));
    let names = taken.clone();
    let screen: Screen =
        Arc::new(move |name: &str| !names.lock().unwrap().iter().any(|n| n == name));
    let mut orchestrator = start(
        &NodeConfig {
            name: "orchestrator".into(),
            listen: ([127, 0, 0, 1], 0).into(),
            cookie: "the-cookie".into(),
            tls: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        },
        Some(screen),
    )
    .await
    .unwrap();
    let peer = |name: &str| NodeConfig {
        name: name.into(),
        listen: ([127, 0, 0, 1], 0).into(),
        cookie: "the-cookie".into(),
        tls: None,
        handshake_timeout: HANDSHAKE_TIMEOUT,
    };
    let mut newcomer = start(&peer("w1"), None).await.unwrap();
    connect(&newcomer.server, &orchestrator.addr.to_string(), None)
        .await
        .unwrap();
    // The newcomer's session ends, and the orchestrator never has it ready. (The
    // newcomer's own side may finish its handshake a moment before the
    // orchestrator's screen closes the session: under load it did, once.)
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match newcomer.events.recv().await {
                Some(NodeEvent::Gone { .. }) | None => return,
                Some(NodeEvent::Ready { .. } | NodeEvent::Opened { .. }) => {}
            }
        }
    })
    .await
    .expect("the newcomer of a taken name was let stay");
    while let Ok(event) = orchestrator.events.try_recv() {
        assert!(!matches!(event, NodeEvent::Ready { .. }), "{event:?}");
    }
    // Another name comes in.
    let other = start(&peer("w2"), None).await.unwrap();
    connect(&other.server, &orchestrator.addr.to_string(), None)
        .await
        .unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(NodeEvent::Ready { name, .. }) = orchestrator.events.recv().await {
                return name;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ready, "w2");
    for n in [orchestrator, newcomer, other] {
        n.door.abort();
        n.server.stop(None);
    }
}

#[test]
fn a_wire_name_carries_the_cluster_name_and_a_nonce() {
    let wire = wire_name("w1");
    assert!(wire.starts_with("w1~"), "{wire}");
    assert_eq!(cluster_name(&format!("{wire}@127.0.0.1")), "w1");
    assert_eq!(cluster_name("old-style@host"), "old-style");
}

#[test]
fn regression_a_cookie_file_too_short_to_keep_strangers_out_is_refused() {
    // A one-byte cookie was accepted on 0.0.0.0.
    let file = std::env::temp_dir().join(format!("fanfare-cookie-{}", std::process::id()));
    for (text, ok) in [
        ("x\n", false),
        ("fifteen chars!!", false),
        ("sixteen chars!!!\n", true),
    ] {
        std::fs::write(&file, text).unwrap();
        match read_cookie(&file) {
            Ok(c) => assert!(ok && c == text.trim(), "{text:?}"),
            Err(e) => {
                assert!(!ok, "{text:?}: {e}");
                assert!(e.to_string().contains("at least 16"), "{e}");
            }
        }
    }
    let _ = std::fs::remove_file(&file);
}
