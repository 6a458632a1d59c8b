//! Arbitrary-precision integers as pickle stores them (little-endian two's complement).
//!
//! Checkpoints hold few big integers (torch's legacy magic number, numpy seeds); we only need
//! to show them and to compare them, so a tiny byte-level routine beats a bignum dependency.

/// The value as i64, if it fits.
pub fn bigint_to_i64(le: &[u8]) -> Option<i64> {
    if le.is_empty() {
        return Some(0);
    }
    let negative = le[le.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    if le.len() > 8 && le[8..].iter().any(|&b| b != fill) {
        return None;
    }
    let mut buf = [fill; 8];
    let n = le.len().min(8);
    buf[..n].copy_from_slice(&le[..n]);
    let v = i64::from_le_bytes(buf);
    // Sign must survive truncation.
    ((v < 0) == negative).then_some(v)
}

/// Decimal text of the value.
pub fn bigint_to_decimal(le: &[u8]) -> String {
    if let Some(v) = bigint_to_i64(le) {
        return v.to_string();
    }
    let negative = le.last().is_some_and(|b| b & 0x80 != 0);
    // Magnitude as big-endian bytes.
    let mut mag: Vec<u8> = if negative {
        let mut carry = 1u16;
        le.iter()
            .map(|&b| {
                let v = (!b) as u16 + carry;
                carry = v >> 8;
                v as u8
            })
            .collect::<Vec<_>>()
    } else {
        le.to_vec()
    };
    mag.reverse();
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | *b as u32;
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).expect("ascii digits")
}

/// Parse decimal text (optional sign) into little-endian two's complement bytes.
pub(crate) fn decimal_to_bigint(text: &str) -> Option<Vec<u8>> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut mag: Vec<u8> = vec![0]; // little-endian magnitude
    for d in digits.bytes() {
        let mut carry = (d - b'0') as u32;
        for b in mag.iter_mut() {
            let v = *b as u32 * 10 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        if carry > 0 {
            mag.push(carry as u8);
        }
    }
    mag.push(0); // room for the sign bit
    if negative {
        let mut carry = 1u16;
        for b in mag.iter_mut() {
            let v = (!*b) as u16 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
    }
    Some(mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in [
            "0",
            "1",
            "-1",
            "255",
            "-256",
            "119547037146038801333356",
            "-98765432109876543210",
        ] {
            let b = decimal_to_bigint(text).unwrap();
            assert_eq!(bigint_to_decimal(&b), text);
        }
        assert_eq!(bigint_to_i64(&[0xff]), Some(-1));
        assert_eq!(bigint_to_i64(&[0x80, 0x00]), Some(128));
    }
}
