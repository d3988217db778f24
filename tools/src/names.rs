//! Region names as output shows them: no name can forge a row or a column.
//!
//! A region name may hold any byte but `/` and NUL, newlines and tabs
//! included, so tab-separated output writes names escaped the way `ls -b`
//! does: `\t`, `\n`, `\r`, `\\`, other control characters and bytes that
//! are not UTF-8 as `\xHH`. JSON output carries names as JSON strings.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// `name` escaped for tab-separated output.
pub fn escaped(name: &OsStr) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn esc(s: &str) -> String {
        escaped(OsStr::new(s))
    }

    #[test]
    fn plain_names_are_unchanged() {
        assert_eq!(esc("db/sga"), "db/sga");
        assert_eq!(esc("caché 1"), "caché 1");
    }

    #[test]
    fn separators_and_controls_are_escaped() {
        assert_eq!(
            esc("x\n\tfake\t0x1\t1"),
            "x\\n\\tfake\\t0x1\\t1",
            "a name cannot add a row or a column"
        );
        assert_eq!(esc("a\\b"), "a\\\\b", "the escape itself is escaped");
        assert_eq!(esc("\r\u{1b}[31m"), "\\r\\x1b[31m");
        assert_eq!(esc("\u{85}"), "\\xc2\\x85");
        let raw = OsString::from_vec(vec![b'a', 0xff, b'b']);
        assert_eq!(escaped(&raw), "a\\xffb");
    }
}
