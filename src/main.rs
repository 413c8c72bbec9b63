//! `aichat`: parse flags, load configuration, start the server, run until a signal.

use clap::Parser;

use aichat::config::{Cli, Command, Config};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::McpDemo { test_tools, label }) = cli.command {
        // stdout carries JSON-RPC: logs go to stderr, warnings only.
        aichat::telemetry::init(&aichat::config::LogConfig {
            level: "warn".into(),
            json: false,
        });
        return aichat::mcp_demo::serve_stdio(test_tools, label).await;
    }
    let config = Config::load(&cli, |name| std::env::var(name).ok())?;
    aichat::telemetry::init(&config.log);
    let running = aichat::server::start(&config, true)?;
    tracing::info!(addr = %running.addr, provider = %config.llm.provider, "listening on http://{}", running.addr);
    running.server.await?;
    for arbiter in running.arbiters {
        arbiter.stop();
    }
    tracing::info!("stopped");
    Ok(())
}
