use super::*;

#[test]
fn a_server_is_a_name_and_a_command_line_or_a_url() {
    let cases: &[(&str, Result<McpServer, McpConfigError>)] = &[
        (
            "fs=npx -y @modelcontextprotocol/server-filesystem /tmp/docs",
            McpServer::stdio(
                "fs",
                "npx",
                ["-y", "@modelcontextprotocol/server-filesystem", "/tmp/docs"],
            ),
        ),
        (
            "fs = node 'my server.js' \"a b\"",
            McpServer::stdio("fs", "node", ["my server.js", "a b"]),
        ),
        (
            "web=http://127.0.0.1:3001/mcp",
            McpServer::http("web", "http://127.0.0.1:3001/mcp"),
        ),
        (
            "gh=GITHUB_TOKEN=abc X_1='a b' npx server",
            McpServer::stdio("gh", "npx", ["server"])
                .map(|s| s.env("GITHUB_TOKEN", "abc").env("X_1", "a b")),
        ),
        ("x=A=1", Err(McpConfigError::Empty("x".into()))),
        (
            "npx server",
            Err(McpConfigError::NoName("npx server".into())),
        ),
        ("fs=", Err(McpConfigError::Empty("fs".into()))),
        ("fs=''", Err(McpConfigError::Empty("fs".into()))),
        ("my fs=x", Err(McpConfigError::BadName("my fs".into()))),
        ("a__b=x", Err(McpConfigError::BadName("a__b".into()))),
        ("=x", Err(McpConfigError::BadName("".into()))),
    ];
    for (text, want) in cases {
        assert_eq!(&McpServer::parse(text), want, "{text}");
    }
    let unbalanced = McpServer::parse("fs=node 'x").unwrap_err();
    assert!(
        matches!(&unbalanced, McpConfigError::BadCommand { name, .. } if name == "fs"),
        "{unbalanced}"
    );
}

#[test]
fn a_server_prints_as_it_is_parsed() {
    for text in ["fs=node 'my server.js' x", "web=https://example.com/mcp"] {
        let server = McpServer::parse(text).unwrap();
        assert_eq!(McpServer::parse(&server.to_string()).unwrap(), server);
    }
}

#[test]
fn what_a_server_sees_of_this_processs_environment_is_what_programs_need() {
    for key in [
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "XDG_CACHE_HOME",
        "npm_config_cache",
    ] {
        assert!(inherited(key), "{key}");
    }
    for key in [
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "FANFARE_TOKEN",
    ] {
        assert!(!inherited(key), "{key}");
    }
    // Assigned values are not printed.
    let server = McpServer::parse("gh=TOKEN=secret-1 npx s").unwrap();
    assert_eq!(server.to_string(), "gh=TOKEN=… npx s");
}

#[test]
fn a_result_is_its_text_blocks_and_an_error_result_is_a_tool_error() {
    use rmcp::model::{CallToolResult, ContentBlock};
    let ok = CallToolResult::success(vec![
        ContentBlock::text("first"),
        ContentBlock::text("second"),
    ]);
    assert_eq!(link::answer_for_tests(ok).unwrap(), "first\nsecond");
    let failed = CallToolResult::error(vec![ContentBlock::text("no such file")]);
    assert_eq!(
        link::answer_for_tests(failed).unwrap_err().0,
        "no such file"
    );
}

#[test]
fn an_http_servers_url_is_shown_without_its_credentials_or_query_values() {
    let url = "http://user:hunter2@127.0.0.1:9/mcp?token=s3cret&team=a";
    assert_eq!(shown_url(url), "http://127.0.0.1:9/mcp?token=…&team=…");
    let server = McpServer::parse(&format!("web={url}")).unwrap();
    assert!(!server.to_string().contains("s3cret"), "{server}");
    let error = format!("error sending request for url ({url}): refused");
    let scrubbed = scrub_url(&error, url);
    assert!(
        !scrubbed.contains("s3cret") && !scrubbed.contains("hunter2"),
        "{scrubbed}"
    );
}

fn listed_tool(name: &str) -> rmcp::model::Tool {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "description": "d".repeat(10_000),
        "inputSchema": {"type": "object"},
    }))
    .unwrap()
}

#[test]
fn regression_two_tool_names_the_wires_make_one_are_told_apart_and_a_long_list_is_cut() {
    use crate::agent::tools::ToolSource as _;
    let link = Link::listing(
        "h",
        vec![listed_tool("a.b"), listed_tool("a_b"), listed_tool("a/b")],
    );
    let names: Vec<String> = link
        .tools()
        .iter()
        .map(|(_, t)| t.name().to_owned())
        .collect();
    assert_eq!(names, ["h__a_b", "h__a_b_2", "h__a_b_3"]);
    assert!(link.tools()[0].1.description().len() <= 4096);

    let many = (0..1000).map(|i| listed_tool(&format!("t{i}"))).collect();
    let link = Link::listing("h", many);
    assert_eq!(link.tools().len(), link::MAX_TOOLS);
}
