//! Faithfulness metrics: does the map point at what the model uses?
//!
//! Each metric perturbs the input according to the map, re-runs the model and compares the
//! target's score with the unperturbed one; one file per family, with its definition and paper:
//!
//! * [`confidence`] — the image multiplied by the map: pytorch-grad-cam's `DropInConfidence` and
//!   `IncreaseInConfidence`, Grad-CAM++'s Average Drop;
//! * [`deletion`] — deletion and insertion curves and their areas (RISE, torch-cam's definition);
//! * [`road`] — ROAD: the most or least relevant pixels removed by noisy linear imputation;
//! * [`pointing`] — the pointing game: is the map's peak on the annotated object?
//!
//! Metrics take the model, the input batch `[N, C, H, W]`, the maps `[N, H, W]` at the input's
//! resolution (an [`crate::Explanation`]'s `maps`), the target and the classes it explained (for
//! class targets: the perturbed images are scored for the explained class, not their own top
//! class). Perturbed copies run through the model in batches, or on flex one at a time on worker
//! threads (see `copy_scores`); values come back per image.

pub mod confidence;
pub mod deletion;
pub mod pointing;
pub mod road;

use std::fmt;
use std::str::FromStr;

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{CamError, Result};
use crate::model::CamModel;
use crate::read::to_host;
use crate::target::Target;
use crate::vocabulary::{UnknownName, Vocabulary, write_name};

pub use confidence::{ConfidenceChange, average_drop, confidence_change, drop_in_confidence, increase_in_confidence};
pub use deletion::{Baseline, Curves, DeletionInsertion};
pub use pointing::{PointingGame, pointing_game};
pub use road::{NoisyLinearImputer, Road, RoadScores};

/// The metrics by name, for command lines and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// pytorch-grad-cam's `DropInConfidence`.
    DropInConfidence,
    /// pytorch-grad-cam's `IncreaseInConfidence`.
    IncreaseInConfidence,
    /// Grad-CAM++'s Average Drop.
    AverageDrop,
    /// Deletion area under the curve.
    Deletion,
    /// Insertion area under the curve.
    Insertion,
    /// ROAD, most relevant first.
    RoadMorf,
    /// ROAD, least relevant first.
    RoadLerf,
    /// ROAD combined.
    RoadCombined,
    /// The pointing game.
    PointingGame,
}

impl Vocabulary for Metric {
    const KIND: &'static str = "metric";
    const ALL: &'static [Self] = &[
        Metric::DropInConfidence,
        Metric::IncreaseInConfidence,
        Metric::AverageDrop,
        Metric::Deletion,
        Metric::Insertion,
        Metric::RoadMorf,
        Metric::RoadLerf,
        Metric::RoadCombined,
        Metric::PointingGame,
    ];

    fn name(self) -> &'static str {
        match self {
            Metric::DropInConfidence => "drop-in-confidence",
            Metric::IncreaseInConfidence => "increase-in-confidence",
            Metric::AverageDrop => "average-drop",
            Metric::Deletion => "deletion",
            Metric::Insertion => "insertion",
            Metric::RoadMorf => "road-morf",
            Metric::RoadLerf => "road-lerf",
            Metric::RoadCombined => "road-combined",
            Metric::PointingGame => "pointing-game",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Metric::DropInConfidence => {
                "max(0, score − score of the image times the map); lower is better (pytorch-grad-cam)"
            }
            Metric::IncreaseInConfidence => "1 where the image times the map scores higher; higher is better",
            Metric::AverageDrop => {
                "Grad-CAM++'s Average Drop: max(0, score − masked score) / score, in %; lower is better"
            }
            Metric::Deletion => {
                "area under the score as the most relevant pixels are deleted first; lower is better (RISE)"
            }
            Metric::Insertion => {
                "area under the score as the most relevant pixels are inserted first; higher is better (RISE)"
            }
            Metric::RoadMorf => "score change with the most relevant pixels imputed, 10–90 %; lower is better (ROAD)",
            Metric::RoadLerf => "score change with the least relevant pixels imputed, 10–90 %; higher is better (ROAD)",
            Metric::RoadCombined => "(road-lerf − road-morf) / 2; higher is better (ROAD)",
            Metric::PointingGame => "1 where the map's peak lies on an annotated box; higher is better",
        }
    }
}

