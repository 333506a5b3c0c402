use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::http_get::allowed;
use super::*;
use crate::agent::tools::{Tool, ToolContext};
use crate::agent::{BranchId, RunId};

fn ctx() -> ToolContext {
    ToolContext::new(
        BranchId {
            run: RunId(1),
            index: 0,
            item: None,
        },
        "reader",
        "c1",
    )
}

async fn ask(tool: &dyn Tool, input: serde_json::Value) -> Result<String, String> {
    tool.call(ctx(), input).await.map_err(|e| e.0)
}

/// A root with `notes.txt`, `sub/deep.md` and, beside the root, `secret.txt`.
fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("notes.txt"), "hello notes").unwrap();
    std::fs::write(root.join("sub/deep.md"), "# deep").unwrap();
    std::fs::write(outer.path().join("secret.txt"), "the secret").unwrap();
    (outer, root)
}

#[tokio::test]
async fn read_file_reads_a_file_and_lists_a_directory_under_its_root() {
    let (_keep, root) = tree();
    let tool = read_file(&root).unwrap();
    assert_eq!(
        ask(&tool, serde_json::json!({"path": "notes.txt"})).await,
        Ok("hello notes".into())
    );
    assert_eq!(
        ask(&tool, serde_json::json!({"path": "./sub/deep.md"})).await,
        Ok("# deep".into())
    );
    assert_eq!(
        ask(&tool, serde_json::json!({"path": "."})).await,
        Ok("notes.txt\nsub/".into())
    );
}

#[tokio::test]
async fn read_file_refuses_paths_out_of_its_root() {
    let (outer, root) = tree();
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outer.path(), root.join("up")).unwrap();
    // A hard link read the file outside through the root (probe 9).
    std::fs::hard_link(outer.path().join("secret.txt"), root.join("hard.txt")).unwrap();
    let tool = read_file(&root).unwrap();
    for (path, says) in [
        ("hard.txt", "more than one name"),
        ("../secret.txt", "`..` is not allowed"),
        ("sub/../../secret.txt", "`..` is not allowed"),
        ("/etc/passwd", "is absolute"),
        ("link.txt", "leads out of the root"),
        ("up/secret.txt", "leads out of the root"),
        ("missing.txt", "no such file"),
    ] {
        let answer = ask(&tool, serde_json::json!({ "path": path })).await;
        let err = answer.expect_err(path);
        assert!(err.contains(says), "{path}: {err}");
        assert!(!err.contains("the secret"), "{path}: {err}");
    }
}

#[tokio::test]
async fn read_file_refuses_a_fifo_without_blocking_and_binary_files() {
    let (_keep, root) = tree();
    let fifo = root.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    std::fs::write(root.join("blob.bin"), [0u8, 1, 2, 3]).unwrap();
    let tool = read_file(&root).unwrap();
    if made.is_ok_and(|s| s.success()) {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            ask(&tool, serde_json::json!({"path": "pipe"})),
        )
        .await
        .expect("a FIFO blocked the reader");
        assert!(answer.unwrap_err().contains("not a regular file"));
    }
    let answer = ask(&tool, serde_json::json!({"path": "blob.bin"})).await;
    assert!(answer.unwrap_err().contains("binary"));
}

#[tokio::test]
async fn read_file_pages_a_long_file_by_offset() {
    let (_keep, root) = tree();
    let long = "abcdefghij".repeat(10_000); // 100,000 bytes
    std::fs::write(root.join("long.txt"), &long).unwrap();
    let tool = read_file(&root).unwrap();
    let first = ask(&tool, serde_json::json!({"path": "long.txt"}))
        .await
        .unwrap();
    assert!(
        first.starts_with("[`long.txt`: bytes 0–49152 of 100000; ask again with offset 49152"),
        "{}",
        &first[..120]
    );
    let mut read = first.split_once('\n').unwrap().1.to_owned();
    let mut offset = 49_152;
    while offset < 100_000 {
        let page = ask(
            &tool,
            serde_json::json!({"path": "long.txt", "offset": offset}),
        )
        .await
        .unwrap();
        let body = page.split_once('\n').unwrap().1;
        offset += body.len();
        read.push_str(body);
    }
    assert_eq!(read, long);
    let past = ask(
        &tool,
        serde_json::json!({"path": "long.txt", "offset": 200_000}),
    )
    .await;
    assert!(past.unwrap_err().contains("past its end"));
}

