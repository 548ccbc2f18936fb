//! Masking the secrets of a command line (`--cmdline redacted`, the
//! default).
//!
//! Command lines carry secrets often enough that they must not reach a log
//! store as they are, and the kernel hands them to the collector at exec,
//! before a program such as `mysql` blanks its own password argument: the
//! events must never be where such a password resurfaces. What replaces a
//! secret is [`REDACTED`] (`<redacted>`); everything else is kept byte for
//! byte, and the number of arguments never changes. `process.args`,
//! `process.command_line` (the arguments joined) and the `--format pretty`
//! line all show the redacted arguments.
//!
//! ## Secret names
//!
//! A name (of an option, a `NAME=value`, a header, a query parameter, a
//! JSON key) is split into words at every character other than a letter or
//! digit and where a lowercase letter or digit meets an uppercase one
//! (`DB_PASS`, `--api-key`, `keyStorePassword`). It is *secret* when,
//! ignoring case:
//!
//! - it contains `password`, `passwd`, `passphrase`, `secret`,
//!   `credential`, `signature`, `cookie`, `apikey`, `accesskey`,
//!   `privatekey`, `authtoken` or `accesstoken`, or a word given with
//!   `--secret-words`;
//! - or one of its words is `pass`, `pwd`, `pw`, `cred`, `creds`, `sig`,
//!   `bearer` or `psk`, or ends in `token` or `pass` (`authtoken`, `storepass`; not
//!   `bypass`, `compass` and the like);
//! - or its last word is `authorization` or `jwt`, or ends in `key` or
//!   `auth` (`--api-key`, `sslkey`, `masterauth`; elsewhere these qualify
//!   another word: `StrictHostKeyChecking`, `--auth-mechanism`).
//!
//! It is not secret when its last word says where or what a secret is
//! rather than being one: `file`, `files`, `path`, `paths`, `dir`,
//! `store`, `url`, `uri`, `endpoint`, `name`, `mode`, `type`, `method`,
//! `size`, `bits`, `length`, `ttl`, `timeout`, `jar`, `plugin`,
//! `provider`, `source`, `sock`, `stdin`, `fd`, `env`, `cmd`, `command`,
//! `helper`, `prompt`, or a word ending in `file`, `path`, `dir`, `store`
//! or `socket` (`keyfile`, `keyStore`). So `--key-file=/etc/x.pem`,
//! `--password-stdin`, `--authorization-mode=Webhook` and
//! `SSH_AUTH_SOCK=/tmp/a` are kept. Nor are `PWD` and `OLDPWD`, the
//! shell's directories.
//!
//! A value is *harmless*, and kept whatever its name, when it is empty,
//! `true`, `false`, `yes`, `no`, `on`, `off`, `none`, `null`, `0` or `1`,
//! or the name of a file: only letters, digits, `/`, `.`, `_`, `-` and
//! `~`, with one of the extensions of key, certificate and configuration
//! files (`.pem`, `.key`, `.crt`, `.cer`, `.der`, `.p12`, `.pfx`, `.jks`,
//! `.keystore`, `.json`, `.yaml`, `.yml`, `.conf`, `.txt`, `.asc`, `.gpg`,
//! `.pub`) or starting with `~/`, `./`, `../`, `/etc/`, `/home/`,
//! `/root/`, `/run/`, `/var/`, `/tmp/`, `/opt/`, `/usr/`, `/srv/`,
//! `/mnt/`, `/data/`, `/secrets/`, `/certs/`, `/keys/` or `/config/`:
//! `--key /etc/ssl/client.key` and `--private-key ~/.ssh/id_rsa` are kept,
//! `--ssl-key s3cr3t` masked.
//!
//! ## What is masked, in every argument
//!
//! - The value of `--name=value`, `-name=value`, `-Dname=value` (Java
//!   properties) and `NAME=value` when the name is secret and the value not
//!   harmless; for any other name the value is itself read as an argument
//!   (`--env=DB_PASS=x`, `--header=X-Api-Key: x`, `--url=...`).
//! - The argument after `--name` or `-name` with a secret name, unless it
//!   is harmless or looks like an option itself (`-x`, `--name`,
//!   `--name=value`); not after `--no-...`, `--skip-...`, `--without-...`,
//!   `--disable-...` or `--ignore-...`, which take no value.
//! - Header-style `Name: value` with a secret name (`Authorization`,
//!   `Cookie`, `X-Api-Key`, `PRIVATE-TOKEN`, openssl's `pass:`): the value;
//!   an authorization keeps its scheme (`Authorization: Bearer
//!   <redacted>`).
//! - URLs (`scheme://`): the password of the user information, up to the
//!   last `@` before which the user has no `/`, `?`, `#` or `@` (so a
//!   password holding those is masked whole; a port and path,
//!   `host:8443/a/@b`, is not a password); and the values of secret query,
//!   fragment and `;` parameters (`?token=`, `&sig=`, `X-Amz-Signature=`,
//!   `X-Amz-Credential=`, JDBC's `;password=`).
//! - `name=value` pairs split by `&`, `;`, `?`, `#` or, outside URLs, `,`
//!   (`mount -o user=a,password=b`, form data, connection strings such as
//!   `AccountKey=`), and JSON `"name": "value"` pairs: the secret ones'
//!   values.
//! - An argument holding whitespace (a libpq conninfo `host=db
//!   password=x`, a `sh -c` script, SQL, a process title) is read as a
//!   command line of its own: split into words as a shell would (quotes,
//!   backslashes, and `;`, `&`, `|` as separators), each word masked with
//!   these same rules, and the words left alone kept with their spacing and
//!   quotes. Within it, the word after a bare `password` or SQL's
//!   `IDENTIFIED BY` is masked too (`ALTER ROLE app PASSWORD 'x'`).
//! - Oracle logons `user/password@db` as a positional argument or
//!   `userid=` of `sqlplus`, `rman`, `expdp`, `impdp`, `exp`, `imp`,
//!   `sqlldr`, `dgmgrl`, and after `jdbc:oracle:thin:`: the password.
//! - A PEM private key (`-----BEGIN ... PRIVATE KEY`) to the end of the
//!   argument.
//! - Wherever they are, tokens of well-known shapes not preceded by a
//!   letter or digit, each with a prefix and at least as many characters
//!   after it as its issuer gives it: AWS key ids (`AKIA`, `ASIA`, `ABIA`,
//!   `ACCA`, `AGPA`, `AIDA`, `AIPA`, `ANPA`, `ANVA`, `APKA`, `AROA`,
//!   `ASCA`), JWTs and other base64 JSON (`eyJ`), base64 PEM
//!   (`LS0tLS1CRUdJT`), GitHub (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`,
//!   `github_pat_`), Slack (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`,
//!   `xoxe-`, `xapp-`), Stripe (`sk_live_`, `rk_live_`, `sk_test_`,
//!   `rk_test_`, `whsec_`), GitLab (`glpat-`, `gldt-`, `glrt-`, `glptt-`,
//!   `glsoat-`), Google (`AIza`), OpenAI-style `sk-`, Hugging Face (`hf_`),
//!   npm (`npm_`), PyPI (`pypi-`), Vault (`hvs.`, `hvb.`, `hvr.`),
//!   DigitalOcean (`dop_v1_`, `doo_v1_`, `dor_v1_`), Shopify (`shpat_`,
//!   `shpss_`, `shpca_`, `shppa_`), SendGrid (`SG.`), Databricks (`dapi`),
//!   and Slack and Discord webhook URLs (`hooks.slack.com/services/...`,
//!   `discord.com/api/webhooks/...`) from their host on.
//!
//! ## Flags of known programs
//!
//! A short flag such as `-p` is a password for some programs and a port for
//! others, so these count only from an argument naming the program (its
//! basename: `/usr/bin/mysql`, or `mysql` after `sudo`, `docker exec` or
//! in a `sh -c` script) up to the next such program or shell separator.
//! Positional arguments are counted leaving out options and arguments with
//! a `=`. A short flag's value may be attached (`-pX`) or next (`-p X`, also
//! after a cluster the flag ends: `-su X`), except where noted; a next
//! value that looks like an option is not taken.
//!
//! | Program | Secret |
//! |---|---|
//! | `mysql`, `mysqldump`, `mysqladmin`, `mariadb`, ... | `-pX` attached only (a bare `-p` prompts: `mysql -p db` keeps `db`) |
//! | `sshpass` | `-p` |
//! | `redis-cli`, `valkey-cli`, `keydb-cli`, `redis-benchmark` | `-a`; every argument after `AUTH`; the value after a secret-named argument (`CONFIG SET requirepass X`) |
//! | `curl` | after the first `:` of `-u`, `--user`, `-U`, `--proxy-user`, `-E`, `--cert`, `--proxy-cert`; `-b` |
//! | `htpasswd` | the command's last argument, with `-b` in a cluster of short flags (`-bc`, `-nbB`) |
//! | `docker`, `podman`, `nerdctl`, `buildah`, `skopeo`, `helm`, `oras`, `crane`, `regctl`, `oc`, `cf`, `az` | after `login`: `-p`, `--password` |
//! | `vault`, `bao` | after `login`: the first positional argument |
//! | `mc` | after `set` or `add` (`mc alias set NAME URL ACCESS SECRET`): the third and fourth positional arguments |
//! | `rabbitmqctl` | after `add_user`, `change_password` or `authenticate_user`: the second positional argument |
//! | `wpa_passphrase` | the second positional argument |
//! | `nmcli` | the value after a secret-named argument (`password X`, `wifi-sec.psk X`) |
//! | `etcdctl` | after the first `:` of `--user` |
//! | `cqlsh`, `rabbitmqadmin`, `useradd`, `usermod` | `-p` |
//! | `gh` | after `secret`: `-b`, `--body` |
//! | `mongo`, `mongosh`, `mongodump`, `mongorestore`, ... | `-p` |
//! | `sqlcmd`, `bcp`, `osql`, `ipmitool`, `mosquitto_pub`, `mosquitto_sub`, `mosquitto_rr`, `unzip`, `zip`, `zipcloak` | `-P` |
//! | `ldapsearch`, `ldapadd`, `ldapmodify`, ... | `-w` (`ldappasswd`: `-w`, `-a`, `-s`) |
//! | `smbclient`, `rpcclient`, `smbcacls`, `smbget`, `smbtree`, `net`, `winexe` | after the first `%` of `-U`, `--user` |
//! | `lftp` | after the first `,` of `-u` |
//! | `7z`, `7za`, `7zr`, `7zz`, `rar`, `unrar` | `-pX` attached only |
//! | `openssl` | `-passin`, `-passout`, `-k`, `-K` (never attached) |
//! | `doctl` | `-t` |
//! | `ssh-keygen` | `-N`, `-P` |
//! | `aws`, `npm`, `yarn`, `pnpm` | after `set`: the value after a secret-named argument (`aws configure set aws_secret_access_key X`) |
//!
//! `ssh`, `scp`, `sftp`, `rsync`, `psql` and `pg_dump` end the program
//! before them (`sshpass -p X ssh -p 22` keeps the port). Elsewhere
//! `-p 22`, `docker run -p 8080:80` and `python -u` are kept.
//!
//! ## A cut command line
//!
//! The kernel keeps 2 KiB of arguments. When it cut them, the last argument
//! is part of something whose kind cannot be told (half a token, half a
//! URL), so it is replaced by [`REDACTED`] whole.
//!
//! ## Limits
//!
//! A secret given as a plain positional argument of a program not above,
//! in no shape above, cannot be told apart from any other argument and is
//! kept. Arguments nested deeper than eight levels (a value in a value, a
//! script in a script) are masked whole rather than read.

