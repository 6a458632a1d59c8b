//! The page: open checkpoints, see what is in them, rewrite them, download the result.
//!
//! State lives in signals; every heavy step is a request to the engine worker
//! ([`worker::Engine`]). The current recipe is always in the URL fragment, so the address bar
//! is the share link.

mod actions;
mod adapter;
mod diff;
mod inputs;
mod keys;
mod stats;
mod summary;
mod view;
mod worker;

pub use view::App;
