//! Words of a script split as a shell would: quotes, backslashes, and
//! control operators as words of their own.

/// Shell control operators: a new command follows.
pub(super) fn is_separator(word: &str) -> bool {
    matches!(word, ";" | "&&" | "||" | "|" | "&" | "|&" | ";;")
}

/// A word of a script: where it is in the argument, what it says once its
/// quotes are removed, and the quote it is wholly wrapped in, if one.
pub(super) struct ShellWord {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) content: String,
    pub(super) quote: Option<char>,
}

/// Splits at whitespace outside quotes, as a shell would.
pub(super) fn shell_words(text: &str) -> Vec<ShellWord> {
    let mut words = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut content = String::new();
        let mut end = start;
        let mut quotes = Vec::new();
        let mut in_quote: Option<char> = None;
        // Control operators are words of their own, as for a shell.
        if is_operator_char(c) {
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if !is_operator_char(c) {
                    break;
                }
                chars.next();
                end = i + 1;
            }
            words.push(ShellWord {
                start,
                end,
                content: text[start..end].to_owned(),
                quote: None,
            });
            continue;
        }
        while let Some(&(i, c)) = chars.peek() {
            if in_quote.is_none() && (c.is_whitespace() || is_operator_char(c)) {
                break;
            }
            chars.next();
            end = i + c.len_utf8();
            match (in_quote, c) {
                (None, '\'' | '"') => {
                    in_quote = Some(c);
                    quotes.push(i);
                }
                (Some(q), _) if c == q => {
                    in_quote = None;
                    quotes.push(i);
                }
                (None | Some('"'), '\\') => {
                    if let Some(&(j, next)) = chars.peek() {
                        chars.next();
                        end = j + next.len_utf8();
                        content.push(next);
                    }
                }
                _ => content.push(c),
            }
        }
        let raw = &text[start..end];
        let first = raw.chars().next();
        let wrapped = quotes.len() == 2
            && quotes[0] == start
            && quotes[1] + 1 == end
            && first.is_some_and(|q| raw.ends_with(q))
            && !raw[1..raw.len() - 1].contains(['\\']);
        words.push(ShellWord {
            start,
            end,
            content,
            quote: if wrapped { first } else { None },
        });
    }
    words
}

fn is_operator_char(c: char) -> bool {
    matches!(c, ';' | '&' | '|')
}
