//! `aichat`: parse flags, load configuration, start the server, run until a signal. The
//! subcommands `mcp-demo` and `mcp-client` run the demo MCP server and the conformance client.

use clap::Parser;

use aichat::config::{Cli, Command, Config, LogConfig};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.clone() {
        Some(Command::McpDemo { test_tools, label }) => {
            // stdout carries JSON-RPC: logs go to stderr, warnings only.
            aichat::telemetry::init(&LogConfig {
                level: "warn".into(),
                json: false,
            });
            aichat::mcp_demo::serve_stdio(test_tools, label).await
        }
        Some(Command::McpClient { url }) => {
            aichat::telemetry::init(&LogConfig {
                level: "info".into(),
                json: false,
            });
            aichat::install_crypto_provider();
            let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
            aichat::mcp_client::run(&url, &scenario).await
        }
        None => serve(&cli).await,
    }
}

async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let config = Config::load(cli, |name| std::env::var(name).ok())?;
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
