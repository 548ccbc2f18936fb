//! One command line read word by word: which program is in effect, what
//! its flags and positional arguments say of the next word, and where a
//! shell separator starts the next command.

use super::{
    argument::mask_oracle_logon,
    names::{is_harmless, looks_like_option},
    programs::{program_named, Program, Take},
    shell::is_separator,
    tokens::mask_token_shapes,
    Redactor, REDACTED,
};

impl Redactor {
    /// One command line, or the words of a script; `program` is the one
    /// in effect where it starts.
    pub(super) fn command(
        &self,
        words: &[&str],
        program: Option<&'static Program>,
        depth: usize,
    ) -> Vec<String> {
        let mut out = Vec::with_capacity(words.len());
        let mut state = CommandState::new(program);
        let mut previous = "";
        for word in words {
            let word = *word;
            let before = std::mem::replace(&mut previous, word);
            if is_separator(word) {
                state.end_command(&mut out);
                state = CommandState::new(None);
                out.push(word.to_owned());
                continue;
            }
            if state.rest {
                out.push(REDACTED.to_owned());
                continue;
            }
            if let Some(pending) = state.pending.take() {
                // SQL's `PASSWORD = 'x'`.
                if word == "=" && matches!(pending, Pending::Named) {
                    state.pending = Some(pending);
                    out.push(word.to_owned());
                    continue;
                }
                if !looks_like_option(word) {
                    out.push(match pending {
                        Pending::Flag(take) => self.flag_value(take, word, state.program, depth),
                        Pending::Named if is_harmless(word) => word.to_owned(),
                        Pending::Named => REDACTED.to_owned(),
                    });
                    continue;
                }
            }
            if let Some(found) = program_named(word) {
                state = CommandState::new(Some(found));
                state.after_seen = found.after.is_empty();
                out.push(self.argument(word, Some(found), depth));
                continue;
            }
            if let Some(shown) = self.program_argument(&mut state, word, out.len(), depth) {
                out.push(shown);
                continue;
            }
            // Words inside an argument are often SQL or a script; a bare
            // `password` among a command's own arguments is more likely
            // something searched for (`grep -r password /etc`).
            let sql = depth > 0
                && (word.eq_ignore_ascii_case("password")
                    || (word.eq_ignore_ascii_case("by")
                        && before.eq_ignore_ascii_case("identified")));
            if sql || self.takes_secret_value(word) {
                state.pending = Some(Pending::Named);
            }
            let program = state.program.filter(|_| state.after_seen);
            out.push(self.argument(word, program, depth));
        }
        state.end_command(&mut out);
        out
    }

    /// `word` as `state`'s program reads it, when one of its flags or
    /// positional rules applies.
    fn program_argument(
        &self,
        state: &mut CommandState,
        word: &str,
        index: usize,
        depth: usize,
    ) -> Option<String> {
        let program = state.program?;
        if !state.after_seen {
            state.after_seen = program.after.contains(&word);
            return None;
        }
        let positional = !word.starts_with('-') && !word.contains('=');
        if positional && !program.positionals.is_empty() {
            let index = state.positionals_seen;
            state.positionals_seen += 1;
            if program.positionals.contains(&index) {
                return Some(REDACTED.to_owned());
            }
        }
        if program.oracle_logon {
            if positional {
                if let Some(masked) = mask_oracle_logon(word) {
                    return Some(masked);
                }
            }
            if let Some(value) = strip_prefix_ignore_case(word, "userid=") {
                let masked = mask_oracle_logon(value).unwrap_or_else(|| value.to_owned());
                return Some(format!("{}{masked}", &word[..word.len() - value.len()]));
            }
        }
        for &(flag, take) in program.flags {
            match take {
                Take::Rest => {
                    if word.eq_ignore_ascii_case(flag) {
                        state.rest = true;
                        return Some(word.to_owned());
                    }
                    continue;
                }
                Take::Last => {
                    let letter = &flag[1..];
                    let cluster = word.strip_prefix('-').filter(|c| {
                        !c.starts_with('-') && c.bytes().all(|b| b.is_ascii_alphanumeric())
                    });
                    if cluster.is_some_and(|c| c.contains(letter)) {
                        state.last_from = Some(index);
                        return Some(word.to_owned());
                    }
                    continue;
                }
                Take::Value | Take::Attached | Take::UserPassword(_) => {}
            }
            if word == flag {
                if take != Take::Attached {
                    state.pending = Some(Pending::Flag(take));
                }
                return Some(word.to_owned());
            }
            let short = flag.len() == 2 && !flag.starts_with("--");
            if short && !program.attached {
                continue;
            }
            // `curl -su user:password`: a flag ending a cluster takes the
            // next argument.
            let ends_cluster = short
                && take != Take::Attached
                && !word.starts_with(flag)
                && word.strip_prefix('-').is_some_and(|cluster| {
                    !cluster.starts_with('-')
                        && cluster.bytes().all(|b| b.is_ascii_alphanumeric())
                        && cluster.ends_with(&flag[1..])
                });
            if ends_cluster {
                state.pending = Some(Pending::Flag(take));
                return Some(word.to_owned());
            }
            let attached = if short {
                word.strip_prefix(flag)
            } else {
                word.strip_prefix(flag).and_then(|v| v.strip_prefix('='))
            };
            if let Some(value) = attached.filter(|v| !v.is_empty()) {
                let prefix = &word[..word.len() - value.len()];
                let value = self.flag_value(take, value, Some(program), depth);
                return Some(format!("{prefix}{value}"));
            }
        }
        if program.positional_names && positional && self.is_secret_name(word) {
            state.pending = Some(Pending::Flag(Take::Value));
            return Some(self.argument(word, Some(program), depth));
        }
        None
    }

    /// A program flag's `value` with its secret masked. A value without a
    /// password (`curl -u user`) is read as any argument, and a user name
    /// kept still has its token shapes masked.
    fn flag_value(
        &self,
        take: Take,
        value: &str,
        program: Option<&'static Program>,
        depth: usize,
    ) -> String {
        match take {
            Take::UserPassword(sep) => match value.split_once(sep) {
                Some((user, password)) if !password.is_empty() => {
                    mask_token_shapes(&format!("{user}{sep}{REDACTED}"))
                }
                _ => self.argument(value, program, depth),
            },
            _ => REDACTED.to_owned(),
        }
    }
}

/// What the next argument is, by the one before it.
#[derive(Clone, Copy, Debug)]
enum Pending {
    /// The value of a program's flag.
    Flag(Take),
    /// The value of an option with a secret name.
    Named,
}

/// Where a command's reading is.
struct CommandState {
    program: Option<&'static Program>,
    after_seen: bool,
    pending: Option<Pending>,
    /// Every argument from here on is secret.
    rest: bool,
    /// The command's last argument is secret, if it comes after this index.
    last_from: Option<usize>,
    /// Positional arguments seen since the program or its subcommand.
    positionals_seen: usize,
}

impl CommandState {
    fn new(program: Option<&'static Program>) -> Self {
        Self {
            program,
            after_seen: true,
            pending: None,
            rest: false,
            last_from: None,
            positionals_seen: 0,
        }
    }

    /// At the command's end: masks its last argument if a flag said so.
    fn end_command(&mut self, out: &mut [String]) {
        if let Some(from) = self.last_from.take() {
            if out.len() > from + 1 {
                REDACTED.clone_into(&mut out[out.len() - 1]);
            }
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.as_bytes().get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| &text[prefix.len()..])
}
