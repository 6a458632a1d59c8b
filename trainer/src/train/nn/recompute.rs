//! Running the network block by block, either keeping every block's autograd graph (plain
//! training) or keeping only each block's inputs and recomputing the block during the
//! backward pass (activation recomputation, "gradient checkpointing", as CompVis'
//! `use_checkpoint` does for every ResBlock and transformer).
//!
//! candle has no checkpointing (TRAINER-FACTS §1.3), so the backward is driven here: the
//! network's forward is written once against [`Runner`]; [`Recompute`] records each block
//! as a closure with detached inputs, and [`Recompute::backward`] walks the blocks in reverse,
//! re-runs each on fresh leaf copies of its inputs, seeds autograd with the output's gradient
//! (`Σ y ⊙ dy` has gradient `dy` with respect to `y`), and passes the input gradients on.
//! Only one block's graph exists at any time.

use candle_core::{DType, Result, Tensor, TensorId, Var};
use std::collections::{HashMap, HashSet};

/// One block: outputs from inputs (weights and constants such as the text states are
/// captured by the closure).
pub type Block<'a> = Box<dyn Fn(&[Tensor]) -> Result<Tensor> + 'a>;

pub trait Runner<'a> {
    /// Run `block` (named `label` for profiles) on `inputs`.
    fn run(&mut self, label: &'static str, inputs: &[&Tensor], block: Block<'a>) -> Result<Tensor>;
}

/// Every block runs once and keeps its graph: one `backward()` from the loss does the rest.
pub struct Plain;

impl<'a> Runner<'a> for Plain {
    fn run(&mut self, _: &'static str, inputs: &[&Tensor], block: Block<'a>) -> Result<Tensor> {
        let inputs: Vec<Tensor> = inputs.iter().map(|&t| t.clone()).collect();
        block(&inputs)
    }
}

struct Entry<'a> {
    block: Block<'a>,
    inputs: Vec<Tensor>,
    output: TensorId,
    /// Profile key: label and the output's spatial size.
    key: (&'static str, usize),
}

/// Blocks recorded for recomputation.
#[derive(Default)]
pub struct Recompute<'a> {
    entries: Vec<Entry<'a>>,
    /// Values some block produced (the only ones that need a gradient).
    produced: HashSet<TensorId>,
    /// With [`Recompute::profiled`]: seconds of forward and of recompute+backward per block
    /// kind, each block synchronised (slower; for the benchmark's breakdown).
    pub profile: Option<std::collections::BTreeMap<(&'static str, usize), [f64; 3]>>,
}

impl<'a> Recompute<'a> {
    pub fn profiled() -> Self {
        Recompute {
            profile: Some(Default::default()),
            ..Default::default()
        }
    }

    fn timed<T>(&self, t: &Tensor, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
        if self.profile.is_none() {
            return Ok((f()?, 0.0));
        }
        t.device().synchronize()?;
        let start = std::time::Instant::now();
        let out = f()?;
        t.device().synchronize()?;
        Ok((out, start.elapsed().as_secs_f64()))
    }
}

impl<'a> Runner<'a> for Recompute<'a> {
    fn run(&mut self, label: &'static str, inputs: &[&Tensor], block: Block<'a>) -> Result<Tensor> {
        let inputs: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
        let (output, secs) = self.timed(&inputs[0], || Ok(block(&inputs)?.detach()))?;
        let key = (label, output.dims().last().copied().unwrap_or(0));
        if let Some(p) = &mut self.profile {
            let e = p.entry(key).or_default();
            e[0] += secs;
            e[2] += 1.0;
        }
        self.produced.insert(output.id());
        self.entries.push(Entry {
            block,
            inputs,
            output: output.id(),
            key,
        });
        Ok(output)
    }
}

/// Take the gradient of `t` out of `store`, cut from the graph: candle detaches the
/// gradients of inner nodes but not those of leaves, which stay attached to the backward
/// computation (the weights it multiplied by). Kept attached, they hold that graph alive
/// and a later backward through them would differentiate the weights a second time.
pub fn take(store: &mut candle_core::backprop::GradStore, t: &Tensor) -> Option<Tensor> {
    store.remove(t).map(|g| g.detach())
}

/// Per-parameter gradient sums (f32), over blocks, micro-batches and passes.
pub struct Gradients {
    pub sums: Vec<Option<Tensor>>,
}

impl Gradients {
    pub fn new(n: usize) -> Gradients {
        Gradients {
            sums: vec![None; n],
        }
    }

    /// Add what `store` holds for each of `vars`.
    pub fn add(
        &mut self,
        vars: &[Var],
        store: &mut candle_core::backprop::GradStore,
    ) -> Result<()> {
        for (sum, var) in self.sums.iter_mut().zip(vars) {
            if let Some(g) = take(store, var.as_tensor()) {
                let g = g.to_dtype(DType::F32)?;
                *sum = Some(match sum.take() {
                    Some(s) => (s + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }
}

impl<'a> Recompute<'a> {
    /// Back-propagate `grad` (the gradient of the loss with respect to `output`, the last
    /// block's output) through every block, adding parameter gradients to `into`.
    pub fn backward(
        &mut self,
        output: &Tensor,
        grad: Tensor,
        vars: &[Var],
        into: &mut Gradients,
    ) -> Result<()> {
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(output.id(), grad);
        while let Some(entry) = self.entries.pop() {
            let Some(dy) = grads.remove(&entry.output) else {
                continue;
            };
            let probe = dy.clone();
            let (_, secs) = self.timed(&probe, || {
                self.backward_one(&entry, dy, vars, into, &mut grads)
            })?;
            if let Some(p) = &mut self.profile {
                p.entry(entry.key).or_default()[1] += secs;
            }
        }
        Ok(())
    }

    /// Recompute one block and back-propagate `dy` through it.
    fn backward_one(
        &self,
        entry: &Entry<'a>,
        dy: Tensor,
        vars: &[Var],
        into: &mut Gradients,
        grads: &mut HashMap<TensorId, Tensor>,
    ) -> Result<()> {
        let leaves: Vec<Option<Var>> = entry
            .inputs
            .iter()
            .map(|t| {
                self.produced
                    .contains(&t.id())
                    .then(|| Var::from_tensor(t))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let inputs: Vec<Tensor> = entry
            .inputs
            .iter()
            .zip(&leaves)
            .map(|(t, l)| {
                l.as_ref()
                    .map_or_else(|| t.clone(), |v| v.as_tensor().clone())
            })
            .collect();
        let y = (entry.block)(&inputs)?;
        let mut store = (y * dy)?.sum_all()?.backward()?;
        for (t, leaf) in entry.inputs.iter().zip(&leaves) {
            let Some(leaf) = leaf else { continue };
            if let Some(g) = take(&mut store, leaf.as_tensor()) {
                let g = match grads.remove(&t.id()) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                grads.insert(t.id(), g);
            }
        }
        into.add(vars, &mut store)?;
        Ok(())
    }
}
