//! Tokens of well-known shapes (cloud keys, JWTs, API tokens, webhook
//! URLs), masked wherever they are.

use super::REDACTED;

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
pub(super) fn mask_token_shapes(text: &str) -> String {
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