#[test]
fn read_file_needs_a_directory_for_root() {
    let (outer, root) = tree();
    assert!(matches!(
        read_file(root.join("notes.txt")),
        Err(BuiltinError::BadRoot { .. })
    ));
    assert!(read_file(outer.path().join("absent")).is_err());
}

#[test]
fn http_get_allow_list_entries_parse_or_are_named() {
    assert_eq!(allowed("Example.com").unwrap(), "example.com");
    assert_eq!(allowed("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
    assert_eq!(allowed("*.example.com").unwrap(), "*.example.com");
    assert_eq!(allowed("[::1]:80").unwrap(), "[::1]:80");
    for bad in [
        "",
        "http://x/y",
        "a b",
        "*.",
        "host/path",
        "user@host",
        "*.1",
        "*.0.0.1",
    ] {
        assert!(
            matches!(allowed(bad), Err(BuiltinError::BadHost(_))),
            "{bad:?} parsed"
        );
    }
    assert!(matches!(
        http_get(Vec::<String>::new()),
        Err(BuiltinError::NoHosts)
    ));
}

/// A server on 127.0.0.1 answering each connection with `respond(path)`.
async fn server(respond: fn(&str, u16) -> String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let _ = sock.write_all(respond(&path, port).as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

fn answer(path: &str, port: u16) -> String {
    let (status, extra, body) = match path {
        "/hello" => ("200 OK", String::new(), "hi there".to_owned()),
        "/here" => (
            "302 Found",
            format!("Location: http://127.0.0.1:{port}/hello\r\n"),
            String::new(),
        ),
        "/away" => (
            "302 Found",
            "Location: http://127.0.0.2:1/elsewhere\r\n".to_owned(),
            String::new(),
        ),
        "/big" => ("200 OK", String::new(), "x".repeat(300_000)),
        "/missing" => ("404 Not Found", String::new(), "nothing here".to_owned()),
        _ => ("500 Oops", String::new(), String::new()),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn http_get_fetches_from_allowed_hosts_only_and_follows_redirects_within_the_origin() {
    let port = server(answer).await;
    // A host alone is the web's ports only: not this one.
    let bare = http_get(["127.0.0.1"]).unwrap();
    let refused = ask(
        &bare,
        serde_json::json!({ "url": format!("http://127.0.0.1:{port}/hello") }),
    )
    .await
    .unwrap_err();
    assert!(
        refused.contains(&format!(
            "`127.0.0.1:{port}` is not a host and port this tool may fetch"
        )),
        "{refused}"
    );
    let tool = http_get([format!("127.0.0.1:{port}")]).unwrap();
    let url = |p: &str| serde_json::json!({ "url": format!("http://127.0.0.1:{port}{p}") });
    let ok = ask(&tool, url("/hello")).await.unwrap();
    assert!(
        ok.starts_with("HTTP 200 OK · text/plain") && ok.ends_with("hi there"),
        "{ok}"
    );
    let followed = ask(&tool, url("/here")).await.unwrap();
    assert!(followed.ends_with("hi there"), "{followed}");
    let away = ask(&tool, url("/away")).await.unwrap_err();
    assert!(
        away.contains("another origin") && away.contains("127.0.0.2"),
        "{away}"
    );
    let missing = ask(&tool, url("/missing")).await.unwrap_err();
    assert!(
        missing.contains("404") && missing.contains("nothing here"),
        "{missing}"
    );
    let big = ask(&tool, url("/big")).await.unwrap();
    assert!(big.contains("cut at 262144 bytes"), "{}", &big[..80]);
    assert!(big.len() < 262_144 + 100);
    for (refused, says) in [
        (
            format!("http://localhost:{port}/hello"),
            "not a host and port this tool may fetch",
        ),
        ("ftp://127.0.0.1/x".to_owned(), "only http and https"),
        (format!("http://u:p@127.0.0.1:{port}/hello"), "credentials"),
        ("not a url".to_owned(), "is not a URL"),
    ] {
        let err = ask(&tool, serde_json::json!({ "url": refused }))
            .await
            .unwrap_err();
        assert!(err.contains(says), "{refused}: {err}");
    }
}

#[tokio::test]
async fn http_get_is_cut_at_its_time_cap() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        // Accepts and never answers.
        let (_sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let tool = http_get([format!("127.0.0.1:{port}")])
        .unwrap()
        .timeout(Duration::from_millis(200));
    let err = ask(
        &tool,
        serde_json::json!({ "url": format!("http://127.0.0.1:{port}/") }),
    )
    .await
    .unwrap_err();
    assert!(err.contains("no whole answer within 200 ms"), "{err}");
    held.abort();
}
