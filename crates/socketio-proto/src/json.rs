//! Compact JSON exactly as JavaScript's `JSON.stringify` writes it.
//!
//! serde_json already writes compact JSON with the same string escapes as `JSON.stringify`
//! (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as lowercase `\u00xx`,
//! nothing else escaped). Numbers differ: serde_json writes the float `1.0` as `1.0` and `1e21`
//! as `1e21`, JavaScript as `1` and `1e+21`. [`JsFormatter`] writes floats with JavaScript's
//! `Number.prototype.toString` rules (ECMA-262 §6.1.6.1.20), so a value that came in as `1.0`
//! goes out as `1`, as it would from a Node server.
//!
//! Object keys come out in the order of `serde_json::Map` (sorted, unless the workspace enables
//! serde_json's `preserve_order`), not in the sender's order; the values are the same.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

/// A serde_json formatter that writes floats the way JavaScript does.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsFormatter;

impl Formatter for JsFormatter {
    fn write_f64<W>(&mut self, writer: &mut W, value: f64) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        writer.write_all(js_number(value).as_bytes())
    }

    fn write_f32<W>(&mut self, writer: &mut W, value: f32) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        self.write_f64(writer, f64::from(value))
    }

    fn write_null<W>(&mut self, writer: &mut W) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        CompactFormatter.write_null(writer)
    }
}

/// Append the JSON of `value` to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut serializer = serde_json::Serializer::with_formatter(&mut *out, JsFormatter);
    // Writing a serde_json::Value (or a string) into a Vec cannot fail: the Vec's writer never
    // fails and every such value has a JSON form (no non-string map keys, no NaN).
    let _ = value.serialize(&mut serializer);
}

/// A finite float as JavaScript's `Number.prototype.toString()` writes it (`JSON.stringify`
/// writes non-finite numbers as `null`; serde_json values never hold them).
pub fn js_number(value: f64) -> String {
    if !value.is_finite() {
        return "null".to_owned();
    }
    if value == 0.0 {
        // Both zeros: JSON.stringify(-0) is "0".
        return "0".to_owned();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, like JavaScript: "d.ddde-7".
    let sci = format!("{:e}", value.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    // value = 0.d1d2…dk × 10^n
    let n = exponent + 1;
    let mut out = String::with_capacity(digits.len() + 8);
    if value < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_are_written_like_javascript() {
        for (value, js) in [
            (1.0, "1"),
            (-1.0, "-1"),
            (-0.0, "0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (123456.789, "123456.789"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-2.5e-7, "-2.5e-7"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (0.30000000000000004, "0.30000000000000004"),
        ] {
            assert_eq!(js_number(value), js, "{value}");
        }
    }

    #[test]
    fn values_are_compact_with_javascript_escapes() {
        let mut out = Vec::new();
        write(
            &mut out,
            &json!(["a\"b\\c\n\u{1}\u{7f}\u{2028}é/", 1.0, 2, -3, null, true, {"k": [1.25]}]),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[\"a\\\"b\\\\c\\n\\u0001\u{7f}\u{2028}é/\",1,2,-3,null,true,{\"k\":[1.25]}]"
        );
    }
}
