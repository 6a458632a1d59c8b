//! Containers: the byte-level file formats that hold checkpoints.
//!
//! `zip` is the archive torch has written since 1.6; `detect` tells formats apart from their
//! first bytes. The torch- and safetensors-specific readers that build on these live in
//! [`crate::torch`] and [`crate::safetensors`].

pub mod detect;
pub mod zip;
