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
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let root = std::env::temp_dir().join(format!(
        "sandlock-mcp-it-{}-{}",
        std::process::id(),
        STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

/// The JSON body of a response, or of the first SSE event in it.
fn json_of(body: &str) -> serde_json::Value {
    let start = body.find('{').expect("a JSON object");
    let mut de =
        serde_json::Deserializer::from_str(&body[start..]).into_iter::<serde_json::Value>();
    de.next().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_other_replicas_and_unknown_sessions_are_refused_in_words() {
    let Some((addr, _app, end)) = start(&["--replica-id", "r-a"]).await else {
        return;
    };
    let auth = format!("Bearer {TOKEN}");
    let post = |sid: Option<String>, body: String, token: bool| {
        let (addr, auth) = (addr.clone(), auth.clone());
        async move {
            let mut h: Vec<(&str, &str)> = MCP_HEADERS.to_vec();
            if token {
                h.push(("Authorization", &auth));
            }
            h.push(("MCP-Protocol-Version", "2025-11-25"));
            if let Some(sid) = &sid {
                h.push(("Mcp-Session-Id", sid));
            }
            send(&addr, "POST", "/mcp", &h, &body).await
        }
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    let (status, head, _) = post(None, init.into(), true).await;
    assert_eq!(status, 200);
    let sid = head
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .expect("a session id")
        .trim()
        .to_string();
    let hex = sid.strip_prefix("r-a.").expect("the replica's prefix");
    assert_eq!(hex.len(), 32, "{sid}");

    let list = |id: u32| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
    // Another replica's session: 404, and the error names the owner and this replica.
    let theirs = format!("r-b.{hex}");
    let (status, head, body) = post(Some(theirs.clone()), list(41), true).await;
    assert_eq!(status, 404, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let e = json_of(&body);
    assert_eq!(e["id"], 41, "{e}");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("session {theirs} belongs to replica \"r-b\""))
            && msg.contains("reached replica \"r-a\"")
            && msg.contains("Start a new session"),
        "{msg}"
    );
    // An unknown session with this replica's prefix: it ended, or the replica restarted.
    let gone = format!("r-a.{}", "0".repeat(32));
    let (status, _, body) = post(Some(gone), list(42), true).await;
    assert_eq!(status, 404, "{body}");
    let msg = json_of(&body)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("is not alive on replica \"r-a\"") && msg.contains("restarted"),
        "{msg}"
    );
    // Without the token, nothing is said about sessions.
    assert_eq!(post(Some(theirs), list(43), false).await.0, 401);

    // Control: the session this replica minted works.
    let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(post(Some(sid.clone()), done.into(), true).await.0, 202);
    let (status, _, body) = post(Some(sid), list(44), true).await;
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["result"]["tools"].is_array(), "{body}");

    let (_, _, metrics) = send(&addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("sandlock_mcp_misrouted_total{id=\"session\"} 1"),
        "{metrics}"
    );
    end.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_handle_of_another_replica_is_refused_naming_its_owner() {
    let Some((addr, _app, end)) = start(&["--replica-id", "r-a"]).await else {
        return;
    };
    let r = call(
        &addr,
        "write_file",
        serde_json::json!({"path": "f", "content": "x"}),
    )
    .await;
    let ws = r["result"]["structuredContent"]["workspace"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = ws.strip_prefix("r-a.ws-").expect("the replica's prefix");
    let theirs = format!("r-b.ws-{hex}");
    let r = call(
        &addr,
        "read_file",
        serde_json::json!({"path": "f", "workspace": theirs}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "workspace \"{theirs}\" belongs to replica \"r-b\""
        )) && text.contains("reached replica \"r-a\""),
        "{text}"
    );
    // Control: the handle this replica minted reaches the file.
    let r = call(
        &addr,
        "read_file",
        serde_json::json!({"path": "f", "workspace": ws}),
    )
    .await;
    assert_eq!(r["result"]["structuredContent"]["content"], "x", "{r}");
    let (_, _, metrics) = send(&addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("sandlock_mcp_misrouted_total{id=\"workspace\"} 1"),
        "{metrics}"
    );
    end.cancel();
}
