//! Writers: turn a rewritten checkpoint into [`Plan`](crate::plan::Plan)s, one per file.

pub mod diffusers;
pub mod safetensors;
pub mod torch_zip;
pub mod zip;
