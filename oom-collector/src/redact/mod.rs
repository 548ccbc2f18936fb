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
//!
//! ## Where each rule lives
//!
//! `names` judges names and values; `command` reads a command line word by
//! word with the flags of `programs`; `argument` reads one argument
//! (assignments, headers, URLs, pairs, JSON, scripts through `shell`);
//! `tokens` masks the token shapes. `tests` holds them against the corpora
//! `secrets.txt` and `ordinary.txt`.

mod argument;
mod command;
mod names;
mod programs;
mod shell;
#[cfg(test)]
mod tests;
mod tokens;

use crate::cmdline::{CapturedCmdline, CmdlineMode};

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Masks secrets in command lines (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// `--secret-words`, lowercase: matched as substrings of names.
    extra_words: Vec<String>,
}

/// How deep arguments nest (a value in a value, a script in a script)
/// before the rest is masked whole rather than examined.
const MAX_DEPTH: usize = 8;

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
}
