//! The Learner's own numbers next to the maps: a burn-train metric logger that records each
//! epoch's validation metrics (accuracy, loss, …) as facts of the epoch's explanations.

use std::collections::HashMap;
use std::sync::Arc;

use burn::train::logger::MetricLogger;
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};

use crate::{Stage, TrainingExplanations};

/// Called with each finished validation epoch and its metrics (name, epoch mean).
pub type EpochCallback = Box<dyn FnMut(usize, &[(String, f64)]) + Send>;

/// A [`MetricLogger`] (register it with `SupervisedTraining::with_metric_logger`) that hands
/// every validation epoch's numeric metrics to [`TrainingExplanations::record_fact`], so that
/// the index shows them beside the maps, and to an optional callback (to print progress).
///
/// burn-train processes metrics before it checkpoints an epoch, so the facts are recorded
/// before [`crate::ExplainingCheckpointer`] draws the epoch's sheet.
pub struct ExplanationFacts {
    explanations: Arc<TrainingExplanations>,
    names: HashMap<MetricId, String>,
    /// The numeric entries by metric name, epoch and split, summed: burn-train's checkpointing
    /// and early-stopping strategies read them back (a logger given to `with_metric_logger`
    /// replaces burn-train's file logger, which would otherwise answer). A sum per epoch, not
    /// every entry, so that memory does not grow with the number of steps.
    history: HashMap<(String, usize, Split), EpochEntries>,
    /// The latest running (epoch-mean) value of each metric in the current validation epoch.
    current: Vec<(MetricId, f64)>,
    on_epoch: Option<EpochCallback>,
}

/// One metric's entries in one epoch and split.
#[derive(Debug, Default, Clone, Copy)]
struct EpochEntries {
    /// Σ value × count of the per-step entries.
    sum: f64,
    count: usize,
    /// The epoch's final value, when the metric logs one.
    last: Option<f64>,
}

impl ExplanationFacts {
    /// Facts for `explanations`.
    pub fn new(explanations: Arc<TrainingExplanations>) -> Self {
        Self {
            explanations,
            names: HashMap::new(),
            history: HashMap::new(),
            current: Vec::new(),
            on_epoch: None,
        }
    }

    /// Also calls `callback` with each finished validation epoch's metrics.
    pub fn on_epoch(mut self, callback: impl FnMut(usize, &[(String, f64)]) + Send + 'static) -> Self {
        self.on_epoch = Some(Box::new(callback));
        self
    }
}

impl MetricLogger for ExplanationFacts {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        for numeric in update.entries_numeric {
            let id = numeric.entry.metric_id;
            let name = self.names.get(&id).cloned().unwrap_or_else(|| format!("{id:?}"));
            if *split == Split::Valid {
                // The epoch's authoritative value when burn-train logs one, else the running mean.
                let value = match (&numeric.numeric_entry, &numeric.running_entry) {
                    (Some(NumericEntry::Final(value)), _) => Some(*value),
                    (_, Some(running)) => Some(running.current()),
                    (Some(entry), None) => Some(entry.current()),
                    (None, None) => None,
                };
                if let Some(value) = value {
                    match self.current.iter_mut().find(|(known, _)| *known == id) {
                        Some(slot) => slot.1 = value,
                        None => self.current.push((id, value)),
                    }
                }
            }
            if let Some(entry) = numeric.numeric_entry {
                let summed = self.history.entry((name, epoch, split.clone())).or_default();
                match entry {
                    NumericEntry::Value(value) => {
                        summed.sum += value;
                        summed.count += 1;
                    }
                    NumericEntry::Aggregated {
                        aggregated_value,
                        count,
                    } => {
                        summed.sum += aggregated_value * count as f64;
                        summed.count += count;
                    }
                    NumericEntry::Final(value) => summed.last = Some(value),
                }
            }
        }
    }

    fn read_numeric(&mut self, name: &str, epoch: usize, split: &Split) -> Result<Vec<NumericEntry>, String> {
        // What burn-train's aggregation makes of every entry: the final value if one was
        // logged, else the mean weighted by counts.
        Ok(match self.history.get(&(name.to_owned(), epoch, split.clone())) {
            Some(EpochEntries { last: Some(value), .. }) => vec![NumericEntry::Final(*value)],
            Some(summed) if summed.count > 0 => vec![NumericEntry::Aggregated {
                aggregated_value: summed.sum / summed.count as f64,
                count: summed.count,
            }],
            _ => Vec::new(),
        })
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name.to_string());
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        if summary.split != Split::Valid {
            return;
        }
        let metrics: Vec<(String, f64)> = std::mem::take(&mut self.current)
            .into_iter()
            .map(|(id, value)| (self.names.get(&id).cloned().unwrap_or_else(|| format!("{id:?}")), value))
            .collect();
        for (name, value) in &metrics {
            // A failed index write shows again at the epoch's explanation, which reports it.
            let _ = self.explanations.record_fact(
                Stage::Epoch(summary.epoch_number),
                format!("valid {name}"),
                compact(*value),
            );
        }
        if let Some(callback) = self.on_epoch.as_mut() {
            callback(summary.epoch_number, &metrics);
        }
    }
}

/// A metric value with four decimals, trailing zeros dropped (`84.53`, `0.4382`).
fn compact(value: f64) -> String {
    let text = format!("{value:.4}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}
