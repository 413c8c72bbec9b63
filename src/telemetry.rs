//! Logging: `tracing` to stderr, text or JSON lines; `RUST_LOG` overrides the configured level,
//! which a reload can change while running.
//! Colours only on a terminal (and never with `NO_COLOR`). The MCP library's own lines are off
//! unless `RUST_LOG` names them: they repeat, as `Debug` dumps, what our connection lines say with
//! the cause chain.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Changes the level filter of the installed subscriber (set once by [`init`]).
type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_LEVEL: std::sync::OnceLock<SetLevel> = std::sync::OnceLock::new();

/// Whether `RUST_LOG` decides the level (then the configured one is not used, at start or reload).
pub fn level_from_env() -> bool {
    std::env::var_os("RUST_LOG").is_some()
}

fn configured_filter(config: &LogConfig) -> EnvFilter {
    EnvFilter::new(format!("{},rmcp=off", config.level))
}

/// Installs the global subscriber (once; later calls are ignored). `ansi`: colour the text.
pub fn init(config: &LogConfig, ansi: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| configured_filter(config));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if config.json {
        let builder = builder.json().with_filter_reloading();
        let handle = builder.reload_handle();
        if builder.try_init().is_ok() {
            let _ = SET_LEVEL.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
        }
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        if builder.try_init().is_ok() {
            let _ = SET_LEVEL.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
        }
    }
}

/// Applies `config.level` to the running subscriber (a reload). Not applied when `RUST_LOG`
/// decides the level or when this process did not install the subscriber (tests).
pub fn set_level(config: &LogConfig) -> Result<(), String> {
    if level_from_env() {
        return Err("RUST_LOG is set and decides the level".into());
    }
    match SET_LEVEL.get() {
        Some(set) => set(configured_filter(config)),
        None => Err("logging was not started by this server".into()),
    }
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
        // Histogram samples queue in the recorder until they are folded into their buckets,
        // which a scrape does: without scrapes they grew by about 100 bytes per turn (the soak's
        // RSS climbed 0.25 MiB/s). Folded every 5 s whether or not anyone scrapes.
        let upkeep = handle.clone();
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    #[expect(clippy::disallowed_methods, reason = "a plain thread that only waits")]
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        if let Err(err) = started {
            tracing::warn!(error = %err, "cannot start the metrics upkeep thread");
        }
        handle
    })
}