use crate::cmdline::{CapturedCmdline, CmdlineMode};

#[cfg(test)]
mod tests;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Masks secrets in command lines (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// `--secret-words`, lowercase: matched as substrings of names.
    extra_words: Vec<String>,
}

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

/// How deep arguments nest (a value in a value, a script in a script)
/// before the rest is masked whole rather than examined.
const MAX_DEPTH: usize = 8;

/// What a program's flag says about the arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Take {
    /// Its value is secret, attached (`-pX`, `--flag=X`) or next (`-p X`).
    Value,
    /// Its value is secret when attached (`-pX`); alone, the program
    /// prompts and the next argument is something else (`mysql -p db`).
    Attached,
    /// Its value is `user<sep>password`: the part after the first `sep`.
    UserPassword(char),
    /// Every argument after it (`redis-cli AUTH user password`); the flag is
    /// matched ignoring case.
    Rest,
    /// The command's last argument (`htpasswd -b file user password`); the
    /// flag's letter anywhere in a cluster of short flags (`-bc`, `-nbB`).
    Last,
}

/// The flags that hold secrets for some programs only.
#[derive(Debug)]
struct Program {
    /// Basenames of the program's executables.
    names: &'static [&'static str],
    /// The flags count only after one of these subcommands (`docker
    /// login`).
    after: &'static [&'static str],
    flags: &'static [(&'static str, Take)],
    /// A bare argument with a secret name is followed by its value
    /// (`aws configure set aws_secret_access_key X`).
    positional_names: bool,
    /// The positional arguments that are secret, counted from 0 after the
    /// subcommand or the program's name, leaving out those with a `=`
    /// (`vault login TOKEN`, `mc alias set NAME URL ACCESS SECRET`).
    positionals: &'static [usize],
    /// Positional `user/password@db` logons (Oracle's tools).
    oracle_logon: bool,
    /// Its short flags take attached values (`-pX`), as with getopt; not
    /// for programs whose options are whole words (`openssl -key`).
    attached: bool,
}

