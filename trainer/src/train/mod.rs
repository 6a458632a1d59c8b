//! Full-UNet fine-tuning on pre-encoded data (`ldmkit train`, `ldmkit export`).
//!
//! The network is our own ([`unet`], on [`nn`]'s differentiable layers, recomputation and
//! memory-bounded attention); the objective, optimizer and EMA reproduce CompVis' recipe
//! ([`schedule`], [`optim`], [`ema`]); a run folder ([`checkpoint`], [`log`], [`preview`])
//! holds everything needed to resume exactly and to export a release.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod ema;
pub mod learner;
pub mod log;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod preview;
pub mod rng;
pub mod schedule;
pub mod trainer;
pub mod unet;
