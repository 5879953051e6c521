//! Layer taps: the one place where activations and their gradients are captured.
//!
//! A tap is an identity on the forward pass. While an explanation runs (a [`TapSession`] is
//! alive on the current thread) and the tap's name is armed, it adds a zero "probe" tensor that
//! requires a gradient: `y = a + p` with `p = 0`, so `y == a` and `∂score/∂p == ∂score/∂a`
//! exactly. Because the probe is the only tensor that requires a gradient, autodiff records only
//! the operations downstream of the earliest armed tap: the layers before it run on the plain
//! backend and parameters never receive gradients. For a model whose parameters live on an
//! autodiff device, the tap cuts the activation from the graph before adding the probe, so the
//! layers before it are not differentiated either. (Burn's autodiff still records those layers,
//! their parameters being tracked, and keeps that record until the next backward pass through
//! the parameters — the next training step. Explain `model.valid()` when none follows, as
//! `ember-train` does.)
//!
//! Unarmed, a tap costs one thread-local lookup. The session is a guard: when it is dropped
//! (normally, on an error or in a panic) every capture is released, so no state survives an
//! explanation call.

use std::cell::RefCell;
use std::marker::PhantomData;

use burn::module::Module;
use burn::tensor::Tensor;

use crate::error::{CamError, Result};
use crate::layout::Layout;

/// A named tap to place between two layers of a Burn model.
///
/// ```
/// use burn::prelude::*;
/// use ember_core::LayerTap;
///
/// #[derive(Module, Debug)]
/// struct Net {
///     conv: burn::nn::conv::Conv2d,
///     features: LayerTap,
/// }
///
/// impl Net {
///     fn forward(&self, x: Tensor<4>) -> Tensor<4> {
///         self.features.forward(self.conv.forward(x))
///     }
/// }
/// ```
#[derive(Module, Debug)]
pub struct LayerTap {
    #[module(skip)]
    name: String,
}

impl LayerTap {
    /// A tap addressed by `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The name the explainer addresses this tap by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Identity; records the activation when an explanation has armed this tap.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        tap(&self.name, x)
    }
}

/// What one armed tap captured during a forward pass.
pub(crate) struct Capture {
    pub name: String,
    /// The activation, without autodiff.
    pub activation: Tensor<4>,
    /// The zero probe whose gradient is ∂score/∂activation (none when gradients are not wanted).
    pub probe: Option<Tensor<4>>,
}

/// Everything the taps saw during one forward pass.
#[derive(Default)]
pub(crate) struct Recording {
    /// The armed taps and the layout each one's activation has.
    armed: Vec<(String, Layout)>,
    /// Whether gradients are wanted: without, taps only record (no probe, no autodiff).
    probe: bool,
    /// A tap whose output is replaced (perturbation methods' altered copies, `[M, K, h, w]`).
    substitute: Option<(String, Layout, Tensor<4>)>,
    /// Names of every tap the forward pass went through, armed or not, in order.
    pub seen: Vec<String>,
    pub captures: Vec<Capture>,
    /// Whether the substitute was used.
    pub substituted: bool,
    /// Whether [`crate::relu`] applies Guided Backpropagation's ReLU.
    guided: bool,
    /// How many guided ReLUs the forward pass went through.
    pub guided_relus: usize,
    /// The first problem met by an armed tap, reported after the forward pass.
    pub problem: Option<CamError>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

/// Arms taps on the current thread for the lifetime of the guard.
pub(crate) struct TapSession {
    // Thread-bound: the recording lives in a thread-local.
    _not_send: PhantomData<*const ()>,
}

impl TapSession {
    /// Arms the named taps, each with the layout of its activation, with probes for gradients
    /// when `probe`. Fails if an explanation already runs on this thread.
    pub fn arm(layers: &[(String, Layout)], probe: bool) -> Result<Self> {
        ACTIVE.with(|active| {
            let mut active = active.borrow_mut();
            if active.is_some() {
                return Err(CamError::NestedExplanation);
            }
            *active = Some(Recording {
                armed: layers.to_vec(),
                probe,
                ..Recording::default()
            });
            Ok(Self { _not_send: PhantomData })
        })
    }

    /// Replaces the output of the tap `layer` (laid out as `layout`) by `activations`
    /// (`[M, K, h, w]`, any batch size) for the session: the model after the tap runs on them,
    /// the part before it on the input as it is.
    pub fn substituting(layer: &str, layout: Layout, activations: Tensor<4>) -> Result<Self> {
        ACTIVE.with(|active| {
            let mut active = active.borrow_mut();
            if active.is_some() {
                return Err(CamError::NestedExplanation);
            }
            *active = Some(Recording {
                substitute: Some((layer.to_owned(), layout, activations)),
                ..Recording::default()
            });
            Ok(Self { _not_send: PhantomData })
        })
    }

