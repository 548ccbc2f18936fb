//! The redactor against command lines seen in the wild: secrets must be
//! gone from every field of the event a kill makes and from the lines the
//! collector's output writes for it, and everything else must read as it
//! was.

use std::{
    fs,
    time::{Duration, SystemTime},
};

use serde_json::Value;

use super::{shell::shell_words, *};
use crate::{
    decode::{KernelKill, Victim},
    document::{
        kill::{kill_document, KillContext},
        Document,
    },
    host::HostInfo,
    sink::{Format, Rotation, Sink},
};

/// Command lines with their secrets marked `⟦...⟧`.
const SECRETS: &str = include_str!("secrets.txt");
/// Command lines with no secret.
const ORDINARY: &str = include_str!("ordinary.txt");

struct Case {
    /// The corpus line, to name a failure.
    line: &'static str,
    args: Vec<String>,
    secrets: Vec<String>,
    truncated: bool,
}

fn corpus(text: &'static str) -> Vec<Case> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (truncated, command) = match line.strip_prefix("[cut] ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let mut secrets = Vec::new();
            let args = shell_words(command)
                .into_iter()
                .map(|word| unmark(&word.content, &mut secrets))
                .collect();
            Case {
                line,
                args,
                secrets,
                truncated,
            }
        })
        .collect()
}

