//! Safety verdicts for the globals a pickle imports.
//!
//! Loading a pickle in Python imports and calls the globals it names; that is the whole attack
//! surface. ldmkit never does either, but users load the same file elsewhere, so every global
//! gets a verdict by **allowlist**, the one safe reference: a global is *allowed* only if
//! `torch.load(weights_only=True)` accepts it ([`allowlist`]). Lightning's and OmegaConf's
//! classes form a named extension for training checkpoints (*training*): accepted where the
//! user opts in (`scan --training`, and `graft`, which must keep a training file's own state),
//! never by default. Everything else is *not allowed*, whatever its name: "unknown" never reads
//! as harmless.
//!
//! The list of globals known to run code ([`known`]) only *explains* a verdict ("runs shell
//! commands", "loads a nested pickle"); it never permits anything.

mod allowlist;
mod known;
pub(crate) mod nested;

use crate::value::Global;
use serde::Serialize;

pub use allowlist::{
    is_training_extension, is_weights_only_allowed, weights_only_key, TRAINING_EXTENSION_NAME,
};
pub use known::explain;

/// Whether importing a global is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// `torch.load(weights_only=True)` accepts it.
    Allowed,
    /// Outside torch's allowlist, inside the opt-in training-checkpoint extension
    /// (Lightning's and OmegaConf's classes).
    Training,
    /// Neither: loading the file would import and call it.
    NotAllowed,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Training => "training",
            Verdict::NotAllowed => "not allowed",
        }
    }

    /// Whether the verdict passes, with or without the training extension.
    pub fn passes(self, training: bool) -> bool {
        match self {
            Verdict::Allowed => true,
            Verdict::Training => training,
            Verdict::NotAllowed => false,
        }
    }
}

/// The verdict for a global as its pickle writes it (torch's loader maps Python 2 names with
/// its own tables, and so does this).
pub fn verdict(global: &Global) -> Verdict {
    if is_weights_only_allowed(global) {
        Verdict::Allowed
    } else if is_training_extension(global) {
        Verdict::Training
    } else {
        Verdict::NotAllowed
    }
}

/// Qualified names of the globals among `globals` that `accept` does not pass, first seen
/// first, once each, with what each is known to do: what a refusal or a warning names.
pub fn refused_names<'a>(
    globals: impl IntoIterator<Item = &'a Global>,
    training: bool,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for g in globals {
        if !verdict(g).passes(training) {
            let name = describe(g);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// `module.name`, with what it is known to do in parentheses when we know.
pub fn describe(global: &Global) -> String {
    match explain(global) {
        Some(why) => format!("{} ({why})", global.qualified()),
        None => global.qualified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(m: &str, n: &str) -> Verdict {
        verdict(&Global::new(m, n))
    }

    #[test]
    fn verdicts_are_by_allowlist() {
        assert_eq!(v("torch._utils", "_rebuild_tensor_v2"), Verdict::Allowed);
        assert_eq!(v("torch", "FloatStorage"), Verdict::Allowed);
        assert_eq!(v("torch", "float8_e4m3fn"), Verdict::Allowed);
        assert_eq!(v("collections", "OrderedDict"), Verdict::Allowed);
        assert_eq!(v("builtins", "set"), Verdict::Allowed);
        assert_eq!(v("_codecs", "encode"), Verdict::Allowed);
        // Not on torch's list: not allowed, whether or not we know what it does.
        assert_eq!(v("os", "system"), Verdict::NotAllowed);
        assert_eq!(v("operator", "add"), Verdict::NotAllowed);
        assert_eq!(v("ossify", "x"), Verdict::NotAllowed);
        assert_eq!(v("numpy.core.multiarray", "scalar"), Verdict::NotAllowed);
        assert_eq!(v("torch", "load"), Verdict::NotAllowed);
        assert_eq!(v("torch.storage", "_load_from_bytes"), Verdict::NotAllowed);
        assert_eq!(v("torch", "FloatStorageX"), Verdict::NotAllowed);
        // torch's own spelling rules: canonical dtypes, no layouts as globals, no
        // `torch.UntypedStorage`, joined names, its Python 2 tables.
        assert_eq!(v("torch", "float"), Verdict::NotAllowed);
        assert_eq!(v("torch", "strided"), Verdict::NotAllowed);
        assert_eq!(v("torch", "UntypedStorage"), Verdict::NotAllowed);
        assert_eq!(v("torch.storage", "UntypedStorage"), Verdict::Allowed);
        assert_eq!(v("torch.cuda", "HalfStorage"), Verdict::Allowed);
        assert_eq!(v("torch.nn", "parameter.Parameter"), Verdict::Allowed);
        assert_eq!(v("__builtin__", "set"), Verdict::Allowed);
        assert_eq!(v("__builtin__", "long"), Verdict::Training);
        assert_eq!(v("__builtin__", "eval"), Verdict::NotAllowed);
        // The training extension is named, and never covers code.
        assert_eq!(v("omegaconf.dictconfig", "DictConfig"), Verdict::Training);
        assert_eq!(
            v("pytorch_lightning.utilities.cloud_io", "_load"),
            Verdict::NotAllowed
        );
    }

    #[test]
    fn refusals_explain_what_is_known() {
        let g = [
            Global::new("posix", "system"),
            Global::new("torch", "Size"),
            Global::new("my.module", "Thing"),
            Global::new("posix", "system"),
        ];
        let names = refused_names(g.iter(), false);
        assert_eq!(names.len(), 2);
        assert!(names[0].starts_with("posix.system ("), "{names:?}");
        assert_eq!(names[1], "my.module.Thing");
    }
}
