//! Text from outside the agent (plugins above all) made safe for the media it reaches.

/// An error chain on one line: `outer: inner: root`.
pub fn error_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

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

/// Rows under a header, in columns two spaces apart (the last column is not padded), for the
/// CLI's table output.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        let cells = rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count());
        cells.chain([header[i].chars().count()]).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.to_string() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The candidate closest to `word` when it is close enough to be a typo of it (edit distance at
/// most a third of the word, and at least 1), for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters where swapping two neighbours counts as one edit (optimal
/// string alignment), so `stpe` is one edit from `step`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// An error with its causes ("error sending request … : invalid peer certificate: UnknownIssuer"):
/// reqwest's own text stops at the first line, which never says what went wrong with TLS.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        source = s.source();
    }
    crate::text::clean(&out, 400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_under_the_header() {
        let rows = vec![
            vec!["web".to_string(), "1".into(), "long reason".into()],
            vec!["db-main".into(), "12".into(), "x".into()],
        ];
        assert_eq!(
            table(&["NAME", "N", "WHY"], &rows),
            "NAME     N   WHY\nweb      1   long reason\ndb-main  12  x\n"
        );
    }

    #[test]
    fn closest_finds_typos_and_nothing_else() {
        let names = ["target-tracking", "threshold", "step"];
        assert_eq!(closest("target-trackin", names), Some("target-tracking"));
        assert_eq!(closest("treshold", names), Some("threshold"));
        assert_eq!(closest("stpe", names), Some("step"));
        assert_eq!(closest("openstack", names), None);
        assert_eq!(closest("targt", ["target", "metric", "per"]), Some("target"));
        assert_eq!(edit_distance("", "abc"), 3);
    }

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
