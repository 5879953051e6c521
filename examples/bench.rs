//! Cost of an explanation against a forward pass; run through `cargo xtask bench`.
//!
//! Prints one JSON object per row on stdout: model, batch, backend, method, forward_ms,
//! explain_ms (medians after warm-up), ratio, and the peak host heap of an explanation.
//!
//! With `--metrics deletion-insertion`, a row per layer and batch also times torch-cam's
//! deletion + insertion curves (20 steps, zero baseline) of the Grad-CAM map against a forward
//! pass (`method` names the metric, `explain_ms` is the metric's time).
//!
//! The bundled MobileNetV2 runs two ways: compiled at build time (`mobilenet_v2`) and loaded
//! from the same ONNX file at run time by `ember-runtime` (`mobilenet_v2 (run-time)`).

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use ember_cam::metrics::DeletionInsertion;
use ember_cam::models::mobilenet_v2;
use ember_cam::vocabulary::value_parser;
use ember_cam::{CamModel, ClassTarget, Explainer, Method, burn, device_named};
use ember_runtime::OnnxModel;

/// Counts live and peak heap bytes, so a row can report the memory an explanation needs. The
/// memory itself comes from mimalloc set up as in the `ember` command (freed memory kept for
/// the next pass: the system allocator, or mimalloc's default, hand large tensor buffers back to
/// the system, and faulting their pages in again cost 8–19 % of a pass here).
struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[derive(Parser)]
struct Args {
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "flex")]
    backends: Vec<String>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batches: Vec<usize>,
    /// Methods.
    #[arg(long, value_delimiter = ',', default_value = "gradcam", value_parser = value_parser::<Method>())]
    methods: Vec<Method>,
    /// Timed runs per row (after 3 warm-up runs).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// The explained layers, as MobileNetV2 block indices (`features[i]`, the block's output):
    /// 18 is the last block (7×7), 13 a 14×14 block, 4 a 28×28 one, 1 a 112×112 one.
    #[arg(long, value_delimiter = ',', default_value = "18")]
    layers: Vec<usize>,
    /// Warm-up pairs before the timed runs.
    #[arg(long, default_value_t = 3)]
    warmups: usize,
    /// Faithfulness metrics to time as well: `deletion-insertion` (20 steps, on the Grad-CAM map).
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// How the model runs: build-time (compiled by burn-onnx), run-time (ember-runtime).
    #[arg(long, value_delimiter = ',', default_value = "build-time,run-time")]
    models: Vec<String>,
}

/// Medians (ms) of `forward` and `explain`, timed alternately — forward, explain, forward, … —
/// after `warmups` warm-up pairs, so that both see the same machine state (on a shared machine a
/// block of forwards and a later block of explanations can differ by 20 % from load alone).
/// With `settle`, each timed forward follows an untimed one.
/// Each call ends with a read back to the host, so asynchronous backends are timed to completion.
fn paired_medians_ms(
    (warmups, runs, settle): (usize, usize, bool),
    mut forward: impl FnMut(),
    mut explain: impl FnMut(),
) -> (f64, f64) {
    let time = |call: &mut dyn FnMut()| {
        let start = Instant::now();
        call();
        start.elapsed().as_secs_f64() * 1e3
    };
    for _ in 0..warmups {
        forward();
        explain();
    }
    let (mut forwards, mut explains): (Vec<f64>, Vec<f64>) = (0..runs)
        .map(|_| {
            if settle {
                forward();
            }
            (time(&mut forward), time(&mut explain))
        })
        .unzip();
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    (median(&mut forwards), median(&mut explains))
}

/// `mi_option_purge_delay` (mimalloc.h), as in the `ember` command.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

fn main() {
    // SAFETY: sets one of mimalloc's integer options; -1 keeps freed memory.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let args = Args::parse();
    for backend in &args.backends {
        let device = device_named(backend).unwrap_or_else(|e| {
            eprintln!("error: {e} (see `cargo xtask bench --help`)");
            std::process::exit(1);
        });
        for kind in &args.models {
            match kind.as_str() {
                "build-time" => rows(
                    &args,
                    (backend, &device),
                    "mobilenet_v2",
                    &mobilenet_v2::Model::from_embedded(&device),
                ),
                "run-time" => {
                    let model = OnnxModel::load("models/mobilenet_v2.onnx", &device).unwrap_or_else(|e| {
                        eprintln!("error: {e}");
                        std::process::exit(1);
                    });
                    rows(&args, (backend, &device), "mobilenet_v2 (run-time)", &model)
                }
                other => {
                    eprintln!("error: unknown model kind `{other}`; expected build-time or run-time");
                    std::process::exit(1);
                }
            }
        }
        if args.models.iter().any(|m| m == "build-time") && args.models.iter().any(|m| m == "run-time") {
            executor_rows(&args, (backend, &device));
        }
    }
}

