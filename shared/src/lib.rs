//! # ldmkit-core
//!
//! Read, inspect and rewrite Stable Diffusion checkpoints without executing them.
//!
//! Data flows one way: a [`Source`](source::Source) of bytes → a container reader (torch zip,
//! legacy torch, safetensors; chosen by [`detect`](container::detect::detect) from content) →
//! a [`Checkpoint`]: the object tree ([`value`]) with tensors as references
//! ([`tensor::TensorRef`]) and every imported global recorded → a [`Report`] with components,
//! architecture, Lightning metadata and safety verdicts.
//!
//! ```
//! use ldmkit_core::{Checkpoint, Report, source::MemSource};
//! use std::sync::Arc;
//!
//! // A safetensors file with one 2x2 float32 tensor.
//! let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
//! let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
//! bytes.extend_from_slice(header);
//! bytes.extend_from_slice(&[0u8; 16]);
//! let ckpt = Checkpoint::open(Arc::new(MemSource::new(bytes))).unwrap();
//! let report = Report::new(&ckpt).unwrap();
//! assert_eq!(report.tensors[0].name, "w");
//! assert_eq!(report.tensors[0].shape, vec![2, 2]);
//! ```
//!
//! Nothing here does platform I/O beyond the native [`source::FileSource`]; the crate builds
//! for `wasm32-unknown-unknown`, where the browser supplies its own source.

pub mod adapter;
pub mod analysis;
pub mod checkpoint;
pub mod container;
pub mod dtype;
pub mod error;
pub mod hash;
pub mod layout;
pub mod model;
pub mod ops;
pub mod pickle;
pub mod plan;
pub mod recipe;
pub mod report;
pub mod safetensors;
pub mod safety;
pub mod scan;
pub mod source;
pub mod tensor;
pub mod torch;
pub mod units;
pub mod value;
pub mod write;

pub use checkpoint::{Checkpoint, NamedTensor};
pub use container::detect::Format;
pub use dtype::DType;
pub use error::{Error, Result};
pub use report::Report;
