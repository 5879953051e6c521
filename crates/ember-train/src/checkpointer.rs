//! The burn-train hook: a model checkpointer that explains each epoch's model as it saves it.
//!
//! burn-train 0.22 has no callback trait; its `SupervisedTraining` hands the model, after each
//! epoch's validation, to the model checkpointer (`with_custom_checkpointers`). Wrapping the
//! checkpointer the user would use anyway gets every checkpointed epoch without forking the
//! training loop. burn-train runs checkpointers on their own thread, so the explanation
//! overlaps the next epoch's training; a failed explanation stops the training through
//! burn-train's interrupter, like a failed save.

use std::sync::{Arc, Mutex};

use burn::store::ModuleRecord;
use burn::train::checkpoint::{Checkpointer, CheckpointerError};

use crate::{ImageClassifier, Stage, TrainingExplanations};

/// A [`Checkpointer`] of model records that explains the validation images with each epoch's
/// model, then hands the record to the checkpointer it wraps.
///
/// ```text
/// let explanations = Arc::new(TrainingExplanations::new(dir, classes, inputs, pictures, labels)?);
/// SupervisedTraining::new(artifacts, train, valid).with_custom_checkpointers(
///     ExplainingCheckpointer::new(FileCheckpointer::new(artifacts.join("checkpoint"), "model"), model.valid(), explanations),
///     FileCheckpointer::new(artifacts.join("checkpoint"), "optim"),
///     FileCheckpointer::new(artifacts.join("checkpoint"), "scheduler"),
/// );
/// ```
pub struct ExplainingCheckpointer<M, C> {
    inner: C,
    /// A model of the trained architecture on the device to explain on; each epoch's record is
    /// loaded into a copy of it. Behind a lock because checkpointers must be `Sync`.
    template: Mutex<M>,
    explanations: Arc<TrainingExplanations>,
    every: usize,
}

impl<M: ImageClassifier, C> ExplainingCheckpointer<M, C> {
    /// Explains every epoch with `template`'s architecture (its parameters are replaced by each
    /// epoch's; its device is where the explanation runs) and checkpoints through `inner`.
    pub fn new(inner: C, template: M, explanations: Arc<TrainingExplanations>) -> Self {
        Self {
            inner,
            template: Mutex::new(template),
            explanations,
            every: 1,
        }
    }

    /// Explains only every `epochs`-th epoch (1 = each; 0 is taken as 1).
    pub fn every(mut self, epochs: usize) -> Self {
        self.every = epochs.max(1);
        self
    }
}

impl<M, C> Checkpointer<ModuleRecord> for ExplainingCheckpointer<M, C>
where
    M: ImageClassifier + Send,
    C: Checkpointer<ModuleRecord>,
{
    fn save(&self, epoch: usize, record: ModuleRecord) -> Result<(), CheckpointerError> {
        if epoch.is_multiple_of(self.every) {
            let template = self
                .template
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            let model = template
                .try_load_record(record.clone())
                .map_err(|e| CheckpointerError::Unknown(format!("the epoch's record does not fit the model: {e}")))?;
            self.explanations
                .explain(Stage::Epoch(epoch), &model)
                .map_err(|e| CheckpointerError::Unknown(e.to_string()))?;
        }
        self.inner.save(epoch, record)
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        self.inner.delete(epoch)
    }

    fn restore(&self, epoch: usize) -> Result<ModuleRecord, CheckpointerError> {
        self.inner.restore(epoch)
    }
}
