//! Which names are secret and which values harmless (see "Secret names"
//! in the module doc): the word lists, and how a name is split into words.

use super::Redactor;

/// Contained anywhere in a secret name.
const SECRET_SUBSTRINGS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "signature",
    "cookie",
    "apikey",
    "accesskey",
    "privatekey",
    "authtoken",
    "accesstoken",
];

/// A word of a secret name, wherever it is in the name.
const SECRET_WORDS: &[&str] = &["pass", "pwd", "pw", "cred", "creds", "sig", "bearer", "psk"];

/// The end of a word of a secret name, wherever it is (`authtoken`,
/// `storepass`).
const SECRET_ENDINGS: &[&str] = &["token", "pass"];

/// A secret name's last word: elsewhere these qualify another word
/// (`StrictHostKeyChecking`, `--auth-mechanism`, `--jwt-issuer`).
const SECRET_LAST_WORDS: &[&str] = &["authorization", "jwt"];

/// The end of a secret name's last word (`--api-key`, `sslkey`,
/// `masterauth`).
const SECRET_LAST_ENDINGS: &[&str] = &["key", "auth"];

/// Words ending in `pass` that say nothing about a password.
const NOT_PASS: &[&str] = &[
    "bypass",
    "compass",
    "encompass",
    "multipass",
    "overpass",
    "surpass",
    "trespass",
    "underpass",
];

/// A name's last word that says where or what a secret is, not what it is.
const DESCRIPTIVE_WORDS: &[&str] = &[
    "file", "files", "path", "paths", "dir", "store", "url", "uri", "endpoint", "name", "mode",
    "type", "method", "size", "bits", "length", "ttl", "timeout", "jar", "plugin", "provider",
    "source", "sock", "stdin", "fd", "env", "cmd", "command", "helper", "prompt",
];

/// The ends of a last word that make it descriptive (`keyfile`, `keyStore`,
/// `passfile`, `truststore`, `socket`).
const DESCRIPTIVE_ENDINGS: &[&str] = &["file", "path", "dir", "store", "socket"];

/// Names that look secret but are the shell's working directories.
const NOT_SECRET_NAMES: &[&str] = &["PWD", "OLDPWD"];

/// Values that are no secret whatever their name says.
const TRIVIAL_VALUES: &[&str] = &[
    "true", "false", "yes", "no", "on", "off", "none", "null", "0", "1",
];

/// The extensions of the files a secret-named option may point at.
const FILE_EXTENSIONS: &[&str] = &[
    "pem", "key", "crt", "cer", "der", "p12", "pfx", "jks", "keystore", "json", "yaml", "yml",
    "conf", "txt", "asc", "gpg", "pub",
];

/// Where a path that names a file begins.
const FILE_DIRECTORIES: &[&str] = &[
    "~/",
    "./",
    "../",
    "/etc/",
    "/home/",
    "/root/",
    "/run/",
    "/var/",
    "/tmp/",
    "/opt/",
    "/usr/",
    "/srv/",
    "/mnt/",
    "/data/",
    "/secrets/",
    "/certs/",
    "/keys/",
    "/config/",
];

/// Flags that negate an option and take no value.
const NEGATING_PREFIXES: &[&str] = &["no-", "skip-", "without-", "disable-", "ignore-"];

impl Redactor {
    /// `--name` or `-name` whose value is the next argument and secret.
    pub(super) fn takes_secret_value(&self, word: &str) -> bool {
        let Some(name) = word.strip_prefix('-') else {
            return false;
        };
        let name = name.strip_prefix('-').unwrap_or(name);
        if name.len() < 2 || !is_name(name) {
            return false;
        }
        let lower = name.to_ascii_lowercase();
        if NEGATING_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            return false;
        }
        self.is_secret_name(name)
    }

    /// Is `name` (an option without its dashes, an environment variable, a
    /// header, a query parameter) one whose value is secret?
    pub(super) fn is_secret_name(&self, name: &str) -> bool {
        if NOT_SECRET_NAMES.contains(&name) {
            return false;
        }
        let words = name_words(name);
        let Some(last) = words.last() else {
            return false;
        };
        if DESCRIPTIVE_WORDS.contains(&last.as_str())
            || DESCRIPTIVE_ENDINGS.iter().any(|end| last.ends_with(end))
        {
            return false;
        }
        let lower = name.to_lowercase();
        SECRET_SUBSTRINGS.iter().any(|w| lower.contains(w))
            || self.extra_words.iter().any(|w| lower.contains(w.as_str()))
            || words.iter().any(|word| is_secret_word(word))
            || SECRET_LAST_WORDS.contains(&last.as_str())
            || SECRET_LAST_ENDINGS.iter().any(|end| last.ends_with(end))
    }
}

/// `-x`, `--name`, `--name=value`, `-name`: an option, not a value.
pub(super) fn looks_like_option(word: &str) -> bool {
    let Some(rest) = word.strip_prefix('-') else {
        return false;
    };
    if rest == "-" {
        return true;
    }
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name = rest.split_once('=').map_or(rest, |(name, _)| name);
    name.starts_with(|c: char| c.is_ascii_alphabetic()) && is_name(name)
}

/// Letters, digits, `-`, `_`, `.`, `/`, `:`, `[`, `]`: what an option,
/// variable or parameter name is made of (`user[password]` in form data).
pub(super) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':' | b'[' | b']')
        })
}

/// A value no name makes secret: a flag's setting, or the path of a key or
/// certificate file (`--key /etc/ssl/client-key.pem`).
pub(super) fn is_harmless(value: &str) -> bool {
    value.is_empty()
        || TRIVIAL_VALUES.iter().any(|t| value.eq_ignore_ascii_case(t))
        || names_a_file(value)
}

/// A file name with the extension of a key, certificate or configuration
/// file, or a path in a directory where such files are kept (`~/.ssh/id_rsa`,
/// `/etc/...`): not a secret, even one beginning with `/` as base64 may.
fn names_a_file(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'~'))
        && (FILE_DIRECTORIES.iter().any(|dir| value.starts_with(dir))
            || value.rsplit_once('.').is_some_and(|(stem, ext)| {
                !stem.is_empty() && FILE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e))
            }))
}

fn is_secret_word(word: &str) -> bool {
    SECRET_WORDS.contains(&word)
        || (SECRET_ENDINGS.iter().any(|end| word.ends_with(end)) && !NOT_PASS.contains(&word))
}

/// `--name=value`, `-Dname=value`, `NAME=value`: the text before `=`, the
/// name without dashes (or `-D`), and the value.
pub(super) fn assignment(arg: &str) -> Option<(&str, &str, &str)> {
    let (name, value) = arg.split_once('=')?;
    if name.contains("://") {
        return None;
    }
    let mut bare = name.trim_start_matches('-');
    if name.len() - bare.len() == 1 && bare.len() > 1 && bare.starts_with('D') {
        bare = &bare[1..];
    }
    is_name(bare).then_some((name, bare, value))
}

/// A name's words, lowercase: split at non-alphanumerics and where a
/// lowercase letter or digit meets an uppercase one.
fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        previous_lower = c.is_lowercase() || c.is_numeric();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
