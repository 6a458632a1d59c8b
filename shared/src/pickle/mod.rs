//! A non-executing pickle machine.
//!
//! Python's unpickler imports and calls whatever a pickle names; that is how a checkpoint runs
//! code. This machine interprets every opcode of protocols 0–5 but never imports or calls
//! anything: a `GLOBAL` becomes a [`Value::Global`](crate::value::Value), a `REDUCE` an opaque
//! [`Object`](crate::value::Object) — unless a [`Hooks`] implementation recognises the callable
//! (torch's tensor rebuild functions) and builds a typed value instead. Every import is
//! recorded for the safety report. Hard [`Limits`] bound memory and work, so hostile input
//! ends in an error, not a crash, hang or huge allocation.
//!
//! Why our own: `serde-pickle` rejects unknown globals and has no hooks; candle's `pickle.rs`
//! supports only what its loader needs and reports problems without offsets. A scanner must
//! read *everything* (so it sees every import) while executing nothing.

mod bigint;
mod limits;
mod machine;
mod py2;
mod text;
mod writer;

pub use bigint::{bigint_to_decimal, bigint_to_i64};
pub use limits::Limits;
pub use machine::{DefaultHooks, Hooks, Import, Unpickler};
pub use writer::Pickler;