impl Metric {
    /// Whether a higher value means a more faithful map.
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Metric::DropInConfidence | Metric::AverageDrop | Metric::Deletion | Metric::RoadMorf
        )
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(*self, f)
    }
}

impl FromStr for Metric {
    type Err = UnknownName;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Metric::parse_name(s)
    }
}

/// Unless set, perturbed copies re-run at once: as many as fit in this many bytes of input.
pub const METRIC_BATCH_BYTES: usize = 64 << 20;

/// The unperturbed scores `[N]` of `input` and the classes the target resolved (for class
/// targets), on the host.
pub(crate) fn original_scores<M, T>(model: &M, input: &Tensor<4>, target: &T) -> Result<(Vec<f32>, Vec<Option<usize>>)>
where
    M: CamModel + ?Sized,
    T: Target<M::Output> + ?Sized,
{
    let [batch, ..] = input.dims();
    let output = model.forward(input.clone().inner())?;
    let resolved = target.scores(&output, batch)?;
    let classes = match &resolved.classes {
        Some(classes) => crate::read::classes_to_host(classes)?.into_iter().map(Some).collect(),
        None => vec![None; batch],
    };
    Ok((to_host(&resolved.scores)?, classes))
}

/// Perturbed copies of one image, made where and when they are scored: on flex each worker
/// thread makes its own copy just before running it, so that no copy waits for all the others
/// to be made (deletion + insertion of one 224×224 image made its 39 copies as one tensor in
/// 14–15 ms on the calling thread, 0.8 of a forward pass, with both cores waiting).
pub(crate) struct Copies<'a> {
    /// How many copies there are.
    pub count: usize,
    /// `[C, H, W]` of one copy.
    pub dims: [usize; 3],
    /// The device the copies go to.
    pub device: Device,
    /// Copies `range` `[range.len(), C, H, W]`.
    pub make: &'a (dyn Fn(Range<usize>) -> Result<Tensor<4>> + Sync),
}

impl Copies<'_> {
    /// Copies whose values are on the host, `[count, C, H, W]` in one slice.
    pub(crate) fn from_host<'v>(
        values: &'v [f32],
        dims: [usize; 3],
        device: &Device,
    ) -> impl Fn(Range<usize>) -> Result<Tensor<4>> + Sync + 'v {
        let per_copy = dims.iter().product::<usize>();
        let device = device.clone();
        move |range: Range<usize>| {
            let part = &values[range.start * per_copy..range.end * per_copy];
            let [channels, height, width] = dims;
            Ok(
                Tensor::<1>::from_data(TensorData::new(part.to_vec(), [part.len()]), &device).reshape([
                    range.len(),
                    channels,
                    height,
                    width,
                ]),
            )
        }
    }
}

/// The class perturbed copies are scored for.
#[derive(Clone, Copy)]
pub(crate) enum CopyClass<'a> {
    /// Resolved already (`None` for targets without classes).
    Known(Option<usize>),
    /// Resolved by the target on this unperturbed image `[1, C, H, W]`, which is scored with
    /// the copies.
    Of(&'a Tensor<4>),
}

/// The target's scores of perturbed `copies` of one image, explained for `class`: in batches of
/// `batch` copies where given; else on flex one copy at a time on every worker thread,
/// elsewhere in batches of [`METRIC_BATCH_BYTES`] of copies.
///
/// Why one copy per thread on flex: a batch buys a CPU little (the copies' activations
/// outgrow the caches: MobileNetV2 at batch 8 cost 0.95–1.0 of a batch-1 forward per image on
/// 2 cores), while the kernels of one image use the cores only in part (a batch-1 forward is
/// 1.6× faster on 2 threads than on 1); copies on threads of their own, each with a pool of
/// one thread, keep every core busy with cache-sized work.
pub(crate) fn copy_scores<M, T>(
    model: &M,
    target: &T,
    copies: &Copies,
    class: Option<usize>,
    batch: Option<usize>,
) -> Result<Vec<f32>>
where
    M: CamModel + Sync + ?Sized,
    T: Target<M::Output> + Sync + ?Sized,
{
    Ok(score_copies(model, target, copies, CopyClass::Known(class), batch)?.1)
}

