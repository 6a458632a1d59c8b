//! Trainable building blocks on candle: weights by index ([`params`]), layers with a correct
//! backward ([`layers`], [`conv`], [`norm`], [`attention`]) and block-wise recomputation
//! ([`recompute`]).

pub mod attention;
pub mod conv;
pub mod layers;
pub mod linear;
pub mod norm;
pub mod params;
pub mod profile;
pub mod recompute;
pub mod tensor_op;
