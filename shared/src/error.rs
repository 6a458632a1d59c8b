//! Errors of ldmkit-core.
//!
//! One variant per layer that can reject input, each with a message that says what is wrong
//! and where (byte offsets, entry names, tensor names). The CLI prefixes the file name, so a
//! user sees one line: `error: FILE: what is wrong`.

/// Everything that can go wrong while reading or rewriting a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying source could not be read.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The output could not be written (disk full, quota, file too large, permissions): an
    /// error of the sink, never of an input.
    #[error("writing failed: {0}")]
    Write(std::io::Error),
    /// The bytes are not any checkpoint format we know (says what they look like instead).
    #[error("{0}")]
    UnknownFormat(String),
    /// A zip container is malformed or unsupported.
    #[error("zip: {0}")]
    Zip(String),
    /// A pickle stream is malformed, or does something a checkpoint never does.
    #[error("pickle: {message} (at pickle byte {offset})")]
    Pickle { offset: u64, message: String },
    /// A hard limit protecting memory and time was hit (hostile or absurd input).
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The torch object structure is inconsistent (storages, views, dtypes).
    #[error("{0}")]
    Torch(String),
    /// A safetensors header breaks the format's rules.
    #[error("safetensors: {0}")]
    Safetensors(String),
    /// An operation cannot be applied to these inputs (missing keys, mismatched shapes).
    #[error("{0}")]
    Op(String),
    /// A recipe does not parse or names something that does not exist.
    #[error("recipe: {0}")]
    Recipe(String),
    /// The user cancelled a running plan.
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn zip(msg: impl Into<String>) -> Self {
        Error::Zip(msg.into())
    }

    pub(crate) fn torch(msg: impl Into<String>) -> Self {
        Error::Torch(msg.into())
    }

    pub(crate) fn op(msg: impl Into<String>) -> Self {
        Error::Op(msg.into())
    }

    pub(crate) fn recipe(msg: impl Into<String>) -> Self {
        Error::Recipe(msg.into())
    }
}