/// [`copy_scores`] for the class the target resolves on the unperturbed `image` `[1, C, H,
/// W]`, and that image's score. On flex's worker threads the image is one more job, run while
/// the first copies run (they wait for its class before they are scored): before, the image
/// ran first on its own, and 39 copies on 2 workers left one worker idle for the last copy.
pub(crate) fn scores_with_original<M, T>(
    model: &M,
    target: &T,
    image: &Tensor<4>,
    copies: &Copies,
    batch: Option<usize>,
) -> Result<(f32, Vec<f32>)>
where
    M: CamModel + Sync + ?Sized,
    T: Target<M::Output> + Sync + ?Sized,
{
    let (original, scores) = score_copies(model, target, copies, CopyClass::Of(image), batch)?;
    let original = original.ok_or_else(|| CamError::MetricInput("the unperturbed image was not scored".into()))?;
    Ok((original, scores))
}

/// The unperturbed image's score where `class` asks for it, and the copies' scores.
fn score_copies<M, T>(
    model: &M,
    target: &T,
    copies: &Copies,
    class: CopyClass,
    batch: Option<usize>,
) -> Result<(Option<f32>, Vec<f32>)>
where
    M: CamModel + Sync + ?Sized,
    T: Target<M::Output> + Sync + ?Sized,
{
    let count = copies.count;
    let jobs = count + usize::from(matches!(class, CopyClass::Of(_)));
    let workers = rayon::current_num_threads().min(jobs);
    // (`scores_on_threads` has one pool per global thread, started on first use.)
    if batch.is_none() && workers > 1 && copies.device == Device::flex() {
        return scores_on_threads(model, target, copies, class, workers);
    }
    let (original, class) = match class {
        CopyClass::Known(class) => (None, class),
        CopyClass::Of(image) => {
            let (score, class) = image_score(model, target, image)?;
            (Some(score), class)
        }
    };
    let per_copy = (copies.dims.iter().product::<usize>() * size_of::<f32>()).max(1);
    let batch = batch.unwrap_or(METRIC_BATCH_BYTES / per_copy).max(1);
    let mut scores = Vec::with_capacity(count);
    for start in (0..count).step_by(batch) {
        let end = count.min(start + batch);
        let output = model.forward((copies.make)(start..end)?)?;
        scores.extend(to_host(&target.copy_scores(&output, end - start, class)?)?);
    }
    Ok((original, scores))
}

/// One unperturbed image's score and the class the target resolved on it.
fn image_score<M, T>(model: &M, target: &T, image: &Tensor<4>) -> Result<(f32, Option<usize>)>
where
    M: CamModel + ?Sized,
    T: Target<M::Output> + ?Sized,
{
    let (scores, classes) = original_scores(model, image, target)?;
    Ok((scores[0], classes[0]))
}

