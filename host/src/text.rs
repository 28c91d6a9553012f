//! Text from outside the agent (plugins above all) made safe for the media it reaches.

/// Plugin text made safe for a line-oriented medium (the log, the journal, the CLI): control
/// characters escaped (so no line can be forged), at most `max` bytes (cut on a character
/// boundary, saying how much was cut).
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    let mut cut = 0;
    for (i, c) in text.char_indices() {
        let before = out.len();
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            cut = text.len() - i;
            break;
        }
    }
    if cut > 0 {
        out.push_str(&format!("…[{cut} bytes cut]"));
    }
    out
}

/// In place: [`clean`] unless already clean and short (the common case allocates nothing).
pub fn clean_in_place(text: &mut String, max: usize) {
    if text.len() > max || text.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
        *text = clean(text, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_control_characters_and_caps_length() {
        assert_eq!(clean("fine", 100), "fine");
        assert_eq!(clean("a\nb\r\x1b[31m", 100), "a\\nb\\r\\u{1b}[31m");
        let long = "é".repeat(100);
        let c = clean(&long, 11);
        assert!(c.starts_with("ééééé…["), "{c}");
        assert!(c.ends_with("190 bytes cut]"), "{c}");
        let mut s = String::from("x\ny");
        clean_in_place(&mut s, 10);
        assert_eq!(s, "x\\ny");
    }
}
