//! What `torch.load(weights_only=True)` accepts, and the named training-checkpoint extension.
//!
//! The allowlist is torch 2.9's `_weights_only_unpickler._get_allowed_globals`: a handful of
//! containers and helpers, every dtype (`str(dtype)`), tensor and storage class, quantization
//! scheme and layout, and the tensor rebuild functions. Nothing else loads with
//! `weights_only=True`, so nothing else is allowed here.

use crate::value::Global;

/// `_get_allowed_globals()` of torch 2.9.1, all 144 keys (fixed entries, dtypes by
/// `str(dtype)`, tensor and storage classes, quantization schemes, rebuild functions), as
/// the loader spells them. It matches the joined `module.name` string exactly: dtype aliases
/// (`torch.float`), layouts as globals and `torch.UntypedStorage` are all refused.
const ALLOWED: &[&str] = &[
    "collections.OrderedDict",
    "collections.Counter",
    "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.set",
    "builtins.complex",
    "torch.bfloat16",
    "torch.bits16",
    "torch.bits1x8",
    "torch.bits2x4",
    "torch.bits4x2",
    "torch.bits8",
    "torch.bool",
    "torch.complex128",
    "torch.complex32",
    "torch.complex64",
    "torch.float16",
    "torch.float32",
    "torch.float4_e2m1fn_x2",
    "torch.float64",
    "torch.float8_e4m3fn",
    "torch.float8_e4m3fnuz",
    "torch.float8_e5m2",
    "torch.float8_e5m2fnuz",
    "torch.float8_e8m0fnu",
    "torch.int1",
    "torch.int16",
    "torch.int2",
    "torch.int3",
    "torch.int32",
    "torch.int4",
    "torch.int5",
    "torch.int6",
    "torch.int64",
    "torch.int7",
    "torch.int8",
    "torch.qint32",
    "torch.qint8",
    "torch.quint2x4",
    "torch.quint4x2",
    "torch.quint8",
    "torch.uint1",
    "torch.uint16",
    "torch.uint2",
    "torch.uint3",
    "torch.uint32",
    "torch.uint4",
    "torch.uint5",
    "torch.uint6",
    "torch.uint64",
    "torch.uint7",
    "torch.uint8",
    "torch.BFloat16Tensor",
    "torch.BoolTensor",
    "torch.ByteTensor",
    "torch.CharTensor",
    "torch.DoubleTensor",
    "torch.FloatTensor",
    "torch.HalfTensor",
    "torch.IntTensor",
    "torch.LongTensor",
    "torch.ShortTensor",
    "torch.cuda.BFloat16Tensor",
    "torch.cuda.BoolTensor",
    "torch.cuda.ByteTensor",
    "torch.cuda.CharTensor",
    "torch.cuda.DoubleTensor",
    "torch.cuda.FloatTensor",
    "torch.cuda.HalfTensor",
    "torch.cuda.IntTensor",
    "torch.cuda.LongTensor",
    "torch.cuda.ShortTensor",
    "torch.cuda.sparse.BFloat16Tensor",
    "torch.cuda.sparse.ByteTensor",
    "torch.cuda.sparse.CharTensor",
    "torch.cuda.sparse.DoubleTensor",
    "torch.cuda.sparse.FloatTensor",
    "torch.cuda.sparse.HalfTensor",
    "torch.cuda.sparse.IntTensor",
    "torch.cuda.sparse.LongTensor",
    "torch.cuda.sparse.ShortTensor",
    "torch.sparse.BFloat16Tensor",
    "torch.sparse.ByteTensor",
    "torch.sparse.CharTensor",
    "torch.sparse.DoubleTensor",
    "torch.sparse.FloatTensor",
    "torch.sparse.HalfTensor",
    "torch.sparse.IntTensor",
    "torch.sparse.LongTensor",
    "torch.sparse.ShortTensor",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    "torch.BFloat16Storage",
    "torch.BoolStorage",
    "torch.ByteStorage",
    "torch.CharStorage",
    "torch.ComplexDoubleStorage",
    "torch.ComplexFloatStorage",
    "torch.DoubleStorage",
    "torch.FloatStorage",
    "torch.HalfStorage",
    "torch.IntStorage",
    "torch.LongStorage",
    "torch.QInt32Storage",
    "torch.QInt8Storage",
    "torch.QUInt2x4Storage",
    "torch.QUInt4x2Storage",
    "torch.QUInt8Storage",
    "torch.ShortStorage",
    "torch.cuda.BFloat16Storage",
    "torch.cuda.BoolStorage",
    "torch.cuda.ByteStorage",
    "torch.cuda.CharStorage",
    "torch.cuda.ComplexDoubleStorage",
    "torch.cuda.ComplexFloatStorage",
    "torch.cuda.DoubleStorage",
    "torch.cuda.FloatStorage",
    "torch.cuda.HalfStorage",
    "torch.cuda.IntStorage",
    "torch.cuda.LongStorage",
    "torch.cuda.ShortStorage",
    "torch.per_channel_affine",
    "torch.per_channel_affine_float_qparams",
    "torch.per_channel_symmetric",
    "torch.per_tensor_affine",
    "torch.per_tensor_symmetric",
    "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_wrapper_subclass",
];

