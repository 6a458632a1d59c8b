//! Safety verdicts for the globals a pickle imports.
//!
//! Loading a pickle in Python imports and calls the globals it names; that is the whole attack
//! surface. ldmkit never does either, but users will load the same file elsewhere, so every
//! global gets a verdict: **allowed** (what `torch.load(weights_only=True)` accepts), **dangerous**
//! (known to run code or touch the system), or **unknown** (anything else: not proof of harm,
//! but `weights_only` loading will refuse it). Allowlist from torch's
//! `_weights_only_unpickler._get_allowed_globals`; denylist from picklescan/modelscan's
//! published lists (FORMATS.md §1.2.7).

use crate::dtype::DType;
use crate::value::Global;
use serde::Serialize;

/// How dangerous importing a global is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    Unknown,
    Dangerous,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Unknown => "unknown",
            Verdict::Dangerous => "dangerous",
        }
    }
}

/// Modules whose every member is dangerous (submodules included).
const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "socket",
    "shutil",
    "pty",
    "ctypes",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",
    "cPickle",
    "dill",
    "marshal",
    "code",
    "codeop",
    "commands",
    "webbrowser",
    "httplib",
    "http",
    "urllib",
    "urllib2",
    "requests",
    "aiohttp",
    "ftplib",
    "smtplib",
    "telnetlib",
    "asyncio",
    "multiprocessing",
    "threading",
    "_thread",
    "signal",
    "tempfile",
    "pathlib",
    "glob",
    "zipimport",
    "pydoc",
    "timeit",
    "profile",
    "cProfile",
    "pdb",
    "bdb",
    "trace",
    "platform",
    "uuid",
    "torch.hub",
    "numpy.f2py",
    "numpy.testing",
    "cloudpickle",
    "joblib",
    "_posixsubprocess",
    "posixpath",
    "ntpath",
    "types",
    "inspect",
    "gc",
    "weakref",
    "atexit",
];

/// Single dangerous members of otherwise ordinary modules.
const DANGEROUS_MEMBERS: &[(&str, &str)] = &[
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "open"),
    ("builtins", "getattr"),
    ("builtins", "setattr"),
    ("builtins", "delattr"),
    ("builtins", "__import__"),
    ("builtins", "apply"),
    ("builtins", "breakpoint"),
    ("builtins", "input"),
    ("builtins", "globals"),
    ("builtins", "locals"),
    ("builtins", "vars"),
    ("builtins", "memoryview"),
    ("builtins", "help"),
    ("__builtin__", "eval"),
    ("__builtin__", "exec"),
    ("__builtin__", "compile"),
    ("__builtin__", "open"),
    ("__builtin__", "getattr"),
    ("__builtin__", "setattr"),
    ("__builtin__", "__import__"),
    ("__builtin__", "apply"),
    ("__builtin__", "execfile"),
    ("__builtin__", "file"),
    ("operator", "attrgetter"),
    ("operator", "itemgetter"),
    ("operator", "methodcaller"),
    ("functools", "partial"),
    ("functools", "reduce"),
    ("torch", "load"),
    ("torch.serialization", "load"),
    ("torch._C", "_import_dotted_name"),
    ("torch.jit", "load"),
    ("torch.utils.cpp_extension", "load"),
    ("torch._dynamo", "eval_frame"),
    ("numpy", "load"),
    ("numpy.lib.npyio", "load"),
    ("code", "interact"),
];

/// Globals `torch.load(weights_only=True)` accepts (besides dtypes and storage classes).
const ALLOWED: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch", "device"),
    ("_codecs", "encode"),
    ("builtins", "bytearray"),
    ("builtins", "set"),
    ("builtins", "complex"),
    ("torch", "per_tensor_affine"),
    ("torch", "per_tensor_symmetric"),
    ("torch", "per_channel_affine"),
    ("torch", "per_channel_symmetric"),
    ("torch", "per_channel_affine_float_qparams"),
    ("torch", "strided"),
    ("torch", "sparse_coo"),
    ("torch", "sparse_csr"),
    ("torch", "sparse_csc"),
    ("torch", "sparse_bsr"),
    ("torch", "sparse_bsc"),
    ("torch", "_mkldnn"),
    ("torch.storage", "TypedStorage"),
    ("torch.storage", "UntypedStorage"),
    ("torch", "UntypedStorage"),
    ("torch", "TypedStorage"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"),
];