/// The run-time executor's forward pass against the build-time model's on the same input, timed
/// alternately (one, the other, …) so that the ratio is not the machine's drift between two
/// blocks of runs: one row per batch size.
fn executor_rows(args: &Args, (backend, device): (&str, &Device)) {
    let build_time = mobilenet_v2::Model::from_embedded(device);
    let run_time = OnnxModel::load("models/mobilenet_v2.onnx", device).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    for &batch in &args.batches {
        let input = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), device);
        let forward = |model: &dyn Fn(Tensor<4>) -> Tensor<2>| {
            let _ = model(input.clone()).try_into_vec_as::<f32>();
        };
        let (build_ms, run_ms) = paired_medians_ms(
            (args.warmups, args.runs, false),
            || forward(&|x| CamModel::forward(&build_time, x).unwrap()),
            || forward(&|x| CamModel::forward(&run_time, x).unwrap()),
        );
        println!(
            "{{\"model\": \"mobilenet_v2: run-time executor vs build-time\", \"batch\": {batch}, \"backend\": \"{backend}\", \
             \"build_time_forward_ms\": {build_ms:.2}, \"run_time_forward_ms\": {run_ms:.2}, \"ratio\": {:.3}}}",
            run_ms / build_ms
        );
    }
}

/// The tap of MobileNetV2's block `features[block]`: the last layer inside it.
fn block_layer<M: CamModel>(model: &M, block: usize) -> String {
    let prefix = format!("/features/features.{block}/");
    model
        .layers()
        .iter()
        .rev()
        .find(|layer| layer.name.starts_with(&prefix))
        .map(|layer| layer.name.clone())
        .unwrap_or_else(|| {
            eprintln!("error: MobileNetV2 has no block {block} (0–18)");
            std::process::exit(1);
        })
}

/// The rows of one model on one backend: every layer, batch size and method.
fn rows<M: CamModel<Output = Tensor<2>> + Sync>(
    args: &Args,
    (backend, device): (&str, &Device),
    name: &str,
    model: &M,
) {
    for &block in &args.layers {
        let layer = block_layer(model, block);
        for &batch in &args.batches {
            block_rows(args, (backend, device), (name, model), (block, &layer), batch);
        }
    }
}

/// The rows of one layer and batch size: every method.
fn block_rows<M: CamModel<Output = Tensor<2>> + Sync>(
    args: &Args,
    (backend, device): (&str, &Device),
    (name, model): (&str, &M),
    (block, layer): (usize, &str),
    batch: usize,
) {
    {
        let input = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), device);
        let forward = || {
            let logits = model.forward(input.clone()).unwrap();
            let _ = logits.try_into_vec_as::<f32>();
        };
        for &method in &args.methods {
            let explainer = Explainer::from(method).layer(layer);
            let explain = || {
                let explanation = explainer.explain(model, input.clone(), &ClassTarget::TopClass).unwrap();
                let _ = explanation.maps.try_into_vec_as::<f32>();
            };
            let (forward_ms, explain_ms) = paired_medians_ms((args.warmups, args.runs, false), forward, explain);
            PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
            let before = LIVE.load(Ordering::Relaxed);
            explain();
            let peak_mib = (PEAK.load(Ordering::Relaxed) - before) as f64 / (1024.0 * 1024.0);
            println!(
                "{{\"model\": \"{name}\", \"layer\": \"features[{block}]\", \"batch\": {batch}, \"backend\": \"{backend}\", \
                 \"method\": \"{method}\", \
                 \"forward_ms\": {forward_ms:.2}, \"explain_ms\": {explain_ms:.2}, \"ratio\": {:.3}, \"peak_heap_mib\": {peak_mib:.1}}}",
                explain_ms / forward_ms
            );
        }
        for metric in &args.metrics {
            if metric != "deletion-insertion" {
                eprintln!("error: unknown metric `{metric}`; expected deletion-insertion");
                std::process::exit(1);
            }
            let maps = Explainer::from(Method::GradCam)
                .layer(layer)
                .explain(model, input.clone(), &ClassTarget::TopClass)
                .unwrap()
                .maps;
            let curves = DeletionInsertion::default();
            let evaluate = || {
                let scores = curves.evaluate(model, &input, &maps, &ClassTarget::TopClass).unwrap();
                assert_eq!(scores.deletion_auc.len(), batch);
            };
            // The forward pass is timed right after an untimed one: the metric's copies run on
            // worker threads of their own, and the forward straight after it found flex's
            // thread pool asleep (20–60 % slower than a forward after a forward here), which
            // would flatter the ratio.
            let (forward_ms, metric_ms) = paired_medians_ms((args.warmups, args.runs, true), forward, evaluate);
            println!(
                "{{\"model\": \"{name}\", \"layer\": \"features[{block}]\", \"batch\": {batch}, \"backend\": \"{backend}\", \
                 \"method\": \"deletion+insertion, {} steps (gradcam map)\", \
                 \"forward_ms\": {forward_ms:.2}, \"explain_ms\": {metric_ms:.2}, \"ratio\": {:.3}}}",
                curves.steps,
                metric_ms / forward_ms
            );
        }
    }
}
