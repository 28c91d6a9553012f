//! Where a TOML syntax error began. The parser reports where it gave up, which for an inline
//! table left open (`{` without `}` on its line) or an array never closed is the next line: the
//! operator is better served by the bracket that opened the problem.

/// The byte offset of the first `{` not closed on its line or `[` not closed in the whole text,
/// with the bracket, skipping strings and comments.
pub fn opener(text: &str) -> Option<(usize, char)> {
    let bytes = text.as_bytes();
    let mut open: Vec<(usize, u8)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => i = text[i..].find('\n').map_or(bytes.len(), |n| i + n) - 1,
            q @ (b'"' | b'\'') => i = string_end(bytes, i, q),
            b @ (b'{' | b'[') => open.push((i, b)),
            b'}' | b']' => drop(open.pop()),
            b'\n' => {
                if let Some(&(at, _)) = open.iter().find(|(_, b)| *b == b'{') {
                    return Some((at, '{')); // an inline table ends on its line
                }
            }
            _ => {}
        }
        i += 1;
    }
    open.first().map(|&(at, b)| (at, b as char))
}

/// The index of the last byte of the string that opens at `start` with quote `q` (`"`, `'`, or
/// three of either), or the end of the line for one left open.
fn string_end(bytes: &[u8], start: usize, q: u8) -> usize {
    let triple = bytes.get(start..start + 3) == Some(&[q, q, q][..]);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if q == b'"' => i += 1,
            b'\n' if !triple => return i - 1,
            b if b == q && (!triple || bytes.get(i..i + 3) == Some(&[q, q, q][..])) => {
                return if triple { i + 2 } else { i };
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len() - 1
}

#[cfg(test)]
mod tests {
    use super::opener;

    #[test]
    fn an_inline_table_left_open_is_found_where_it_opened() {
        let text = "name = \"a{b\" # { not this\np = { target = 0.5\nq = 1\n";
        assert_eq!(opener(text), Some((text.find("{ t").unwrap(), '{')));
    }

    #[test]
    fn multi_line_arrays_and_closed_brackets_are_not_found() {
        assert_eq!(opener("[agent]\nx = [\n  1, # ]\n  \"]\",\n]\n[[group]]\ny = { a = [1] }\n"), None);
        assert_eq!(opener("s = '''\n{ [\n'''\n"), None);
    }

    #[test]
    fn an_array_never_closed_is_found() {
        let text = "x = [1, 2\ny = 3\n";
        assert_eq!(opener(text), Some((4, '[')));
    }
}
