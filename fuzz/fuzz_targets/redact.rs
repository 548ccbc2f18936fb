//! Command lines, as any user on the host may write them, redacted the way
//! events show them.
//!
//! The input's first byte chooses how (a command line the kernel cut, which
//! secret-bearing position a password goes to, where among the arguments);
//! the rest is the arguments, split at NUL as in `/proc/<pid>/cmdline`.
//! Whatever the arguments, redaction must not panic, must keep their
//! number, and must mask a password in a secret-bearing position whatever
//! surrounds it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oom_collector::redact::Redactor;

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let args: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let truncated = choice & 1 != 0;
    let redactor = Redactor::new(&[]);

    let shown = redactor.redact(&args, truncated);
    assert_eq!(shown.len(), args.len(), "{args:?} became {shown:?}");

    // The first argument becomes a password, planted among the others;
    // framed so that it never looks like an option or a harmless value.
    let secret = format!("Zq{}!", args[0]);
    let mut planted = args[1..].to_vec();
    let at = usize::from(choice >> 3) % (planted.len() + 1);
    let secret_at = match (choice >> 1) & 3 {
        0 => {
            planted.insert(at, format!("--password={secret}"));
            at
        }
        1 => {
            planted.insert(at, "--password".to_owned());
            planted.insert(at + 1, secret.clone());
            at + 1
        }
        2 => {
            planted.insert(at, "-H".to_owned());
            planted.insert(at + 1, format!("Authorization: Bearer {secret}"));
            at + 1
        }
        _ => {
            // A URL's password holds no whitespace or quotes (they would be
            // escaped), but may hold `/`, `?`, `#` and `@`.
            let secret: String = secret
                .chars()
                .filter(|c| !c.is_whitespace() && !matches!(c, '"' | '\''))
                .collect();
            planted.insert(at, format!("amqp://user:{secret}@mq:5672/vhost"));
            let shown = redactor.redact(&planted, truncated);
            assert!(
                !shown[at].contains(&secret),
                "the URL password {secret:?} survives in {:?} of {planted:?}",
                shown[at]
            );
            return;
        }
    };
    let shown = redactor.redact(&planted, truncated);
    assert_eq!(shown.len(), planted.len(), "{planted:?} became {shown:?}");
    assert!(
        !shown[secret_at].contains(&secret),
        "the password {secret:?} survives in {:?} of {planted:?}",
        shown[secret_at]
    );
});