const LEGACY_TENSOR_CLASSES: &[&str] = &[
    "DoubleTensor",
    "FloatTensor",
    "HalfTensor",
    "BFloat16Tensor",
    "LongTensor",
    "IntTensor",
    "ShortTensor",
    "CharTensor",
    "ByteTensor",
    "BoolTensor",
];

/// Qualified names of the dangerous globals among `globals`, first seen first, once each:
/// what a refusal or a warning about a payload names.
pub fn dangerous_names<'a>(globals: impl IntoIterator<Item = &'a Global>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for g in globals {
        if verdict(g) == Verdict::Dangerous {
            let name = g.qualified();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The verdict for one global.
pub fn verdict(global: &Global) -> Verdict {
    let (m, n) = (global.module.as_str(), global.name.as_str());
    let in_module =
        |root: &str| m == root || m.starts_with(root) && m[root.len()..].starts_with('.');
    if DANGEROUS_MODULES.iter().any(|root| in_module(root))
        || DANGEROUS_MEMBERS.iter().any(|&(dm, dn)| dm == m && dn == n)
    {
        return Verdict::Dangerous;
    }
    if ALLOWED.iter().any(|&(am, an)| am == m && an == n) {
        return Verdict::Allowed;
    }
    if m == "torch" {
        let is_dtype = DType::from_torch_name(n).is_some_and(|d| d.torch_name() == n)
            || n.starts_with("uint") && n[4..].parse::<u8>().is_ok_and(|b| (1..=7).contains(&b))
            || n.starts_with("int") && n[3..].parse::<u8>().is_ok_and(|b| (1..=7).contains(&b));
        let is_storage = n.ends_with("Storage") && DType::from_storage_class(n).is_some();
        if is_dtype || is_storage || LEGACY_TENSOR_CLASSES.contains(&n) {
            return Verdict::Allowed;
        }
    }
    if m.starts_with("torch.cuda") && LEGACY_TENSOR_CLASSES.contains(&n) {
        return Verdict::Allowed;
    }
    Verdict::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(m: &str, n: &str) -> Verdict {
        verdict(&Global::new(m, n))
    }

    #[test]
    fn verdicts() {
        assert_eq!(v("torch._utils", "_rebuild_tensor_v2"), Verdict::Allowed);
        assert_eq!(v("torch", "FloatStorage"), Verdict::Allowed);
        assert_eq!(v("torch", "float8_e4m3fn"), Verdict::Allowed);
        assert_eq!(v("collections", "OrderedDict"), Verdict::Allowed);
        assert_eq!(v("os", "system"), Verdict::Dangerous);
        assert_eq!(v("os.path", "join"), Verdict::Dangerous);
        assert_eq!(v("posix", "system"), Verdict::Dangerous);
        assert_eq!(v("builtins", "eval"), Verdict::Dangerous);
        assert_eq!(v("builtins", "set"), Verdict::Allowed);
        assert_eq!(v("operator", "attrgetter"), Verdict::Dangerous);
        assert_eq!(v("operator", "add"), Verdict::Unknown);
        assert_eq!(v("functools", "partial"), Verdict::Dangerous);
        assert_eq!(v("ossify", "x"), Verdict::Unknown);
        assert_eq!(v("numpy.core.multiarray", "scalar"), Verdict::Unknown);
        assert_eq!(
            v(
                "pytorch_lightning.callbacks.model_checkpoint",
                "ModelCheckpoint"
            ),
            Verdict::Unknown
        );
    }
}
