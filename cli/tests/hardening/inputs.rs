//! What the CLI reads, bounded: its inputs, and a server's answers and streams.

use super::*;

#[test]
fn regression_inputs_too_large_for_a_task_or_not_files_are_refused_before_they_are_read() {
    // The sixth probe: a 1.5 GB file took `submit` to 19.8 GB, `batch` to 10.7 GB and
    // `--each` to 4.6 GB; `workflows show` read a 1.5 GB file; `--out /dev/full` was
    // read without end.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, "a document").unwrap();
    let refused = |args: &[&str], what: &str| {
        let out = fanfare().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(what), "{args:?}: {err}");
    };
    let big = big.to_str().unwrap();
    refused(
        &["submit", "--server", "http://127.0.0.1:9", "--file", big],
        "more than",
    );
    refused(
        &[
            "run",
            "--workflow",
            "summarise",
            "--each",
            big,
            "--dry-run",
            "x",
        ],
        "more than",
    );
    let workflow = dir.path().join("huge.toml");
    std::fs::File::create(&workflow)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    refused(
        &["workflows", "show", workflow.to_str().unwrap()],
        "more than",
    );
    refused(
        &["batch", small.to_str().unwrap(), "--out", "/dev/full"],
        "not a regular file",
    );
    // A batch document too large fails alone; the others run.
    let out = fanfare()
        .args([
            "batch",
            big,
            small.to_str().unwrap(),
            "--merge",
            "code",
            "--out",
        ])
        .arg(dir.path().join("out.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 ok, 1 failed"), "{}", stderr(&out));
}

#[test]
fn regression_watch_of_a_server_that_is_not_fanfare_says_so_instead_of_asking_again_forever() {
    // The sixth probe: a 200 `text/html` answer to the event stream was asked for
    // again twice a second, silently, without end.
    let base = answering(|_| ("text/html", "hello"));
    let started = Instant::now();
    let out = fanfare()
        .args(["watch", "run-1", "--server", &base])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`text/html`, not an event stream"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn regression_watch_gives_up_on_a_server_that_keeps_closing_the_stream() {
    // The seventh probe: a server that answered the event stream with headers and
    // then closed it was reconnected to twice a second without end.
    let base = answering(|asked| {
        if asked.starts_with("GET /v1/runs/run-1/events") {
            ("text/event-stream", "")
        } else {
            ("application/json", r#"{"id":"run-1","status":"running"}"#)
        }
    });
    let out = fanfare()
        .args(["watch", "run-1", "--server", &base])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("20 times in a row without sending anything new"),
        "{}",
        stderr(&out)
    );
}

/// A plain HTTP server on 127.0.0.1 answering each request with what `answer`
/// gives for its text (a content type and a body), then closing; its base URL.
fn answering(answer: impl Fn(&str) -> (&'static str, &'static str) + Send + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for mut socket in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = socket.read(&mut buf).unwrap_or(0);
            let (kind, body) = answer(&String::from_utf8_lossy(&buf[..n]));
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes());
        }
    });
    base
}
