//! One turn with N tool calls of D ms each, through the whole server (HTTP → session actor →
//! mock provider → demo MCP server → provider again), with the calls run in parallel and with
//! `max_concurrency = 1`. Reports wall time / D and the sequential/parallel ratio.
//!
//! Run: `cargo bench --bench tools` (add `-- --quick` for one repetition).

use std::time::{Duration, Instant};

use actors::mcp::McpServerConfig;
use aichat::config::Config;
use serde_json::json;

const D_MS: u64 = 200;
const SIZES: [usize; 4] = [1, 3, 8, 32];

struct Server {
    base: String,
    handle: actix_web::dev::ServerHandle,
    _dir: tempfile::TempDir,
}

#[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
async fn start(max_concurrency: usize) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::default();
    config.server.port = 0;
    config.database.url = format!("sqlite:{}", dir.path().join("bench.db").display());
    let mut demo = McpServerConfig::stdio("demo", env!("CARGO_BIN_EXE_aichat"), &["mcp-demo"]);
    demo.max_concurrency = max_concurrency;
    config.mcp.servers = vec![demo];
    // Measure the tool path, not approvals or per-user limits.
    config.approval.default = actors::approval::Policy::Allow;
    config.limits.max_concurrent_turns_per_user = 0;
    config.limits.turns_per_minute_per_user = 0;
    config.finish(&|_| None).expect("config");
    let running = aichat::server::start(&config, false).expect("server");
    let base = format!("http://{}/v1/chat", running.addr);
    actix_web::rt::spawn(running.server);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .get(format!("{base}/mcp/servers"))
            .header("X-User-ID", "1")
            .send()
            .await;
        if let Ok(resp) = status
            && let Ok(body) = resp.json::<serde_json::Value>().await
            && body["servers"][0]["state"] == "ready"
        {
            break;
        }
        assert!(Instant::now() < deadline, "the demo MCP server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        base,
        handle: running.handle,
        _dir: dir,
    }
}

#[expect(clippy::expect_used, reason = "a benchmark that cannot run should stop loudly")]
async fn one_turn(client: &reqwest::Client, base: &str, n: usize) -> Duration {
    let calls: Vec<_> = (0..n)
        .map(|_| json!({"name": "demo__sleep_ms", "arguments": {"ms": D_MS}}))
        .collect();
    let message = format!("/mock tools {}", serde_json::Value::Array(calls));
    let started = Instant::now();
    let reply: serde_json::Value = client
        .post(format!("{base}/send"))
        .header("X-User-ID", "1")
        .json(&json!({ "message": message }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let elapsed = started.elapsed();
    let executions = reply["message"]["tool_executions"].as_array().map_or(0, Vec::len);
    assert_eq!(executions, n, "every call ran: {reply}");
    elapsed
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    aichat::install_crypto_provider();
    let quick = std::env::args().any(|a| a == "--quick");
    let repetitions = if quick { 1 } else { 3 };
    let results = actix_web::rt::System::new().block_on(async move {
        let client = reqwest::Client::new();
        let parallel = start(64).await;
        let sequential = start(1).await;
        let mut rows = Vec::new();
        for n in SIZES {
            // One warm-up turn per size, then the measured ones.
            one_turn(&client, &parallel.base, n).await;
            let mut par = Vec::new();
            let mut seq = Vec::new();
            for _ in 0..repetitions {
                par.push(one_turn(&client, &parallel.base, n).await);
                seq.push(one_turn(&client, &sequential.base, n).await);
            }
            rows.push((n, median(par), median(seq)));
        }
        parallel.handle.stop(true).await;
        sequential.handle.stop(true).await;
        rows
    });
    let d = Duration::from_millis(D_MS).as_secs_f64();
    let mut report = Vec::new();
    say(&format!(
        "tools: one turn, N calls x {D_MS} ms, median of {repetitions}"
    ));
    say("   N | parallel wall/D | max_concurrency=1 wall/D | sequential/parallel");
    for (n, par, seq) in &results {
        let (p, s) = (par.as_secs_f64() / d, seq.as_secs_f64() / d);
        say(&format!("{n:>4} | {p:>15.3} | {s:>24.3} | {:>19.2}", s / p));
        report.push(json!({ "n": n, "parallel_wall_over_d": p, "sequential_wall_over_d": s, "ratio": s / p }));
    }
    say(&json!({ "bench": "tools", "d_ms": D_MS, "results": report }).to_string());
}

#[expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn say(line: &str) {
    println!("{line}");
}
