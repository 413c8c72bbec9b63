//! `aichat`: parse flags, load configuration, start the server, run until SIGTERM/SIGINT, then
//! drain. The subcommands `mcp-demo` and `mcp-client` run the demo MCP server and the
//! conformance client.

use std::time::Duration;

use clap::Parser;

use aichat::config::{Cli, Command, Config, LogConfig};

/// mimalloc instead of glibc malloc: the load harness measured fewer cycles in the allocator and a
/// smaller resident set per open stream (see README, Performance). Built without transparent huge
/// pages (`no_thp`): with them the resident set grows in 2 MiB steps (an idle server held 45 MiB
/// instead of 25, an idle connection 16 KiB instead of 10).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.clone() {
        Some(Command::McpDemo {
            test_tools,
            label,
            extra_tools,
        }) => {
            // stdout carries JSON-RPC: logs go to stderr, warnings only.
            aichat::telemetry::init(
                &LogConfig {
                    level: "warn".into(),
                    json: false,
                },
                colours(),
            );
            let served = aichat::demo::mcp_server::serve_stdio(test_tools, label, extra_tools).await;
            // Exit at once: the runtime's teardown waits on the blocking stdin reader, and a
            // server that lost its client (or its parent) has nothing left to finish.
            std::process::exit(i32::from(served.is_err()))
        }
        Some(Command::McpClient { url }) => {
            aichat::telemetry::init(
                &LogConfig {
                    level: "info".into(),
                    json: false,
                },
                colours(),
            );
            aichat::install_crypto_provider();
            let scenario = environment("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
            let context = environment("MCP_CONFORMANCE_CONTEXT").unwrap_or_default();
            aichat::demo::mcp_client::run(&url, &scenario, &context).await
        }
        None => serve(&cli).await,
    }
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let config = Config::load(cli, environment)?;
    aichat::telemetry::init(&config.log, colours());
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    raise_open_files_limit(config.server.max_connections);
    let loader = {
        let cli = cli.clone();
        aichat::reload::Loader::new(Box::new(move || Config::load(&cli, environment)), environment)
    };
    let running = aichat::server::start(&config, loader)?;
    tracing::info!("{}", aichat::startup::block(&config, &running));
    watch_hangups(std::sync::Arc::clone(&running.reloader));
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let (chat, handle) = (running.chat.clone(), running.handle.clone());
    actix_web::rt::spawn(async move {
        let signal = shutdown_signal().await;
        tracing::info!(
            signal,
            ?grace,
            "shutting down: refusing new turns, letting running turns finish"
        );
        chat.drain(grace).await;
        // Streams have ended; close connections (SSE readers are done) and stop.
        handle.stop(true).await;
    });
    running.server.await?;
    // Stopping the arbiters stops the MCP connection actors, which ends their child processes.
    for arbiter in running.arbiters {
        arbiter.stop();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft open-files limit to the hard one: every connection, SSE reader and database
/// file is a descriptor, and the usual soft limit of 1,024 runs out long before the connection cap.
fn raise_open_files_limit(max_connections: usize) {
    // Room for the database, its pool, MCP children and the listener besides the connections.
    let wanted = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(256);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            max_connections,
            "the open-files limit is below server.max_connections plus headroom; raise the hard limit (ulimit -Hn)"
        ),
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-files limit"),
    }
}

/// SIGHUP reloads the configuration (see `aichat::reload`); it never stops the server.
fn watch_hangups(reloader: std::sync::Arc<aichat::reload::Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP");
        return;
    };
    actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(err) = reloader.reload("SIGHUP") {
                tracing::warn!(error = %err, "SIGHUP: the configuration was refused; the running one stays");
            }
        }
    });
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Whether log lines get colours: only on a terminal, and never with `NO_COLOR` set.
fn colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && environment("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The process's one door to its environment: everything else gets values passed in.
#[expect(
    clippy::disallowed_methods,
    reason = "this is the one place that reads the environment"
)]
fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
