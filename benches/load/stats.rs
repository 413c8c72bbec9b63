//! Figures: samples, percentiles and the report every scenario adds to.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Figures

/// Sorted samples in microseconds.
pub(crate) struct Samples(pub(crate) Vec<f64>);

impl Samples {
    pub(crate) fn new(mut values: Vec<Duration>) -> Self {
        values.sort();
        Self(values.into_iter().map(|d| d.as_secs_f64() * 1e6).collect())
    }

    pub(crate) fn pct(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let index = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[index.min(self.0.len() - 1)]
    }
}

/// Every figure of the run, by scenario, for the last line.
pub(crate) type Report = BTreeMap<&'static str, Value>;
