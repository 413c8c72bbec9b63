//! `aichat`: parse flags, load configuration, start the server, run until a signal.

use clap::Parser;

use aichat::config::{Cli, Config};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli, |name| std::env::var(name).ok())?;
    aichat::telemetry::init(&config.log);
    let running = aichat::server::start(&config, true)?;
    tracing::info!(addr = %running.addr, provider = %config.llm.provider, "listening on http://{}", running.addr);
    running.server.await?;
    running.provider_arbiter.stop();
    tracing::info!("stopped");
    Ok(())
}