const fn program(
    names: &'static [&'static str],
    flags: &'static [(&'static str, Take)],
) -> Program {
    Program {
        names,
        after: &[],
        flags,
        positional_names: false,
        positionals: &[],
        oracle_logon: false,
        attached: true,
    }
}

/// The programs whose short flags or positional arguments hold secrets,
/// and programs often run by them whose own flags do not (so `sshpass -p X
/// ssh -p 22 host` keeps the port).
const PROGRAMS: &[Program] = &[
    program(
        &[
            "mysql",
            "mysqldump",
            "mysqladmin",
            "mysqlimport",
            "mysqlshow",
            "mysqlcheck",
            "mysqlpump",
            "mysqlslap",
            "mysqlbinlog",
            "mysqlsh",
            "mariadb",
            "mariadb-dump",
            "mariadb-admin",
            "mariadb-import",
            "mariadb-check",
            "mariadb-show",
            "mariadb-slap",
        ],
        &[("-p", Take::Attached)],
    ),
    program(&["sshpass"], &[("-p", Take::Value)]),
    Program {
        positional_names: true,
        ..program(
            &["redis-cli", "valkey-cli", "keydb-cli", "redis-benchmark"],
            &[("-a", Take::Value), ("AUTH", Take::Rest)],
        )
    },
    program(
        &["curl"],
        &[
            ("-u", Take::UserPassword(':')),
            ("--user", Take::UserPassword(':')),
            ("-U", Take::UserPassword(':')),
            ("--proxy-user", Take::UserPassword(':')),
            ("-E", Take::UserPassword(':')),
            ("--cert", Take::UserPassword(':')),
            ("--proxy-cert", Take::UserPassword(':')),
            ("-b", Take::Value),
        ],
    ),
    program(&["htpasswd"], &[("-b", Take::Last)]),
    Program {
        after: &["login"],
        ..program(
            &[
                "docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras", "crane",
                "regctl", "oc", "cf", "az",
            ],
            &[("-p", Take::Value), ("--password", Take::Value)],
        )
    },
    Program {
        after: &["login"],
        positionals: &[0],
        ..program(&["vault", "bao"], &[])
    },
    Program {
        after: &["set", "add"],
        positionals: &[2, 3],
        ..program(&["mc"], &[])
    },
    Program {
        after: &["add_user", "change_password", "authenticate_user"],
        positionals: &[1],
        ..program(&["rabbitmqctl"], &[])
    },
    Program {
        positionals: &[1],
        ..program(&["wpa_passphrase"], &[])
    },
    Program {
        positional_names: true,
        ..program(&["nmcli"], &[])
    },
    program(&["etcdctl"], &[("--user", Take::UserPassword(':'))]),
    program(
        &["cqlsh", "rabbitmqadmin", "useradd", "usermod"],
        &[("-p", Take::Value)],
    ),
    Program {
        after: &["secret"],
        ..program(&["gh"], &[("-b", Take::Value), ("--body", Take::Value)])
    },
    program(
        &[
            "mongo",
            "mongosh",
            "mongodump",
            "mongorestore",
            "mongoexport",
            "mongoimport",
            "mongostat",
            "mongotop",
            "mongofiles",
        ],
        &[("-p", Take::Value)],
    ),
    program(&["sqlcmd", "bcp", "osql"], &[("-P", Take::Value)]),
    program(&["ipmitool"], &[("-P", Take::Value)]),
    program(
        &["mosquitto_pub", "mosquitto_sub", "mosquitto_rr"],
        &[("-P", Take::Value)],
    ),
    program(
        &[
            "ldapsearch",
            "ldapadd",
            "ldapmodify",
            "ldapdelete",
            "ldapmodrdn",
            "ldapcompare",
            "ldapwhoami",
            "ldapexop",
        ],
        &[("-w", Take::Value)],
    ),
    program(
        &["ldappasswd"],
        &[
            ("-w", Take::Value),
            ("-a", Take::Value),
            ("-s", Take::Value),
        ],
    ),
    program(
        &[
            "smbclient",
            "rpcclient",
            "smbcacls",
            "smbget",
            "smbtree",
            "net",
            "winexe",
        ],
        &[
            ("-U", Take::UserPassword('%')),
            ("--user", Take::UserPassword('%')),
        ],
    ),
    program(&["lftp"], &[("-u", Take::UserPassword(','))]),
    program(&["unzip", "zip", "zipcloak"], &[("-P", Take::Value)]),
    program(
        &["7z", "7za", "7zr", "7zz", "rar", "unrar"],
        &[("-p", Take::Attached)],
    ),
    Program {
        attached: false,
        ..program(
            &["openssl"],
            &[
                ("-passin", Take::Value),
                ("-passout", Take::Value),
                ("-k", Take::Value),
                ("-K", Take::Value),
            ],
        )
    },
    program(&["doctl"], &[("-t", Take::Value)]),
    program(&["ssh-keygen"], &[("-N", Take::Value), ("-P", Take::Value)]),
    Program {
        oracle_logon: true,
        ..program(
            &[
                "sqlplus", "rman", "expdp", "impdp", "exp", "imp", "sqlldr", "dgmgrl",
            ],
            &[],
        )
    },
    Program {
        after: &["set"],
        positional_names: true,
        ..program(&["aws", "npm", "yarn", "pnpm"], &[])
    },
    program(&["ssh", "scp", "sftp", "rsync", "psql", "pg_dump"], &[]),
];

