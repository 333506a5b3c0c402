//! Event streams that end, and that a client cannot use to take the server's memory.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_resuming_a_finished_runs_stream_at_or_after_done_ends_it() {
    // A browser's EventSource reconnects with the last id it saw, `done`'s: the
    // stream sent keep-alives forever.
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "x", "agents": ["fast"], "merge": "none"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "succeeded").await;
    let all = events(&s.base, &id, None).await;
    let (done, kind, _) = all.last().unwrap().clone();
    assert_eq!(kind, "done");
    let before_done = (done.parse::<i64>().unwrap() - 1).to_string();
    for last in [done.as_str(), "1000000"] {
        let rest = tokio::time::timeout(Duration::from_secs(10), events(&s.base, &id, Some(last)))
            .await
            .unwrap_or_else(|_| panic!("resumed after {last}, the stream never ended"));
        assert!(rest.is_empty(), "{rest:?}");
    }
    let rest = events(&s.base, &id, Some(&before_done)).await;
    let kinds: Vec<&str> = rest.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds, ["done"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_event_streams_past_the_limit_are_refused_and_a_closed_one_frees_its_place() {
    // Streams were unlimited, each holding up to 256 events: 80 clients that never
    // read took the server to 1.8 GB.
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            max_streams: 2,
            ..Options::held()
        },
    )
    .await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "x", "agents": ["slow"], "merge": "none"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    let open = || {
        client()
            .get(format!("{}/v1/runs/{id}/events", s.base))
            .send()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.unwrap();
    assert_eq!(third.status().as_u16(), 503);
    assert!(third.headers().contains_key("retry-after"));
    let text = third.text().await.unwrap();
    assert!(text.contains("event streams are open"), "{text}");
    drop(first);
    // The server notices the closed connection when it next writes to it (a
    // keep-alive at the latest); poll until the place is free.
    let mut status = 503;
    for _ in 0..100 {
        let again = open().await.unwrap();
        status = again.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, 200, "a closed stream's place was not freed");
    drop(second);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_client_sending_its_headers_a_byte_at_a_time_is_cut_off() {
    // Slowloris: with no header read timeout, a client trickling its headers held a
    // connection (and a task) for as long as it liked.
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            header_timeout: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let held = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut socket = std::net::TcpStream::connect(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let started = std::time::Instant::now();
        let _ = socket.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes());
        // One more header line every 100 ms, never the blank line that ends them.
        while started.elapsed() < Duration::from_secs(10) {
            if socket.write_all(b"X-Slow: yes\r\n").is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            match socket.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(
        held < Duration::from_secs(5),
        "the trickling client was held {held:?}"
    );
    // An ordinary request still works.
    assert_eq!(
        client()
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_idle_connections_took_every_open_file_and_were_never_closed() {
    // 20,000 idle connections took the process's open files (the journal and the
    // provider calls need some) and stayed open for good. Now at most
    // `max_connections` are accepted, and an idle one is closed at the header time.
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            header_timeout: Duration::from_millis(500),
            max_connections: 2,
            ..Options::default()
        },
    )
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let healthz = |wait| {
        client()
            .get(format!("{}/healthz", s.base))
            .timeout(wait)
            .send()
    };
    assert!(
        healthz(Duration::from_millis(200)).await.is_err(),
        "a third connection is not accepted while two are open"
    );
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        idle.into_iter()
            .map(|mut socket| {
                socket
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                matches!(socket.read(&mut [0u8; 64]), Ok(0))
            })
            .collect::<Vec<bool>>()
    })
    .await
    .unwrap();
    assert_eq!(
        closed,
        [true, true],
        "idle connections are closed by the server"
    );
    let r = healthz(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "room again once they are closed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_request_head_past_64_kib_is_refused_not_buffered() {
    // hyper's default buffer let each connection send ~400 KB of unfinished headers:
    // 1,000 strangers held 400 MB for the 30 s header time, token or not.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Filler: {}\r\n",
        "a".repeat(100 << 10)
    );
    // The server may close before it has read everything: a failed write is fine.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A normal request still goes.
    let ok = client()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    s.stop().await;
}