/// `word` without its `⟦⟧` marks; what they enclosed goes to `secrets`.
fn unmark(word: &str, secrets: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(open) = rest.find('⟦') {
        out.push_str(&rest[..open]);
        let inner = &rest[open + '⟦'.len_utf8()..];
        let close = inner.find('⟧').expect("a ⟦ is closed by a ⟧");
        secrets.push(inner[..close].to_owned());
        out.push_str(&inner[..close]);
        rest = &inner[close + '⟧'.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// The document the collector makes of a kill of a process with `case`'s
/// command line, shown as `mode` says.
fn document(case: &Case, redactor: &Redactor, mode: CmdlineMode) -> Document {
    let kill = KernelKill {
        boot_ns: 5_000_000_000,
        victim: Victim {
            tid: 4242,
            pid: Some(4242),
            comm: Some("victim".into()),
            uid: Some(1000),
            anon_rss_kib: Some(1024),
            ..Victim::default()
        },
        cmdline: Some(CapturedCmdline {
            executable: Some("/usr/bin/victim".into()),
            args: case.args.clone(),
            truncated: case.truncated,
        }),
        ..KernelKill::default()
    };
    let host = HostInfo {
        name: "node-1".into(),
        kubernetes_node: None,
        kernel: "6.8.0".into(),
        boot_id: "boot".into(),
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let context = KillContext {
        timestamp: at,
        created: at,
        victim_cgroup_path: None,
        victim_memcg: None,
        trigger_cgroup_path: None,
        trigger_memcg_path: None,
        cmdline: redactor.shown(mode, kill.cmdline.as_ref()),
        oom_log: None,
        oom_memcg: None,
        node: None,
        victim_comm_from_proc: None,
        victim_exiting: None,
        memcg_oom_group: None,
        container_metadata: None,
        node_name: None,
    };
    kill_document(&kill, &host, context)
}

/// The lines the collector's output writes for `documents` in `format`.
fn written(documents: &[Document], format: Format, test: &str) -> Vec<String> {
    let path = std::env::temp_dir().join(format!(
        "oom-redact-{test}-{format:?}-{}.log",
        std::process::id()
    ));
    let _ = fs::remove_file(&path);
    let never = Rotation {
        max_bytes: None,
        keep: 0,
    };
    let mut sink = Sink::open(std::slice::from_ref(&path), format, never).expect("open");
    for document in documents {
        sink.write(document).expect("write");
    }
    sink.finish().expect("finish");
    let text = fs::read_to_string(&path).expect("read back");
    let _ = fs::remove_file(&path);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), documents.len(), "one line per document");
    lines
}

fn strings_of(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings_of(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings_of(v, out);
        }),
        _ => {}
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn redact(list: &[&str]) -> Vec<String> {
    Redactor::new(&[]).redact(&args(list), false)
}

#[test]
fn no_marked_secret_survives_in_any_field_or_line_of_the_event() {
    let cases = corpus(SECRETS);
    assert!(
        cases.len() >= 60,
        "{} secret-bearing lines, want 60",
        cases.len()
    );
    let redactor = Redactor::new(&[]);
    let documents: Vec<Document> = cases
        .iter()
        .map(|case| document(case, &redactor, CmdlineMode::Redacted))
        .collect();
    let json_lines = written(&documents, Format::Json, "secrets");
    let pretty_lines = written(&documents, Format::Pretty, "secrets");
    let unredacted: Vec<Document> = cases
        .iter()
        .map(|case| document(case, &redactor, CmdlineMode::Full))
        .collect();
    for (i, case) in cases.iter().enumerate() {
        assert!(
            !case.secrets.is_empty(),
            "no secret marked in: {}",
            case.line
        );
        let process = documents[i]
            .process
            .as_ref()
            .expect("a kill names its process");
        let shown_args = process.args.as_ref().expect("args are shown");
        assert_eq!(
            shown_args.len(),
            case.args.len(),
            "argument count changed for: {}",
            case.line
        );
        let mut strings = Vec::new();
        strings_of(
            &serde_json::from_str(&json_lines[i]).expect("the line is JSON"),
            &mut strings,
        );
        let full_line = unredacted[i]
            .process
            .as_ref()
            .and_then(|p| p.command_line.clone())
            .unwrap_or_default();
        for secret in &case.secrets {
            assert!(
                full_line.contains(secret.as_str()),
                "the corpus line does not hold its secret {secret:?}: {}",
                case.line
            );
            let places = [
                ("process.args", shown_args.join("\u{0}")),
                (
                    "process.command_line",
                    process.command_line.clone().unwrap_or_default(),
                ),
                ("message", documents[i].message.clone()),
                ("the JSON line", json_lines[i].clone()),
                ("the JSON line's strings", strings.join("\u{0}")),
                ("the pretty line", pretty_lines[i].clone()),
            ];
            for (place, text) in places {
                assert!(
                    !text.contains(secret.as_str()),
                    "secret {secret:?} survives in {place} ({text:?}) for: {}",
                    case.line
                );
            }
        }
    }
}

#[test]
fn ordinary_command_lines_come_out_word_for_word() {
    let cases = corpus(ORDINARY);
    assert!(cases.len() >= 60, "{} ordinary lines, want 60", cases.len());
    let redactor = Redactor::new(&[]);
    let documents: Vec<Document> = cases
        .iter()
        .map(|case| document(case, &redactor, CmdlineMode::Redacted))
        .collect();
    let json_lines = written(&documents, Format::Json, "ordinary");
    let pretty_lines = written(&documents, Format::Pretty, "ordinary");
    for (i, case) in cases.iter().enumerate() {
        let process = documents[i]
            .process
            .as_ref()
            .expect("a kill names its process");
        assert_eq!(
            process.args.as_ref(),
            Some(&case.args),
            "changed: {}",
            case.line
        );
        assert_eq!(
            process.command_line.as_deref(),
            Some(case.args.join(" ").as_str()),
            "changed: {}",
            case.line
        );
        assert!(
            !json_lines[i].contains(REDACTED) && !pretty_lines[i].contains(REDACTED),
            "masked something in: {}",
            case.line
        );
    }
}

#[test]
fn full_shows_the_command_line_as_captured_and_off_shows_none() {
    let case = &corpus(SECRETS)[0];
    let redactor = Redactor::new(&[]);
    let process = document(case, &redactor, CmdlineMode::Full)
        .process
        .expect("a process");
    assert_eq!(process.args, Some(case.args.clone()));
    let off = document(case, &redactor, CmdlineMode::Off);
    let json = written(std::slice::from_ref(&off), Format::Json, "off");
    let process = off.process.expect("a process");
    assert_eq!((process.args, process.command_line), (None, None));
    assert!(!json[0].contains(&case.secrets[0]));
}

#[test]
fn short_flags_are_secret_only_for_the_programs_that_take_passwords_with_them() {
    assert_eq!(
        redact(&["mysql", "-uroot", "-pS3cret", "-P", "3306", "db"]),
        args(&["mysql", "-uroot", "-p<redacted>", "-P", "3306", "db"])
    );
    assert_eq!(
        redact(&["mysql", "-p", "db"]),
        args(&["mysql", "-p", "db"]),
        "a bare -p prompts: the next argument is the database"
    );
    assert_eq!(
        redact(&["sshpass", "-p", "pw1", "ssh", "-p", "22", "host"]),
        args(&["sshpass", "-p", "<redacted>", "ssh", "-p", "22", "host"]),
        "ssh's -p is a port, even after sshpass"
    );
    assert_eq!(
        redact(&["docker", "run", "-p", "8080:80", "img"]),
        args(&["docker", "run", "-p", "8080:80", "img"])
    );
    assert_eq!(
        redact(&["docker", "login", "-p", "pw2", "reg"]),
        args(&["docker", "login", "-p", "<redacted>", "reg"])
    );
    assert_eq!(
        redact(&["/usr/bin/curl", "-u", "me:pw3", "-uyou:pw4", "https://x"]),
        args(&[
            "/usr/bin/curl",
            "-u",
            "me:<redacted>",
            "-uyou:<redacted>",
            "https://x"
        ])
    );
    assert_eq!(
        redact(&["curl", "-fsu", "me:pw6", "https://x"]),
        args(&["curl", "-fsu", "me:<redacted>", "https://x"]),
        "a flag ending a cluster takes the next argument"
    );
    assert_eq!(
        redact(&["python", "-u", "app.py"]),
        args(&["python", "-u", "app.py"])
    );
    assert_eq!(
        redact(&["htpasswd", "-bc", "f", "user", "pw5", ";", "ls", "x"]),
        args(&["htpasswd", "-bc", "f", "user", "<redacted>", ";", "ls", "x"]),
        "the last argument of htpasswd's command, not of the line"
    );
}

#[test]
fn a_secret_cut_at_the_kernel_limit_is_masked_whole() {
    let redactor = Redactor::new(&[]);
    assert_eq!(
        redactor.redact(&args(&["app", "--verbose", "ghp_16C7e42F"]), true),
        args(&["app", "--verbose", "<redacted>"])
    );
    assert_eq!(
        redactor.redact(&args(&["app", "--verbose", "ghp_16C7e42F"]), false),
        args(&["app", "--verbose", "ghp_16C7e42F"]),
        "too short for the shape when whole"
    );
}

#[test]
fn secret_words_are_extensible_and_case_blind() {
    let redactor = Redactor::new(&["Pin".to_owned()]);
    assert_eq!(
        redactor.redact(&args(&["--PIN=1234", "--Password=x", "--spin=3"]), false),
        args(&[
            "--PIN=<redacted>",
            "--Password=<redacted>",
            "--spin=<redacted>"
        ]),
        "extra words match as substrings, erring on the side of masking"
    );
}

#[test]
fn names_that_point_at_a_secret_keep_their_value() {
    assert_eq!(
        redact(&[
            "--key-file=/etc/x.pem",
            "--password-file",
            "/run/secrets/db",
            "--ssl-key",
            "secretkeymaterial",
            "--key",
            "/etc/ssl/client.key",
        ]),
        args(&[
            "--key-file=/etc/x.pem",
            "--password-file",
            "/run/secrets/db",
            "--ssl-key",
            "<redacted>",
            "--key",
            "/etc/ssl/client.key",
        ])
    );
}

#[test]
fn url_passwords_holding_a_slash_or_an_at_are_masked_whole() {
    assert_eq!(
        redact(&["amqp://u:a/b@c@host:5672/vhost", "https://host/p@x"]),
        args(&["amqp://u:<redacted>@host:5672/vhost", "https://host/p@x"])
    );
}

#[test]
fn scripts_are_masked_word_by_word_and_keep_their_quoting() {
    assert_eq!(
        redact(&[
            "sh",
            "-c",
            "curl -H 'Authorization: Bearer abc' -u 'me:pw' https://x && echo done"
        ]),
        args(&[
            "sh",
            "-c",
            "curl -H 'Authorization: Bearer <redacted>' -u 'me:<redacted>' https://x && echo done"
        ])
    );
}
