//! Element types, with the names each format uses for them.
//!
//! torch names a dtype three ways (`torch.float16`, `HalfStorage`, `float16`), safetensors a
//! fourth (`F16`). This table is the one place that knows all of them, so readers and writers
//! never disagree about an element size.

use serde::{Deserialize, Serialize};

macro_rules! dtypes {
    ($( $variant:ident => $torch:literal, $bits:expr, $storage:expr, $st:expr, $float:expr; )*) => {
        /// A tensor element type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum DType { $( $variant, )* }

        const ALL: &[DType] = &[$( DType::$variant, )*];

        impl DType {
            /// torch's name without the `torch.` prefix (`float32`, `bfloat16`, ...).
            pub fn torch_name(self) -> &'static str {
                match self { $( DType::$variant => $torch, )* }
            }

            /// Size of one element in bits (sub-byte types exist in safetensors).
            pub fn bits(self) -> u64 {
                match self { $( DType::$variant => $bits, )* }
            }

            /// The legacy typed-storage class (`FloatStorage`), where torch has one.
            pub fn storage_class(self) -> Option<&'static str> {
                match self { $( DType::$variant => $storage, )* }
            }

            /// The safetensors header name (`F32`), where safetensors has one.
            pub fn safetensors_name(self) -> Option<&'static str> {
                match self { $( DType::$variant => $st, )* }
            }

            /// Whether values are floating point (what `cast` converts).
            pub fn is_float(self) -> bool {
                match self { $( DType::$variant => $float, )* }
            }
        }
    };
}

dtypes! {
    Float64 => "float64", 64, Some("DoubleStorage"), Some("F64"), true;
    Float32 => "float32", 32, Some("FloatStorage"), Some("F32"), true;
    Float16 => "float16", 16, Some("HalfStorage"), Some("F16"), true;
    BFloat16 => "bfloat16", 16, Some("BFloat16Storage"), Some("BF16"), true;
    Complex128 => "complex128", 128, Some("ComplexDoubleStorage"), None, false;
    Complex64 => "complex64", 64, Some("ComplexFloatStorage"), Some("C64"), false;
    Complex32 => "complex32", 32, None, None, false;
    Int64 => "int64", 64, Some("LongStorage"), Some("I64"), false;
    Int32 => "int32", 32, Some("IntStorage"), Some("I32"), false;
    Int16 => "int16", 16, Some("ShortStorage"), Some("I16"), false;
    Int8 => "int8", 8, Some("CharStorage"), Some("I8"), false;
    UInt64 => "uint64", 64, None, Some("U64"), false;
    UInt32 => "uint32", 32, None, Some("U32"), false;
    UInt16 => "uint16", 16, None, Some("U16"), false;
    UInt8 => "uint8", 8, Some("ByteStorage"), Some("U8"), false;
    Bool => "bool", 8, Some("BoolStorage"), Some("BOOL"), false;
    QInt8 => "qint8", 8, Some("QInt8Storage"), None, false;
    QInt32 => "qint32", 32, Some("QInt32Storage"), None, false;
    QUInt8 => "quint8", 8, Some("QUInt8Storage"), None, false;
    QUInt4x2 => "quint4x2", 8, Some("QUInt4x2Storage"), None, false;
    QUInt2x4 => "quint2x4", 8, Some("QUInt2x4Storage"), None, false;
    Float8E4M3Fn => "float8_e4m3fn", 8, None, Some("F8_E4M3"), true;
    Float8E5M2 => "float8_e5m2", 8, None, Some("F8_E5M2"), true;
    Float8E4M3Fnuz => "float8_e4m3fnuz", 8, None, Some("F8_E4M3FNUZ"), true;
    Float8E5M2Fnuz => "float8_e5m2fnuz", 8, None, Some("F8_E5M2FNUZ"), true;
    Float8E8M0Fnu => "float8_e8m0fnu", 8, None, Some("F8_E8M0"), true;
    Float4E2M1FnX2 => "float4_e2m1fn_x2", 8, None, None, true;
    Float4 => "float4", 4, None, Some("F4"), true;
    Float6E2M3 => "float6_e2m3", 6, None, Some("F6_E2M3"), true;
    Float6E3M2 => "float6_e3m2", 6, None, Some("F6_E3M2"), true;
    Bits8 => "bits8", 8, None, None, false;
    Bits16 => "bits16", 16, None, None, false;
    Bits1x8 => "bits1x8", 8, None, None, false;
    Bits2x4 => "bits2x4", 8, None, None, false;
    Bits4x2 => "bits4x2", 8, None, None, false;
}

impl DType {
    /// Every dtype ldmkit knows.
    pub fn all() -> &'static [DType] {
        ALL
    }

    /// Bytes per element for byte-addressable types (what torch storages use).
    pub fn size(self) -> u64 {
        self.bits().div_ceil(8)
    }

    /// From torch's name, with or without the `torch.` prefix; also torch's aliases.
    pub fn from_torch_name(name: &str) -> Option<DType> {
        let name = name.strip_prefix("torch.").unwrap_or(name);
        let alias = match name {
            "float" => "float32",
            "double" => "float64",
            "half" => "float16",
            "long" => "int64",
            "int" => "int32",
            "short" => "int16",
            "cfloat" => "complex64",
            "cdouble" => "complex128",
            "chalf" => "complex32",
            other => other,
        };
        ALL.iter().copied().find(|d| d.torch_name() == alias)
    }

    /// From a legacy typed-storage class name (`FloatStorage`).
    pub fn from_storage_class(name: &str) -> Option<DType> {
        ALL.iter()
            .copied()
            .find(|d| d.storage_class() == Some(name))
    }

    /// From a safetensors dtype name (`F16`).
    pub fn from_safetensors_name(name: &str) -> Option<DType> {
        ALL.iter()
            .copied()
            .find(|d| d.safetensors_name() == Some(name))
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.torch_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for &d in DType::all() {
            assert_eq!(DType::from_torch_name(d.torch_name()), Some(d));
            if let Some(s) = d.storage_class() {
                assert_eq!(DType::from_storage_class(s), Some(d));
            }
            if let Some(s) = d.safetensors_name() {
                assert_eq!(DType::from_safetensors_name(s), Some(d));
            }
        }
        assert_eq!(DType::from_torch_name("torch.half"), Some(DType::Float16));
        assert_eq!(DType::Float16.size(), 2);
        assert_eq!(DType::Bool.size(), 1);
    }
}
