//! Protocol 0's text encodings: quoted `STRING` literals and raw-unicode-escape `UNICODE`.

/// Decode a `STRING` opcode argument: a Python bytes literal body in quotes, with
/// backslash escapes (`codecs.escape_decode`).
pub(crate) fn decode_string_literal(line: &[u8]) -> Result<Vec<u8>, String> {
    let quoted =
        line.len() >= 2 && line[0] == line[line.len() - 1] && (line[0] == b'\'' || line[0] == b'"');
    if !quoted {
        return Err("STRING argument is not a quoted literal".into());
    }
    let body = &line[1..line.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = body.get(i) else {
            return Err("STRING literal ends with a backslash".into());
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let hex = body
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("invalid \\x escape in STRING literal")?;
                out.push(hex);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Decode a `UNICODE` opcode argument (`raw-unicode-escape`): bytes are Latin-1 code points
/// except `\uXXXX` and `\UXXXXXXXX` escapes.
pub(crate) fn decode_raw_unicode_escape(line: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' && matches!(line.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if line[i + 1] == b'u' { 4 } else { 8 };
            let code = line
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .ok_or("invalid \\u escape in UNICODE argument")?;
            out.push(code);
            i += 2 + n;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals() {
        assert_eq!(
            decode_string_literal(b"'a\\nb\\x41\\101'").unwrap(),
            b"a\nbAA"
        );
        assert!(decode_string_literal(b"abc").is_err());
        assert_eq!(decode_raw_unicode_escape(b"caf\\u00e9").unwrap(), "café");
    }
}
