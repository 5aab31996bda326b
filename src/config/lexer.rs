//! Splits one command line into words.
//!
//! Words are separated by ASCII whitespace. A double quote starts a quoted
//! part that may hold spaces and `#`; inside it `\"` and `\\` stand for `"`
//! and `\`. A quoted part may sit inside a word (`a"b c"` is the word
//! `ab c`); `""` is an empty word. Outside quotes, `#` starts a comment that
//! runs to the end of the line. This module knows nothing about commands;
//! see `grammar` for that.

/// Split `line` into words. Fails on an unterminated quote or a dangling
/// backslash inside quotes, naming the column where the quote opened.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '#' => break,
            '"' => {
                in_word = true;
                let mut closed = false;
                while let Some((_, q)) = chars.next() {
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, e @ ('"' | '\\'))) => cur.push(e),
                            Some((_, e)) => {
                                cur.push('\\');
                                cur.push(e);
                            }
                            None => break,
                        },
                        other => cur.push(other),
                    }
                }
                if !closed {
                    return Err(format!("unterminated quote opened at column {}", i + 1));
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            other => {
                in_word = true;
                cur.push(other);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Write `word` so that [`split_words`] reads it back as the same single
/// word: unchanged when it is plain, double-quoted otherwise.
pub fn quote_word(word: &str) -> String {
    let plain = !word.is_empty()
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '#' || c == '\\');
    if plain {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(line: &str) -> Vec<String> {
        split_words(line).unwrap()
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(w("  add ssl\tcertKey  a "), ["add", "ssl", "certKey", "a"]);
        assert!(w("").is_empty());
        assert!(w("   \t ").is_empty());
    }

    #[test]
    fn comments() {
        assert!(w("# a comment").is_empty());
        assert_eq!(w("add service s # trailing"), ["add", "service", "s"]);
        assert_eq!(w("a#b"), ["a"]);
        assert_eq!(w("\"a#b\" c"), ["a#b", "c"]);
    }

    #[test]
    fn quotes() {
        assert_eq!(w("x \"my cert.pem\" y"), ["x", "my cert.pem", "y"]);
        assert_eq!(w("a\"b c\"d"), ["ab cd"]);
        assert_eq!(w("\"\""), [""]);
        assert_eq!(w(r#""say \"hi\" \\ \n""#), [r#"say "hi" \ \n"#]);
    }

    #[test]
    fn unterminated_quote() {
        let e = split_words("add ssl certKey \"abc").unwrap_err();
        assert!(e.contains("unterminated quote"), "{e}");
        assert!(e.contains("column 17"), "{e}");
        assert!(split_words("\"abc\\").is_err());
    }

    #[test]
    fn quote_round_trip() {
        for s in ["plain", "with space", "", "q\"uote", "back\\slash", "ha#sh", "tab\tx"] {
            assert_eq!(split_words(&quote_word(s)).unwrap(), [s], "{s}");
        }
        assert_eq!(quote_word("plain"), "plain");
    }
}