/// torch's own Python 2 tables (`torch._utils.NAME_MAPPING` / `IMPORT_MAPPING`), which its
/// `weights_only` loader applies to every `GLOBAL` whatever the protocol — smaller than
/// `pickle`'s, so `__builtin__.long` becomes `builtins.int` (refused) and `copy_reg.x`
/// `copyreg.x`.
const TORCH_NAME_MAPPING: &[(&str, &str, &str, &str)] = &[
    ("UserDict", "IterableUserDict", "collections", "UserDict"),
    ("UserDict", "UserDict", "collections", "UserDict"),
    ("UserList", "UserList", "collections", "UserList"),
    ("UserString", "UserString", "collections", "UserString"),
    ("__builtin__", "basestring", "builtins", "str"),
    ("__builtin__", "intern", "sys", "intern"),
    ("__builtin__", "long", "builtins", "int"),
    ("__builtin__", "reduce", "functools", "reduce"),
    ("__builtin__", "unichr", "builtins", "chr"),
    ("__builtin__", "unicode", "builtins", "str"),
    ("__builtin__", "xrange", "builtins", "range"),
    ("exceptions", "StandardError", "builtins", "Exception"),
    ("itertools", "ifilter", "builtins", "filter"),
    ("itertools", "ifilterfalse", "itertools", "filterfalse"),
    ("itertools", "imap", "builtins", "map"),
    ("itertools", "izip", "builtins", "zip"),
    ("itertools", "izip_longest", "itertools", "zip_longest"),
];
const TORCH_IMPORT_MAPPING: &[(&str, &str)] = &[
    ("Queue", "queue"),
    ("StringIO", "io"),
    ("UserDict", "collections"),
    ("UserList", "collections"),
    ("UserString", "collections"),
    ("__builtin__", "builtins"),
    ("_abcoll", "collections.abc"),
    ("cStringIO", "io"),
    ("copy_reg", "copyreg"),
    ("repr", "reprlib"),
    ("whichdb", "dbm"),
];

/// The name torch's `weights_only` loader looks up for a global written as `written`.
pub fn weights_only_key(written: &Global) -> String {
    let (m, n) = (written.module.as_str(), written.name.as_str());
    if let Some(&(_, _, pm, pn)) = TORCH_NAME_MAPPING
        .iter()
        .find(|&&(wm, wn, _, _)| wm == m && wn == n)
    {
        return format!("{pm}.{pn}");
    }
    match TORCH_IMPORT_MAPPING.iter().find(|&&(wm, _)| wm == m) {
        Some(&(_, pm)) => format!("{pm}.{n}"),
        None => written.qualified(),
    }
}

/// Whether `torch.load(weights_only=True)` accepts the global its pickle writes as `written`.
pub fn is_weights_only_allowed(written: &Global) -> bool {
    ALLOWED.contains(&weights_only_key(written).as_str())
}

/// The extension's name, as messages and `--help` say it.
pub const TRAINING_EXTENSION_NAME: &str = "Lightning/OmegaConf training state";

/// Classes a PyTorch Lightning training checkpoint (with OmegaConf hyper-parameters) pickles
/// besides torch's own (read off a Lightning 2.6 checkpoint with a `DictConfig` and a
/// `ModelCheckpoint`: omegaconf's containers, nodes and metadata, `typing.Any`,
/// `collections.defaultdict`, `builtins.dict/list/int`), plus their sibling node types and
/// Lightning's `AttributeDict`: data containers, none of which runs code when unpickled. Named one
/// by one, never by module, because those modules also hold functions that load files.
const TRAINING_CLASSES: &[(&str, &str)] = &[
    ("omegaconf.dictconfig", "DictConfig"),
    ("omegaconf.listconfig", "ListConfig"),
    ("omegaconf.base", "ContainerMetadata"),
    ("omegaconf.base", "Metadata"),
    ("omegaconf.nodes", "AnyNode"),
    ("omegaconf.nodes", "StringNode"),
    ("omegaconf.nodes", "IntegerNode"),
    ("omegaconf.nodes", "FloatNode"),
    ("omegaconf.nodes", "BooleanNode"),
    ("omegaconf.nodes", "BytesNode"),
    ("omegaconf.nodes", "PathNode"),
    ("typing", "Any"),
    ("collections", "defaultdict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bool"),
    ("pytorch_lightning.utilities.parsing", "AttributeDict"),
    ("lightning_fabric.utilities.data", "AttributeDict"),
    ("lightning.fabric.utilities.data", "AttributeDict"),
    ("lightning.pytorch.utilities.parsing", "AttributeDict"),
];

/// Whether the global written as `written` is in the opt-in training-checkpoint extension
/// (looked up under torch's mapping, as the allowlist is).
pub fn is_training_extension(written: &Global) -> bool {
    let key = weights_only_key(written);
    TRAINING_CLASSES.iter().any(|&(tm, tn)| {
        key.len() == tm.len() + 1 + tn.len()
            && key.starts_with(tm)
            && key.ends_with(tn)
            && key.as_bytes()[tm.len()] == b'.'
    }) && super::known::explain(written).is_none()
}
