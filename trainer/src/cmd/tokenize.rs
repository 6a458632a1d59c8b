//! `ldmkit tokenize`: captions as CLIP sees them (ids, tokens, and whether they were cut),
//! the way pre-encoding tokenizes them.

use super::{report_error, EXIT_ERROR};
use crate::cli::TokenizeArgs;
use crate::text::tokenizer::{ClipTokenizer, CONTEXT};

pub fn run(a: &TokenizeArgs) -> u8 {
    let tokenizer = match ClipTokenizer::load(&a.tokenizer) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    let mut rows = Vec::new();
    for text in &a.text {
        let e = match tokenizer.encode(text) {
            Ok(e) => e,
            Err(e) => {
                report_error(&a.tokenizer, e);
                return EXIT_ERROR;
            }
        };
        if a.json {
            rows.push(serde_json::json!({"text": text, "ids": e.ids, "truncated": e.truncated}));
            continue;
        }
        let tokens = tokenizer.tokens(&e.ids[..e.length]);
        println!(
            "{} token(s){}: {}",
            e.length.saturating_sub(2),
            if e.truncated {
                format!(" (cut to fit {})", CONTEXT - 2)
            } else {
                String::new()
            },
            tokens.join(" ")
        );
    }
    if a.json {
        println!("{}", serde_json::Value::Array(rows));
    }
    0
}
