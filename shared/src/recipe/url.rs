//! The recipe URL form: a link to the browser app with the recipe in the fragment, e.g.
//! `http://127.0.0.1:8787/#recipe=1;inputs,training,base;open,training;strip;fill,base`.
//!
//! Steps are separated by `;` and words by `,`; words are percent-encoded beyond
//! `A-Z a-z 0-9 - . _ ~ *`. The fragment never reaches a server, so neither do recipes.

use super::text::{check_header, check_steps, parse_step, step_words};
use super::{Recipe, VERSION};
use crate::error::{Error, Result};

/// Where `./run` serves the browser app.
pub const DEFAULT_APP_URL: &str = "http://127.0.0.1:8787/";

fn encode(word: &str) -> String {
    let mut out = String::new();
    for b in word.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(word: &str) -> Result<String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = word
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::recipe(format!("bad escape in '{word}'")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::recipe(format!("'{word}' is not UTF-8")))
}

/// The link to `app` (a base URL) that carries `recipe`.
pub fn to_url(recipe: &Recipe, app: &str) -> String {
    let mut segments = vec![VERSION.to_string()];
    let mut inputs = vec!["inputs".to_string()];
    inputs.extend(recipe.inputs.iter().map(|i| encode(i)));
    segments.push(inputs.join(","));
    for step in &recipe.steps {
        let words: Vec<String> = step_words(step).iter().map(|w| encode(w)).collect();
        segments.push(words.join(","));
    }
    let base = app.split('#').next().unwrap_or(app);
    format!("{base}#recipe={}", segments.join(";"))
}

/// Parse a recipe link (only the fragment matters).
pub fn from_url(url: &str) -> Result<Recipe> {
    let fragment = url
        .split_once("#recipe=")
        .map(|(_, f)| f)
        .ok_or_else(|| Error::recipe("link has no '#recipe=' fragment"))?;
    let mut segments = fragment.split(';').filter(|s| !s.is_empty());
    let version = decode(segments.next().unwrap_or(""))?;
    let decode_all = |seg: &str| -> Result<Vec<String>> { seg.split(',').map(decode).collect() };
    let header = decode_all(segments.next().unwrap_or(""))?;
    if header.first().map(String::as_str) != Some("inputs") {
        return Err(Error::recipe("link has no inputs"));
    }
    let names: Vec<&str> = header[1..].iter().map(String::as_str).collect();
    let inputs = check_header(&version, &names)?;
    let mut steps = Vec::new();
    for seg in segments {
        let words = decode_all(seg)?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        steps.push(parse_step(&words, &inputs)?);
    }
    check_steps(&steps)?;
    Ok(Recipe { inputs, steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGE: &str = "ldmkit-recipe 1\ninputs training base\nopen training\nstrip\nfill base\nema drop\ncast f16\n";

    #[test]
    fn text_url_text_round_trip() {
        let r = Recipe::from_text(MERGE).unwrap();
        assert_eq!(r.to_text(), MERGE);
        let url = to_url(&r, DEFAULT_APP_URL);
        assert_eq!(
            url,
            "http://127.0.0.1:8787/#recipe=1;inputs,training,base;open,training;strip;fill,base;ema,drop;cast,f16"
        );
        assert_eq!(from_url(&url).unwrap(), r);
        assert_eq!(Recipe::parse_any(&url).unwrap().to_text(), MERGE);
    }

    #[test]
    fn odd_words_survive_the_url() {
        let text = "ldmkit-recipe 1\ninputs a b\nopen a\nweighted-sum b 0.3\nkeep model.diffusion_model.*\nrename first_stage_model. vae;x,%\n";
        let r = Recipe::from_text(text).unwrap();
        let url = to_url(&r, "https://example.org/app/#old");
        assert!(url.starts_with("https://example.org/app/#recipe="));
        assert_eq!(from_url(&url).unwrap(), r);
    }

    #[test]
    fn links_cannot_smuggle_words_the_text_form_cannot_hold() {
        for bad in [
            "#recipe=1;inputs,a;open,a;rename,x,",
            "#recipe=1;inputs,a;open,a;keep,a%20b",
            "#recipe=1;inputs,a;open,a;drop,%23x",
        ] {
            assert!(from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let e = Recipe::from_text("ldmkit-recipe 1\ninputs a\nopen b\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "recipe: line 3: 'b' is not one of the inputs (a)"
        );
        let e = Recipe::from_text("ldmkit-recipe 2\ninputs a\nopen a\n").unwrap_err();
        assert!(e.to_string().contains("version 2 is not supported"));
        let e = Recipe::from_text("ldmkit-recipe 1\ninputs a\nstrip\n").unwrap_err();
        assert!(e.to_string().contains("first step must be"));
    }

    #[test]
    fn merge_weights_must_be_finite_and_in_range() {
        let text = |step: &str| format!("ldmkit-recipe 1\ninputs a b c\nopen a\n{step}\n");
        let link = |step: &str| format!("#recipe=1;inputs,a,b,c;open,a;{}", step.replace(' ', ","));
        let refused = [
            (
                "weighted-sum b nan",
                "weighted-sum alpha must be a finite number, not 'nan'",
            ),
            ("weighted-sum b inf", "must be a finite number, not 'inf'"),
            ("weighted-sum b -inf", "must be a finite number, not '-inf'"),
            (
                "weighted-sum b 1e400",
                "must be a finite number, not '1e400'",
            ),
            (
                "weighted-sum b 1.5",
                "weighted-sum alpha must be between 0 and 1, not '1.5'",
            ),
            ("weighted-sum b -0.1", "must be between 0 and 1, not '-0.1'"),
            ("weighted-sum b x", "'x' is not a number"),
            (
                "add-difference b c NaN",
                "add-difference alpha must be a finite number",
            ),
            (
                "add-difference b c infinity",
                "must be a finite number, not 'infinity'",
            ),
            (
                "add-difference b c 1e39",
                "(it is computed in float32), not '1e39'",
            ),
        ];
        for (step, expected) in refused {
            let e = Recipe::from_text(&text(step)).unwrap_err().to_string();
            assert!(
                e.starts_with("recipe: line 4: ") && e.contains(expected),
                "{step}: {e}"
            );
            let e = from_url(&link(step)).unwrap_err().to_string();
            assert!(
                e.starts_with("recipe: ") && e.contains(expected),
                "{step}: {e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        for step in [
            "weighted-sum b 0",
            "weighted-sum b 1",
            "weighted-sum b 0.3",
            "add-difference b c 1.5",
            "add-difference b c -1",
            "add-difference b a 3e38",
        ] {
            let r = Recipe::from_text(&text(step)).unwrap();
            assert_eq!(from_url(&link(step)).unwrap(), r, "{step}");
            assert_eq!(from_url(&to_url(&r, DEFAULT_APP_URL)).unwrap(), r, "{step}");
        }
    }

    #[test]
    fn recipes_built_in_code_are_checked_when_they_run() {
        use crate::recipe::presets;
        let bad = presets::weighted_sum(f64::NAN, None);
        let e = bad.steps.iter().find_map(|s| s.check().err()).unwrap();
        assert_eq!(
            e.to_string(),
            "recipe: weighted-sum alpha must be a finite number, not nan"
        );
        let ok = presets::add_difference(2.0, None);
        assert!(ok.steps.iter().all(|s| s.check().is_ok()));
        let ops = crate::ops::Inputs::new();
        let e = crate::recipe::run(&bad, &ops, &[]).unwrap_err();
        assert!(
            e.to_string().contains("alpha must be a finite number"),
            "{e}"
        );
    }
}
