//! Trainable building blocks on candle: weights by index ([`params`]), layers with a correct
//! backward ([`layers`], [`conv`], [`attention`]) and block-wise recomputation
//! ([`recompute`]).

pub mod attention;
pub mod conv;
pub mod layers;
pub mod params;
pub mod recompute;
