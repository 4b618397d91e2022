//! The HTTP face in process: the real router on a loopback port, spoken to in raw HTTP/1.1, so that
//! authentication, Origin and Host checks, health, metrics and a stateless (2026-07-28) tool call
//! are tested without any client library. The third-party clients are tested from `tests/mcp/`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use clap::Parser;
use sandlock_mcp::config::{Config, ConfigFile};
use sandlock_mcp::tools::App;
use sandlock_mcp::{McpArgs, build_app, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-0123456789abcdef";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: McpArgs,
}

/// Starts the server, or returns `None` (after printing why) where no python3 is installed.
async fn start(extra: &[&str]) -> Option<(String, Arc<App>, CancellationToken)> {
    let root = std::env::temp_dir().join(format!(
        "sandlock-mcp-it-{}-{}",
        std::process::id(),
        extra.len()
    ));
    let mut argv = vec![
        "t".to_string(),
        "--workspace-root".into(),
        root.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let args = Cli::parse_from(argv).args;
    let config = Config::merge(&args, ConfigFile::default(), Some(TOKEN.into())).unwrap();
    let app = match build_app(config) {
        Ok(app) => app,
        Err(e) if format!("{e:#}").contains("Python interpreter") => {
            eprintln!("skipped: {e:#}");
            return None;
        }
        Err(e) => panic!("{e:#}"),
    };
    let end = CancellationToken::new();
    let router = http::router(app.clone(), None, end.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Some((addr, app, end))
}

/// Sends one request and returns (status, headers, body).
async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

const MCP_HEADERS: [(&str, &str); 2] = [
    ("Accept", "application/json, text/event-stream"),
    ("Content-Type", "application/json"),
];

fn call_body(tool: &str, args: serde_json::Value) -> String {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {
            "name": tool, "arguments": args,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        }
    })
    .to_string()
}

async fn call(addr: &str, tool: &str, args: serde_json::Value) -> serde_json::Value {
    let auth = format!("Bearer {TOKEN}");
    let mut h = MCP_HEADERS.to_vec();
    h.extend([
        ("Authorization", auth.as_str()),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", tool),
    ]);
    let (status, _, body) = send(addr, "POST", "/mcp", &h, &call_body(tool, args)).await;
    assert_eq!(status, 200, "{body}");
    // The body is either JSON or an SSE stream whose data line holds the response (the body may
    // be chunked, so find the JSON-RPC object by its start).
    let start = body.find("{\"jsonrpc\"").expect("a JSON-RPC response");
    let mut de =
        serde_json::Deserializer::from_str(&body[start..]).into_iter::<serde_json::Value>();
    de.next().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_origin_host_health_and_metrics() {
    let Some((addr, _app, end)) = start(&[]).await else {
        return;
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    let auth = format!("Bearer {TOKEN}");
    let with = |extra: &[(&'static str, &str)]| {
        let mut h: Vec<(&str, String)> = MCP_HEADERS
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        h.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        h
    };
    let go = |h: Vec<(&'static str, String)>| {
        let addr = addr.clone();
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(&addr, "POST", "/mcp", &h, init).await
        }
    };
    let (s, head, _) = go(with(&[])).await;
    assert_eq!(s, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(
        go(with(&[("Authorization", "Bearer wrong-token-0123456789")]))
            .await
            .0,
        401
    );
    assert_eq!(
        go(with(&[
            ("Authorization", &auth),
            ("Origin", "http://evil.example")
        ]))
        .await
        .0,
        403
    );
    // Controls: the right token, with no Origin or a local one.
    assert_eq!(go(with(&[("Authorization", &auth)])).await.0, 200);
    assert_eq!(
        go(with(&[
            ("Authorization", &auth),
            ("Origin", "http://localhost:5173")
        ]))
        .await
        .0,
        200
    );

    assert_eq!(send(&addr, "GET", "/healthz", &[], "").await.0, 200);
    let (s, _, body) = send(&addr, "GET", "/metrics", &[], "").await;
    assert_eq!(s, 200);
    assert!(body.contains("sandlock_mcp_active_sandboxes 0"), "{body}");
    end.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_tool_call_runs_in_a_sandbox_on_the_event_loop() {
    let Some((addr, app, end)) = start(&["--max-concurrent", "4"]).await else {
        return;
    };
    let r = call(
        &addr,
        "execute_shell",
        serde_json::json!({"command": "echo hi; echo err >&2; exit 3"}),
    )
    .await;
    let res = &r["result"];
    assert_eq!(res["isError"], true, "{r}");
    let s = &res["structuredContent"];
    assert_eq!(
        (
            s["stdout"].as_str(),
            s["stderr"].as_str(),
            s["exit_code"].as_i64()
        ),
        (Some("hi\n"), Some("err\n"), Some(3))
    );
    assert_eq!(s["reason"], "exited");
    let ws = s["workspace"].as_str().unwrap().to_string();

    // Several runs at once are all driven by the two runtime threads.
    let runs = (0..4)
        .map(|i| {
            let addr = addr.clone();
            let ws = ws.clone();
            tokio::spawn(async move {
                call(
                    &addr,
                    "execute_shell",
                    serde_json::json!({"command": format!("sleep 0.3; echo {i}"), "workspace": ws}),
                )
                .await
            })
        })
        .collect::<Vec<_>>();
    let t0 = std::time::Instant::now();
    for (i, h) in runs.into_iter().enumerate() {
        let r = h.await.unwrap();
        assert_eq!(
            r["result"]["structuredContent"]["stdout"],
            format!("{i}\n"),
            "{r}"
        );
    }
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(1200),
        "runs were serialised: {:?}",
        t0.elapsed()
    );

    let r = call(
        &addr,
        "read_file",
        serde_json::json!({"path": "../x", "workspace": ws}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true);
    assert_eq!(app.exec.gate.running(), 0);
    end.cancel();
}
