//! The CLIP tokenizer, from a `tokenizer.json` (what `CLIPTokenizerFast` saves) or from the
//! `vocab.json` + `merges.txt` pair of a diffusers folder's `tokenizer/`.
//!
//! For the pair, the pipeline is built as transformers' `CLIPConverter` builds the fast
//! tokenizer, with BERT's text cleaning in front: the slow `CLIPTokenizer` (which SD training
//! scripts use) runs BERT's `BasicTokenizer` first when ftfy is absent, which drops control
//! characters and spaces out CJK ideographs. Every caption comes out as CLIP sees it: start
//! token, at most 75 tokens, end token, padded to 77 with the pad token (the end token for
//! SD 1.x's tokenizer; `special_tokens_map.json` says which).

use std::path::Path;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{BertNormalizer, Lowercase, Replace, Sequence as Normalizers, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// CLIP's context length.
pub const CONTEXT: usize = 77;
const START: &str = "<|startoftext|>";
const END: &str = "<|endoftext|>";
const WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The tokenizer to use for `model`: the one given, else a diffusers folder's `tokenizer/`.
/// The error names the model (a single checkpoint file carries no tokenizer).
pub fn locate(model: &Path, given: Option<&Path>) -> Result<std::path::PathBuf, String> {
    match given {
        Some(t) => Ok(t.to_path_buf()),
        None if model.join("tokenizer").is_dir() => Ok(model.join("tokenizer")),
        None => Err("holds no tokenizer; pass --tokenizer tokenizer.json (or a folder with vocab.json and merges.txt)".into()),
    }
}

pub struct ClipTokenizer {
    inner: Tokenizer,
}

/// One caption's ids, and whether it was cut to fit.
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Ids before padding (start and end tokens included).
    pub length: usize,
    pub truncated: bool,
}

impl ClipTokenizer {
    /// Load from a `tokenizer.json`, a folder holding one, or a folder with `vocab.json` and
    /// `merges.txt`. Errors are one line naming the file.
    pub fn load(path: &Path) -> Result<ClipTokenizer, String> {
        // A folder: the vocab + merges pair first (diffusers' pipelines use the slow
        // tokenizer they define), else its tokenizer.json.
        let (json, folder) = if path.is_dir() {
            (path.join("tokenizer.json"), path.to_path_buf())
        } else {
            let folder = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (path.to_path_buf(), folder)
        };
        let show = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
        let (vocab, merges) = (folder.join("vocab.json"), folder.join("merges.txt"));
        let pair = path.is_dir() && vocab.is_file() && merges.is_file();
        let mut inner = if pair {
            from_vocab_and_merges(&vocab, &merges)?
        } else if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| show(&json, &e))?
        } else {
            return Err(format!(
                "{}: no tokenizer.json, and no vocab.json + merges.txt pair",
                path.display()
            ));
        };
        let pad = pad_token(&folder);
        let pad_id = inner.token_to_id(&pad).ok_or_else(|| {
            show(
                path,
                &format!("the pad token '{pad}' is not in the vocabulary"),
            )
        })?;
        for special in [START, END] {
            if inner.token_to_id(special).is_none() {
                return Err(show(path, &format!("'{special}' is not in the vocabulary")));
            }
        }
        inner
            .with_truncation(Some(TruncationParams {
                max_length: CONTEXT,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| show(path, &e))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(CONTEXT),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad,
        }));
        Ok(ClipTokenizer { inner })
    }

    /// A caption's 77 ids.
    pub fn encode(&self, text: &str) -> Result<Encoded, String> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| format!("tokenizing {text:?}: {e}"))?;
        Ok(Encoded {
            ids: e.get_ids().to_vec(),
            length: e.get_attention_mask().iter().filter(|&&m| m == 1).count(),
            truncated: !e.get_overflowing().is_empty(),
        })
    }

    /// The tokens of ids (for display).
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| self.inner.id_to_token(i).unwrap_or_default())
            .collect()
    }
}

fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> Result<Tokenizer, String> {
    let v = vocab.to_string_lossy().into_owned();
    let m = merges.to_string_lossy().into_owned();
    let bpe = BPE::from_file(&v, &m)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix("</w>".into())
        .unk_token(END.into())
        .fuse_unk(false)
        .build()
        .map_err(|e| format!("{} / {}: {e}", vocab.display(), merges.display()))?;
    let start = tokenizers::Model::token_to_id(&bpe, START);
    let end = tokenizers::Model::token_to_id(&bpe, END);
    let (Some(start), Some(end)) = (start, end) else {
        return Err(format!("{}: no {START} / {END} tokens", vocab.display()));
    };
    let show = |e: tokenizers::Error| format!("{}: {e}", vocab.display());
    let mut t = Tokenizer::new(bpe);
    t.with_normalizer(Some(Normalizers::new(vec![
        BertNormalizer::new(true, true, Some(false), true).into(),
        NFC.into(),
        Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
            " ",
        )
        .map_err(|e| e.to_string())?
        .into(),
        Lowercase.into(),
    ])))
    .map_err(show)?;
    t.with_pre_tokenizer(Some(PreTokenizers::new(vec![
        Split::new(
            SplitPattern::Regex(WORDS.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| e.to_string())?
        .into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    t.with_decoder(Some(ByteLevel::default()));
    t.with_post_processor(Some(
        RobertaProcessing::new((END.into(), end), (START.into(), start))
            .trim_offsets(false)
            .add_prefix_space(false),
    ));
    t.add_special_tokens([AddedToken::from(START, true), AddedToken::from(END, true)])
        .map_err(show)?;
    Ok(t)
}

/// The pad token `special_tokens_map.json` (or `tokenizer_config.json`) names, else CLIP's
/// end token.
fn pad_token(folder: &Path) -> String {
    for name in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Ok(text) = std::fs::read_to_string(folder.join(name)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let pad = &v["pad_token"];
        if let Some(s) = pad.as_str().or_else(|| pad["content"].as_str()) {
            return s.to_string();
        }
    }
    END.to_string()
}
