//! One argument, out of context: assignments, headers, URLs, `name=value`
//! pairs, JSON pairs, PEM keys, Oracle logons, and an argument holding
//! whitespace read as a script of its own.

use super::{
    names::{assignment, is_harmless, is_name},
    programs::Program,
    shell::shell_words,
    tokens::mask_token_shapes,
    Redactor, MAX_DEPTH, REDACTED,
};

impl Redactor {
    /// One argument, out of context except for `program` (which a script
    /// inside it starts with), its token shapes masked.
    pub(super) fn argument(
        &self,
        arg: &str,
        program: Option<&'static Program>,
        depth: usize,
    ) -> String {
        mask_token_shapes(&self.argument_rules(arg, program, depth))
    }

    fn argument_rules(&self, arg: &str, program: Option<&'static Program>, depth: usize) -> String {
        if depth > MAX_DEPTH {
            return REDACTED.to_owned();
        }
        // Before the JSON is taken apart at its whitespace.
        let json;
        let arg = if arg.contains('"') && arg.contains(':') {
            json = self.mask_json_pairs(arg);
            json.as_str()
        } else {
            arg
        };
        if let Some(masked) = self.header(arg) {
            return masked;
        }
        // `-e "user=a password=b"`: a list of assignments, each judged
        // alone.
        if arg.contains(char::is_whitespace) && is_assignment_list(arg) {
            return self.script(arg, program, depth + 1);
        }
        if let Some((name, bare, value)) = assignment(arg) {
            if self.is_secret_name(bare) && !is_harmless(value) {
                return format!("{name}={REDACTED}");
            }
            return format!("{name}={}", self.argument_rules(value, program, depth + 1));
        }
        // Before the key is taken apart at its whitespace; after the
        // assignment, whose name may mask its value whole.
        if let Some(begin) = arg.find("-----BEGIN") {
            if arg[begin..].contains("PRIVATE KEY") {
                return format!("{}{REDACTED}", &arg[..begin]);
            }
        }
        if arg.contains(char::is_whitespace) {
            return self.script(arg, program, depth + 1);
        }
        let mut out = arg.to_owned();
        if let Some(rest) = find_ignore_case(arg, "jdbc:oracle:thin:") {
            if let Some(masked) = mask_oracle_logon(&arg[rest..]) {
                out = format!("{}{masked}", &arg[..rest]);
            }
        }
        let is_url = out.contains("://");
        if is_url {
            out = mask_url_password(&out);
        }
        if out.contains('=') {
            out = self.mask_pairs(&out, is_url);
        }
        out
    }

