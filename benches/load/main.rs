//! Load harness: the release binary on 127.0.0.1 with a temporary SQLite file, the mock provider
//! and (for `tools`) the demo MCP server, driven over real HTTP + SSE by many concurrent clients.
//! Every loop is bounded in count and time; the default run takes a few minutes on 2 cores.
//!
//! Run: `cargo bench --bench load -- [overhead] [ttft] [streams] [throughput] [tools] [soak
//! [--soak-secs N]] [scaling] [cluster] [--quick] [--database postgres://…]` (no scenario: all but
//! `soak`, `scaling` and `cluster`). Prints a table per scenario, then one JSON line with every
//! figure.
//!
//! - `overhead`: full turns (send → SSE → `done`, stored) with a 0 ms mock, at concurrency 1 and
//!   64, against the same requests straight to the mock provider (in-process, no HTTP).
//! - `ttft`: time to first token through the whole path against the mock's own first token.
//! - `streams`: N paced streams (64 chunks, 20 ms apart) at once: frames lost, frames late (a gap
//!   over 10× the pace), errors, server RSS per stream; then N idle streams: the RSS their turns,
//!   their keep-alive connections and their SSE readers each add.
//! - `throughput`: turns per second with persistence at a 20 ms mock, rising concurrency until
//!   errors or p99 > 1 s.
//! - `tools`: one turn with N tool calls of 200 ms each, parallel against `max_concurrency = 1`.
//! - `scaling`: a turn, `GET /sessions` and a page of messages against history length (10 →
//!   10,000 messages) and database size (10,000 → 1,000,000 messages).
//! - `cluster` (with `--database`): two nodes on one PostgreSQL database; the lag from a turn's
//!   events reaching a reader on its own node to reaching a reader on the other node.
//! - `soak`: sustained load (60 s by default) with tool rounds and resuming readers: turns/s and
//!   p99 per 10 s, RSS, WAL size and open files over time, errors and turns lost.

use std::time::{Duration, Instant};

use scenarios::{overhead, streams, throughput, tools, ttft};
use serde_json::json;
use server::Backend;
use stats::Report;

mod cluster;
mod idle;
mod scaling;
mod scenarios;
mod server;
mod soak;
mod stats;

/// Every request of the harness gives up after this.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------

fn main() {
    aichat::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let all = ["overhead", "ttft", "streams", "throughput", "tools"];
    // `soak`, `scaling` and `cluster` run only when named: they take minutes or a PostgreSQL.
    let mut chosen: Vec<&str> = all
        .into_iter()
        .chain(["soak", "scaling", "cluster"])
        .filter(|s| args.iter().any(|a| a == s))
        .collect();
    if chosen.is_empty() {
        chosen = all.to_vec();
    }
    let soak_secs = args
        .iter()
        .position(|a| a == "--soak-secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    // `--database postgres://…`: overhead and throughput run on SQLite, then on a fresh database
    // on that PostgreSQL server, side by side in one run.
    let mut backends = vec![Backend::Sqlite];
    if let Some(url) = args
        .iter()
        .position(|a| a == "--database")
        .and_then(|i| args.get(i + 1))
    {
        backends.push(Backend::Postgres(url.clone()));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            note(&format!("cannot start a runtime: {err}"));
            return;
        }
    };
    let report = runtime.block_on(async {
        let mut report = Report::new();
        // A whole default run stays under 5 minutes: the open-ended scenarios get what is left.
        let budget = Instant::now() + Duration::from_secs(if quick { 90 } else { 240 });
        for scenario in &chosen {
            match *scenario {
                "overhead" => {
                    for backend in &backends {
                        overhead(quick, backend, &mut report).await;
                    }
                }
                "ttft" => ttft(quick, &mut report).await,
                "streams" => streams(quick, budget, &mut report).await,
                "throughput" => {
                    for backend in &backends {
                        throughput(quick, budget, backend, &mut report).await;
                    }
                }
                "soak" => soak::soak(quick, soak_secs, &mut report).await,
                "scaling" => scaling::scaling(quick, &mut report).await,
                "cluster" => {
                    let postgres = backends.last().unwrap_or(&Backend::Sqlite);
                    cluster::cluster(quick, postgres, &mut report).await;
                }
                _ => tools(quick, &mut report).await,
            }
        }
        report
    });
    let machine = json!({
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "quick": quick,
    });
    say(&json!({ "bench": "load", "machine": machine, "results": report }).to_string());
}

#[expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
pub(crate) fn say(line: &str) {
    println!("{line}");
}

#[expect(clippy::print_stderr, reason = "server output goes to stderr")]
pub(crate) fn note(line: &str) {
    eprintln!("{line}");
}
