//! Captions to token ids.

pub mod tokenizer;