impl Redactor {
    /// The default rules plus `extra` secret words (case-insensitive).
    pub fn new(extra: &[String]) -> Self {
        Self {
            extra_words: extra
                .iter()
                .map(|w| w.to_lowercase())
                .filter(|w| !w.is_empty())
                .collect(),
        }
    }

    /// The command line as `mode` says to show it.
    pub fn shown(
        &self,
        mode: CmdlineMode,
        cmdline: Option<&CapturedCmdline>,
    ) -> Option<CapturedCmdline> {
        let cmdline = cmdline?;
        match mode {
            CmdlineMode::Off => None,
            CmdlineMode::Full => Some(cmdline.clone()),
            CmdlineMode::Redacted => Some(CapturedCmdline {
                args: self.redact(&cmdline.args, cmdline.truncated),
                ..cmdline.clone()
            }),
        }
    }

    /// `args` with their secrets masked; as many arguments as given.
    /// `truncated`: the kernel cut the last argument short.
    pub fn redact(&self, args: &[String], truncated: bool) -> Vec<String> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut out = self.command(&words, None, 0);
        if truncated {
            if let Some(last) = out.last_mut() {
                REDACTED.clone_into(last);
            }
        }
        out
    }

    /// One command line, or the words of a script; `program` is the one
    /// in effect where it starts.
    fn command(
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

    /// `--name` or `-name` whose value is the next argument and secret.
    fn takes_secret_value(&self, word: &str) -> bool {
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
    fn is_secret_name(&self, name: &str) -> bool {
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

    /// One argument, out of context except for `program` (which a script
    /// inside it starts with), its token shapes masked.
    fn argument(&self, arg: &str, program: Option<&'static Program>, depth: usize) -> String {
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

/// The entry of [`PROGRAMS`] named by `word`'s basename.
fn program_named(word: &str) -> Option<&'static Program> {
    if word.starts_with('-') || word.contains('=') {
        return None;
    }
    let base = word.rsplit('/').next().unwrap_or(word);
    PROGRAMS.iter().find(|p| p.names.contains(&base))
}

/// `user/password[@db]`, `user/password as sysdba`: the password masked.
fn mask_oracle_logon(text: &str) -> Option<String> {
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

/// Shell control operators: a new command follows.
fn is_separator(word: &str) -> bool {
    matches!(word, ";" | "&&" | "||" | "|" | "&" | "|&" | ";;")
}

/// `-x`, `--name`, `--name=value`, `-name`: an option, not a value.
fn looks_like_option(word: &str) -> bool {
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
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b':' | b'[' | b']')
        })
}

/// A value no name makes secret: a flag's setting, or the path of a key or
/// certificate file (`--key /etc/ssl/client-key.pem`).
fn is_harmless(value: &str) -> bool {
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
fn assignment(arg: &str) -> Option<(&str, &str, &str)> {
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

/// Words that are all `name=value`.
fn is_assignment_list(text: &str) -> bool {
    let words = shell_words(text);
    words.len() > 1 && words.iter().all(|w| assignment(&w.content).is_some())
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

/// The byte offset just after `needle` in `text`, ignoring ASCII case.
fn find_ignore_case(text: &str, needle: &str) -> Option<usize> {
    let hay = text.as_bytes();
    let needle = needle.as_bytes();
    (0..=hay.len().checked_sub(needle.len())?)
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
        .map(|i| i + needle.len())
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.as_bytes().get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| &text[prefix.len()..])
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

/// A word of a script: where it is in the argument, what it says once its
/// quotes are removed, and the quote it is wholly wrapped in, if one.
struct ShellWord {
    start: usize,
    end: usize,
    content: String,
    quote: Option<char>,
}

/// Splits at whitespace outside quotes, as a shell would.
fn shell_words(text: &str) -> Vec<ShellWord> {
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

/// A token shape: its prefix, the bytes of its body, the body's least
/// length.
struct Shape {
    prefix: &'static [u8],
    body: fn(u8) -> bool,
    min: usize,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn url_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

fn base64_or_dot(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'=' | b'.')
}

fn alnum_underscore(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

fn alnum_slash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')
}

fn url_safe_dot(b: u8) -> bool {
    url_safe(b) || b == b'.'
}

macro_rules! shapes {
    ($(($body:ident, $min:expr, [$($prefix:literal),+ $(,)?])),+ $(,)?) => {
        &[$($(Shape { prefix: $prefix, body: $body, min: $min }),+),+]
    };
}

/// The well-known token shapes (see the module doc).
const SHAPES: &[Shape] = shapes![
    (
        upper_alnum,
        16,
        [
            b"AKIA", b"ASIA", b"ABIA", b"ACCA", b"AGPA", b"AIDA", b"AIPA", b"ANPA", b"ANVA",
            b"APKA", b"AROA", b"ASCA"
        ]
    ),
    (base64_or_dot, 17, [b"eyJ"]),
    (alnum, 20, [b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"]),
    (alnum_underscore, 20, [b"github_pat_"]),
    (
        alnum_dash,
        10,
        [b"xoxb-", b"xoxp-", b"xoxa-", b"xoxr-", b"xoxs-", b"xoxe-", b"xapp-"]
    ),
    (
        alnum,
        16,
        [
            b"sk_live_",
            b"rk_live_",
            b"sk_test_",
            b"rk_test_",
            b"whsec_"
        ]
    ),
    (
        url_safe,
        20,
        [b"glpat-", b"gldt-", b"glrt-", b"glptt-", b"glsoat-"]
    ),
    (url_safe, 30, [b"AIza"]),
    (url_safe, 20, [b"sk-"]),
    (alnum, 30, [b"hf_"]),
    (alnum, 36, [b"npm_"]),
    (url_safe, 50, [b"pypi-"]),
    (url_safe, 20, [b"hvs.", b"hvb.", b"hvr."]),
    (alnum, 32, [b"dop_v1_", b"doo_v1_", b"dor_v1_"]),
    (alnum, 20, [b"shpat_", b"shpss_", b"shpca_", b"shppa_"]),
    (url_safe_dot, 40, [b"SG."]),
    (alnum, 32, [b"dapi"]),
    (base64_or_dot, 20, [b"LS0tLS1CRUdJT"]),
    (alnum_slash, 20, [b"hooks.slack.com/services/"]),
    (
        alnum_slash,
        20,
        [
            b"discord.com/api/webhooks/",
            b"discordapp.com/api/webhooks/"
        ]
    ),
];

/// Every token of a well-known shape in `text`, not preceded by a letter or
/// digit, replaced by [`REDACTED`].
fn mask_token_shapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let at_start = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let end = at_start
            .then(|| {
                SHAPES.iter().find_map(|shape| {
                    let body = bytes[i..].strip_prefix(shape.prefix)?;
                    let len = body.iter().take_while(|&&b| (shape.body)(b)).count();
                    (len >= shape.min).then_some(i + shape.prefix.len() + len)
                })
            })
            .flatten();
        match end {
            Some(end) => {
                // Prefixes and bodies are ASCII: `i` and `end` are char
                // boundaries.
                out.push_str(&text[copied..i]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return text.to_owned();
    }
    out.push_str(&text[copied..]);
    out
}
