//! The recipe parsers (text and link: links arrive from anywhere). Invariants: no panic; a
//! recipe that parses prints to text and a link that both parse back to the same recipe.
#![no_main]
use ldmkit_core::recipe::{from_url, to_url, Recipe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(r) = Recipe::parse_any(text) {
        assert_eq!(Recipe::from_text(&r.to_text()).unwrap(), r);
        assert_eq!(from_url(&to_url(&r, "http://x/")).unwrap(), r);
    }
});
