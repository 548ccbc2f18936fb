//! The programs whose own flags or positional arguments hold secrets (see
//! "Flags of known programs" in the module doc), as one table.

/// What a program's flag says about the arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Take {
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
pub(super) struct Program {
    /// Basenames of the program's executables.
    pub(super) names: &'static [&'static str],
    /// The flags count only after one of these subcommands (`docker
    /// login`).
    pub(super) after: &'static [&'static str],
    pub(super) flags: &'static [(&'static str, Take)],
    /// A bare argument with a secret name is followed by its value
    /// (`aws configure set aws_secret_access_key X`).
    pub(super) positional_names: bool,
    /// The positional arguments that are secret, counted from 0 after the
    /// subcommand or the program's name, leaving out those with a `=`
    /// (`vault login TOKEN`, `mc alias set NAME URL ACCESS SECRET`).
    pub(super) positionals: &'static [usize],
    /// Positional `user/password@db` logons (Oracle's tools).
    pub(super) oracle_logon: bool,
    /// Its short flags take attached values (`-pX`), as with getopt; not
    /// for programs whose options are whole words (`openssl -key`).
    pub(super) attached: bool,
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

/// The entry of [`PROGRAMS`] named by `word`'s basename.
pub(super) fn program_named(word: &str) -> Option<&'static Program> {
    if word.starts_with('-') || word.contains('=') {
        return None;
    }
    let base = word.rsplit('/').next().unwrap_or(word);
    PROGRAMS.iter().find(|p| p.names.contains(&base))
}