    /// Makes [`crate::relu`] Guided Backpropagation's ReLU for the session; no tap is armed.
    pub fn guided() -> Result<Self> {
        ACTIVE.with(|active| {
            let mut active = active.borrow_mut();
            if active.is_some() {
                return Err(CamError::NestedExplanation);
            }
            *active = Some(Recording {
                guided: true,
                ..Recording::default()
            });
            Ok(Self { _not_send: PhantomData })
        })
    }

    /// Ends the session and hands over what was captured.
    pub fn finish(self) -> Recording {
        ACTIVE.with(|active| active.borrow_mut().take()).unwrap_or_default()
    }
}

impl Drop for TapSession {
    fn drop(&mut self) {
        // `try_with`: the thread-local may already be gone when a thread is torn down.
        let _ = ACTIVE.try_with(|active| active.borrow_mut().take());
    }
}

/// Whether a guided pass runs on this thread; if so, the ReLU asking is counted.
pub(crate) fn guided_relu_requested() -> bool {
    ACTIVE.with(|active| match active.borrow_mut().as_mut() {
        Some(recording) if recording.guided => {
            recording.guided_relus += 1;
            true
        }
        _ => false,
    })
}

/// The input a model's network runs on, for a [`crate::CamModel`] whose parameters may live on
/// an autodiff device: without autodiff (nothing before the first tap is differentiated), except
/// during Guided Backpropagation, which differentiates the score with respect to the input.
/// Generated ONNX models call it.
pub fn network_input<const D: usize>(input: Tensor<D>) -> Tensor<D> {
    let guided = ACTIVE.with(|active| active.borrow().as_ref().is_some_and(|recording| recording.guided));
    if guided { input } else { input.inner() }
}

/// Whether an explanation records taps on this thread: when none does, every tap is the
/// identity, and an interpreter can pass values by without presenting them to [`tap`].
pub fn recording() -> bool {
    ACTIVE.with(|active| active.borrow().is_some())
}

/// The tap itself: identity unless `name` is armed by the running explanation.
///
/// Generated ONNX models call this directly; native models go through [`LayerTap`].
pub fn tap<const D: usize>(name: &str, x: Tensor<D>) -> Tensor<D> {
    ACTIVE.with(|active| {
        let mut active = active.borrow_mut();
        let Some(recording) = active.as_mut() else {
            return x;
        };
        recording.seen.push(name.to_owned());
        let substitute = recording
            .substitute
            .as_ref()
            .filter(|(layer, ..)| layer == name)
            .map(|(_, layout, activations)| (*layout, activations.clone()));
        let layout = match &substitute {
            Some((layout, _)) => *layout,
            None => match recording.armed.iter().find(|(armed, _)| armed == name) {
                Some((_, layout)) => *layout,
                None => return x,
            },
        };
        let dims = x.dims();
        let Some(activation) = layout.to_spatial(x.clone()) else {
            recording.problem.get_or_insert(CamError::NotSpatial {
                layer: name.to_owned(),
                shape: dims.to_vec(),
                layout,
            });
            return x;
        };
        if let Some((_, substitute)) = substitute {
            recording.substituted = true;
            return layout.spatial_back(substitute, &x);
        }
        if recording.captures.iter().any(|c| c.name == name) {
            recording
                .problem
                .get_or_insert(CamError::TapReachedTwice(name.to_owned()));
            return x;
        }
        if !recording.probe {
            // Activations alone (EigenCAM): the forward pass stays a plain forward pass.
            recording.captures.push(Capture {
                name: name.to_owned(),
                activation: activation.inner(),
                probe: None,
            });
            return x;
        }
        // At the earliest armed tap, the graph starts afresh: a model on an autodiff device (in
        // training) tracks its activations back to its parameters, and the layers before the
        // tap must not be differentiated, whatever device the parameters live on. Later taps
        // keep the lineage: the earlier probes' gradients flow through them.
        let lineage = if recording.captures.is_empty() {
            x.inner().autodiff()
        } else {
            x.autodiff()
        };
        let Some(spatial) = layout.to_spatial(lineage.clone()) else {
            return lineage;
        };
        let probe = Tensor::<4>::zeros(spatial.dims(), &spatial.device()).require_grad();
        let probed = spatial + probe.clone();
        recording.captures.push(Capture {
            name: name.to_owned(),
            activation: activation.inner(),
            probe: Some(probe),
        });
        // Tokens a layout skips (a class token) pass on unprobed, with their lineage.
        layout.spatial_back(probed, &lineage)
    })
}