    /// `Name: value` with a secret name: the value masked (an authorization
    /// keeps its scheme).
    fn header(&self, arg: &str) -> Option<String> {
        let colon = arg.find(':')?;
        let name = &arg[..colon];
        let value = &arg[colon + 1..];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            || value.starts_with('/')
        {
            return None;
        }
        let spaces = value.len() - value.trim_start().len();
        let (space, value) = value.split_at(spaces);
        if value.is_empty() || value == REDACTED || !self.is_secret_name(name) {
            return None;
        }
        let scheme = match value.split_once(' ') {
            Some((scheme, rest))
                if name.to_ascii_lowercase().contains("authorization")
                    && !rest.trim().is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                &value[..scheme.len() + 1]
            }
            _ => "",
        };
        Some(format!("{name}:{space}{scheme}{REDACTED}"))
    }

    /// An argument holding whitespace: its words redacted as a command
    /// line, the whitespace and quoting of the words left alone kept.
    fn script(&self, arg: &str, program: Option<&'static Program>, depth: usize) -> String {
        if depth > MAX_DEPTH {
            return REDACTED.to_owned();
        }
        let words = shell_words(arg);
        let contents: Vec<&str> = words.iter().map(|w| w.content.as_str()).collect();
        let redacted = self.command(&contents, program, depth);
        let mut out = String::with_capacity(arg.len());
        let mut copied = 0;
        for (word, shown) in words.iter().zip(&redacted) {
            if *shown == word.content {
                continue;
            }
            out.push_str(&arg[copied..word.start]);
            match word.quote {
                Some(quote) => {
                    out.push(quote);
                    out.push_str(shown);
                    out.push(quote);
                }
                None => out.push_str(shown),
            }
            copied = word.end;
        }
        out.push_str(&arg[copied..]);
        out
    }

    /// `name=value` pieces split by `&`, `;`, `?`, `#` (and `,` outside
    /// URLs): secret ones' values masked. A value in braces may hold the
    /// separators (`;password={a;b}` of SQL Server).
    fn mask_pairs(&self, text: &str, is_url: bool) -> String {
        let separators: &[char] = if is_url {
            &['&', ';', '?', '#']
        } else {
            &['&', ';', '?', '#', ',']
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        loop {
            let braced = rest
                .split_once('=')
                .filter(|(name, value)| !name.contains(separators) && value.starts_with('{'))
                .and_then(|(name, value)| Some(name.len() + 1 + value.find('}')?));
            let from = braced.unwrap_or(0);
            let end = rest[from..]
                .find(separators)
                .map_or(rest.len(), |i| from + i);
            let piece = &rest[..end];
            match piece.split_once('=') {
                Some((name, value))
                    if is_name(name) && !is_harmless(value) && self.is_secret_name(name) =>
                {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(REDACTED);
                }
                _ => out.push_str(piece),
            }
            let Some(separator) = rest[end..].chars().next() else {
                break;
            };
            out.push(separator);
            rest = &rest[end + separator.len_utf8()..];
        }
        out
    }

    /// `"name": "value"` with a secret name: the value masked.
    fn mask_json_pairs(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('"') {
            let after_open = &rest[open + 1..];
            let Some(close) = after_open.find('"') else {
                break;
            };
            let name = &after_open[..close];
            let after_name = &after_open[close + 1..];
            let colon = after_name.trim_start();
            let consumed = open + 1 + close + 1;
            let Some(value_part) = colon.strip_prefix(':') else {
                out.push_str(&rest[..consumed]);
                rest = &rest[consumed..];
                continue;
            };
            let value_part = value_part.trim_start();
            let value = value_part.strip_prefix('"').and_then(|v| {
                let end = json_string_end(v)?;
                Some(&v[..end])
            });
            match value {
                Some(value) => {
                    let value_start = rest.len() - value_part.len() + 1;
                    let value_end = value_start + value.len();
                    out.push_str(&rest[..value_start]);
                    if !value.is_empty() && self.is_secret_name(name) {
                        out.push_str(REDACTED);
                    } else {
                        out.push_str(value);
                    }
                    out.push('"');
                    rest = &rest[value_end + 1..];
                }
                None => {
                    out.push_str(&rest[..consumed]);
                    rest = &rest[consumed..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// `user/password[@db]`, `user/password as sysdba`: the password masked.
pub(super) fn mask_oracle_logon(text: &str) -> Option<String> {
    let (user, rest) = text.split_once('/')?;
    if user.is_empty()
        || !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'#' | b'"'))
        || rest.starts_with('/')
    {
        return None;
    }
    let end = rest.rfind('@').unwrap_or(rest.len());
    if end == 0 {
        return None;
    }
    Some(format!("{user}/{REDACTED}{}", &rest[end..]))
}

/// Words that are all `name=value`.
fn is_assignment_list(text: &str) -> bool {
    let words = shell_words(text);
    words.len() > 1 && words.iter().all(|w| assignment(&w.content).is_some())
}

/// The byte offset just after `needle` in `text`, ignoring ASCII case.
fn find_ignore_case(text: &str, needle: &str) -> Option<usize> {
    let hay = text.as_bytes();
    let needle = needle.as_bytes();
    (0..=hay.len().checked_sub(needle.len())?)
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
        .map(|i| i + needle.len())
}

/// The end of a JSON string's content (at its closing quote).
fn json_string_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// `scheme://user:password@host`: the password masked, up to the last `@`
/// before which the user part is a user (no `/`, `?`, `#`), so a password
/// holding those is masked whole.
fn mask_url_password(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let start = scheme_end + 3;
    let rest = &arg[start..];
    let ats: Vec<usize> = rest.match_indices('@').map(|(i, _)| i).collect();
    for &at in ats.iter().rev() {
        let userinfo = &rest[..at];
        let Some((user, password)) = userinfo.split_once(':') else {
            continue;
        };
        // `host:8443/users/@alice`: a port and a path, not a password.
        let port = password.bytes().take_while(u8::is_ascii_digit).count();
        if user.contains(['/', '?', '#', '@'])
            || (1..=5).contains(&port) && password.as_bytes().get(port) == Some(&b'/')
        {
            continue;
        }
        if password.is_empty() || password == REDACTED {
            return arg.to_owned();
        }
        return format!("{}{user}:{REDACTED}{}", &arg[..start], &rest[at..]);
    }
    arg.to_owned()
}
