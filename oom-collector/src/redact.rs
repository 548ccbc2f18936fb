//! Masking the secrets of a command line (`--cmdline redacted`, the
//! default).
//!
//! Command lines carry secrets often enough that they must not reach a log
//! store as they are. A *secret word* is one of [`DEFAULT_SECRET_WORDS`]
//! (extend it with `--secret-words`); matching ignores case and is by
//! substring, so `--db-password`, `API_KEY` and `x-auth-token` all match.
//! In redacted mode, these are replaced by [`REDACTED`]:
//!
//! - the value of `--name=value`, `-name=value` and `NAME=value` when `name`
//!   contains a secret word;
//! - the argument after `--name` or `-name` when `name` contains a secret
//!   word and that argument is not itself an option;
//! - the password of a URL's user information, `scheme://user:password@host`.
//!
//! Nothing else is touched: a secret given as a bare positional argument
//! cannot be told apart from any other argument.

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Words that mark an argument's value as secret (see the module doc).
pub const DEFAULT_SECRET_WORDS: [&str; 10] = [
    "password",
    "passwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "cookie",
    "signature",
    "private",
];

/// Masks secrets in arguments.
#[derive(Clone, Debug)]
pub struct Redactor {
    words: Vec<String>,
}

impl Redactor {
    /// The default words plus `extra` (case-insensitive).
    pub fn new(extra: &[String]) -> Self {
        let mut words: Vec<String> = DEFAULT_SECRET_WORDS.iter().map(|w| w.to_string()).collect();
        words.extend(
            extra
                .iter()
                .map(|w| w.to_lowercase())
                .filter(|w| !w.is_empty()),
        );
        Self { words }
    }

    fn is_secret_name(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.words.iter().any(|word| name.contains(word.as_str()))
    }

    pub fn redact(&self, args: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(args.len());
        let mut mask_next = false;
        for arg in args {
            if mask_next && !arg.starts_with('-') {
                out.push(REDACTED.to_owned());
                mask_next = false;
                continue;
            }
            mask_next = false;
            if let Some((name, _value)) = arg.split_once('=') {
                if is_option_name(name) && self.is_secret_name(name) {
                    out.push(format!("{name}={REDACTED}"));
                    continue;
                }
            } else if arg.starts_with('-') && self.is_secret_name(arg) {
                mask_next = true;
            }
            out.push(redact_url_password(arg));
        }
        out
    }
}

/// `--name`, `-name` or `NAME`: letters, digits, `-`, `_`, `.` only (so a
/// URL's query string is not taken for an option).
fn is_option_name(name: &str) -> bool {
    let bare = name.trim_start_matches('-');
    !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `scheme://user:password@host...` -> `scheme://user:<redacted>@host...`.
fn redact_url_password(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &arg[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return arg.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return arg.to_owned();
    };
    format!(
        "{}{}:{REDACTED}{}",
        &arg[..authority_start],
        &authority[..colon],
        &arg[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn masks_secret_values_in_every_common_form() {
        let redactor = Redactor::new(&[]);
        let given = args(&[
            "/usr/bin/app",
            "--password=hunter2",
            "--db-password",
            "hunter3",
            "-token",
            "abc",
            "AWS_SECRET_ACCESS_KEY=xyz",
            "--api_key=k",
            "--user=alice",
            "--verbose",
            "postgres://alice:s3cret@db:5432/app?sslmode=require",
            "https://example.com/?token=x",
            "--auth",
            "--next-flag",
        ]);
        assert_eq!(
            redactor.redact(&given),
            args(&[
                "/usr/bin/app",
                "--password=<redacted>",
                "--db-password",
                "<redacted>",
                "-token",
                "<redacted>",
                "AWS_SECRET_ACCESS_KEY=<redacted>",
                "--api_key=<redacted>",
                "--user=alice",
                "--verbose",
                "postgres://alice:<redacted>@db:5432/app?sslmode=require",
                "https://example.com/?token=x",
                "--auth",
                "--next-flag",
            ])
        );
    }

    #[test]
    fn secret_words_are_extensible_and_case_blind() {
        let redactor = Redactor::new(&["Pin".to_owned()]);
        assert_eq!(
            redactor.redact(&args(&["--PIN=1234", "--Password=x", "--spin=3"])),
            args(&[
                "--PIN=<redacted>",
                "--Password=<redacted>",
                "--spin=<redacted>"
            ]),
            "substring matching errs on the side of masking"
        );
    }
}