/// [`score_copies`] with `workers` threads taking the next job in turn (the unperturbed image first,
/// where asked for, then the copies), each making its copy and running the model's kernels on
/// a thread pool of its own with one thread.
fn scores_on_threads<M, T>(
    model: &M,
    target: &T,
    copies: &Copies,
    class: CopyClass,
    workers: usize,
) -> Result<(Option<f32>, Vec<f32>)>
where
    M: CamModel + Sync + ?Sized,
    T: Target<M::Output> + Sync + ?Sized,
{
    let count = copies.count;
    let (image, resolution) = match class {
        CopyClass::Known(class) => (None, Resolution::Class(class)),
        CopyClass::Of(image) => (Some(image), Resolution::Pending),
    };
    let jobs = count + usize::from(image.is_some());
    let slot = ClassSlot {
        state: Mutex::new(resolution),
        resolved: Condvar::new(),
    };
    let next = AtomicUsize::new(0);
    let work = || -> Result<WorkerScores> {
        let (mut original, mut scored) = (None, Vec::new());
        loop {
            let job = next.fetch_add(1, Ordering::Relaxed);
            if job >= jobs {
                return Ok((original, scored));
            }
            let copy = match image {
                Some(image) if job == 0 => {
                    // Whatever happens here (an error, a panic), the waiting copies go on.
                    let unresolved = FailUnlessResolved(&slot);
                    let (score, class) = image_score(model, target, image)?;
                    unresolved.0.resolve(Resolution::Class(class));
                    original = Some(score);
                    continue;
                }
                Some(_) => job - 1,
                None => job,
            };
            let output = model.forward((copies.make)(copy..copy + 1)?)?;
            // `None`: the unperturbed image failed, and its worker says why.
            let Some(class) = slot.wait() else {
                return Ok((original, scored));
            };
            scored.push((copy, to_host(&target.copy_scores(&output, 1, class)?)?[0]));
        }
    };
    let pools = worker_pools()?;
    // Called from a pool larger than the global one, the work still spreads over these.
    let workers = workers.min(pools.len());
    let results: Vec<Result<WorkerScores>> = std::thread::scope(|scope| {
        let running: Vec<_> = pools[..workers]
            .iter()
            .map(|pool| scope.spawn(|| pool.install(work)))
            .collect();
        running
            .into_iter()
            .map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let (mut original, mut scores) = (None, vec![0.0f32; count]);
    for result in results {
        let (image_score, scored) = result?;
        original = original.or(image_score);
        for (copy, score) in scored {
            scores[copy] = score;
        }
    }
    Ok((original, scores))
}

/// What one worker scored: the unperturbed image (if it ran it) and `(copy, score)` pairs.
type WorkerScores = (Option<f32>, Vec<(usize, f32)>);

/// Where the class copies wait for stands.
enum Resolution {
    Pending,
    Class(Option<usize>),
    Failed,
}

/// The class the unperturbed image resolves, shared by the workers.
struct ClassSlot {
    state: Mutex<Resolution>,
    resolved: Condvar,
}

impl ClassSlot {
    /// Settles a pending class (once) and wakes the waiting workers.
    fn resolve(&self, resolution: Resolution) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, Resolution::Pending) {
            *state = resolution;
        }
        self.resolved.notify_all();
    }

    /// The class, once resolved; `None` where the unperturbed image failed.
    fn wait(&self) -> Option<Option<usize>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match *state {
                Resolution::Pending => {
                    state = self.resolved.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                Resolution::Class(class) => return Some(class),
                Resolution::Failed => return None,
            }
        }
    }
}

/// Marks the class failed when dropped before it was resolved (an error or a panic in the job
/// that resolves it), so that no worker waits for ever.
struct FailUnlessResolved<'a>(&'a ClassSlot);

impl Drop for FailUnlessResolved<'_> {
    fn drop(&mut self) {
        self.0.resolve(Resolution::Failed);
    }
}

/// One single-threaded pool per thread of Rayon's global pool, started once: their threads
/// live on, so that the memory their forward passes free stays with them for the next copy
/// (pools started per call: deletion + insertion of one image 490–578 ms over eight bench rows,
/// kept pools 439–585 ms, medians 527 and 462, on a noisy 2-core machine).
fn worker_pools() -> Result<&'static [rayon::ThreadPool]> {
    static POOLS: OnceLock<std::result::Result<Vec<rayon::ThreadPool>, String>> = OnceLock::new();
    POOLS
        .get_or_init(|| {
            (0..rayon::current_num_threads())
                .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| CamError::MetricInput(format!("cannot start the metric's worker threads: {e}")))
}

/// Checks that `maps` `[N, H, W]` go with `input` `[N, C, H, W]`.
pub(crate) fn check_maps(input: &Tensor<4>, maps: &Tensor<3>) -> Result<()> {
    let [batch, _, height, width] = input.dims();
    if batch == 0 {
        return Err(CamError::EmptyBatch);
    }
    if maps.dims() != [batch, height, width] {
        return Err(CamError::MetricInput(format!(
            "maps of shape {:?} do not go with an input of shape {:?}: one [H, W] map per image, at the input's size",
            maps.dims(),
            input.dims()
        )));
    }
    Ok(())
}
