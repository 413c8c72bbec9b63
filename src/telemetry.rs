//! Logging: `tracing` to stderr, text or JSON lines; `RUST_LOG` overrides the configured level.
//! Colours only on a terminal (and never with `NO_COLOR`). The MCP library's own lines are off
//! unless `RUST_LOG` names them: they repeat, as `Debug` dumps, what our connection lines say with
//! the cause chain.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber (once; later calls are ignored). `ansi`: colour the text.
pub fn init(config: &LogConfig, ansi: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{},rmcp=off", config.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if config.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide Prometheus recorder (installed on first use; every server in the process
/// shares it).
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ];
        let builder = builder
            .set_buckets(&buckets)
            .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}
