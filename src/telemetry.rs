//! Logging: `tracing` to stderr, text or JSON lines; `RUST_LOG` overrides the configured level.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
