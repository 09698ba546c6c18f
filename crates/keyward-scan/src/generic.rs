//! Generic secrets: a value assigned to a name that says "secret" (`api_key`, `token`,
//! `client_secret`, `password`, ...), kept only when the value looks random enough and
//! is not a known kind of harmless value.
//!
//! Quiet by design: hashes and digests (by the name: `sha`, `hash`, `checksum`,
//! `integrity`...; by the value: `sha512-...`, `sha256:...`), UUIDs, commit ids (hex under
//! a `commit`/`rev` name), placeholders (`YOUR_API_KEY`, `xxxx`, `${VAR}`, `<token>`,
//! `changeme`), references to other variables (`process.env.X`, `config.api_key`,
//! `os.getenv(...)`), documentation examples (`EXAMPLE`, `sample`, `dummy`), words, and
//! low-entropy strings.

use regex::bytes::{Regex, RegexBuilder};

/// What kind of name the value was assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `api_key`, `token`, `secret`, ...: expects a random string.
    Secret,
    /// `password`, `passwd`, `pwd`: may be shorter and less random.
    Password,
}

pub const KEYWORDS: &[&str] = &[
    "key",
    "secret",
    "token",
    "pass",
    "pwd",
    "credential",
    "auth",
];

/// Longest name and value the generic detector considers (the pattern itself is unbounded:
/// counted repetitions blow up its lazy DFA).
pub const NAME_MAX: usize = 80;
pub const VALUE_MAX: usize = 300;

pub fn regex() -> Regex {
    // name, separator (with an optional type annotation: `const K: &str =`), value.
    let pattern = r#"(?i)([a-z0-9_.\-]*(?:api[_.\-]?key|apikey|secret|token|passw(?:or)?d|passwd|pwd|[_.\-]pass\b|auth[_.\-]?key|access[_.\-]?key|private[_.\-]?key|signing[_.\-]?key|encryption[_.\-]?key|credential)[a-z0-9_.\-]*)(?:['"]?\]?[ \t]*(?::[ \t]*&?(?:'static\s+)?[a-z_][a-z0-9_<>\[\]]{0,24}\s*)?(?:=|:=|:|=>|<-|\?=|\|\|=)|"?\s+value\s*=|>)[ \t]*(?:"([^"\n]{6,})"|'([^'\n]{6,})'|`([^`\n]{6,})`|([^\s"'`;,<>(){}\[\]]{6,}))"#;
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(50 << 20)
        // A larger lazy-DFA cache: the case-insensitive alternation has many states, and a
        // small cache is rebuilt over and over (measured: a third of the scan time).
        .dfa_size_limit(64 << 20)
        .build()
        .expect("the generic pattern compiles")
}

/// Parts of a name that mean the value is not a secret.
const QUIET_NAMES: &[&str] = &[
    "hash",
    "sha",
    "md5",
    "digest",
    "checksum",
    "integrity",
    "commit",
    "etag",
    "nonce",
    "public",
    "pubkey",
    "publishable",
    "_url",
    "-url",
    ".url",
    "_uri",
    "endpoint",
    "_path",
    "_file",
    "_dir",
    "_name",
    "_env",
    "_var",
    "_field",
    "_header",
    "_length",
    "_len",
    "_size",
    "_count",
    "_max",
    "_min",
    "_ttl",
    "expir",
    "_type",
    "_prefix",
    "_format",
    "_pattern",
    "_regex",
    "_label",
    "_limit",
    "_timeout",
    "tokenizer",
    "_id",
    "_at",
    "_policy",
    "_rotation",
    "_strength",
    "_hint",
    "_placeholder",
    "_example",
    "_test",
    "_mock",
    "_fake",
    "_dummy",
    "_sample",
    "_template",
    "keyboard",
    "_keys",
    "_tokens",
];

/// Parts of a value that mark a placeholder or a documentation example.
const PLACEHOLDERS: &[&str] = &[
    "example",
    "sample",
    "dummy",
    "placeholder",
    "your_",
    "your-",
    "yourapi",
    "<your",
    "xxxx",
    "****",
    "....",
    "changeme",
    "change_me",
    "change-me",
    "redacted",
    "replace",
    "insert",
    "todo",
    "fixme",
    "secret_here",
    "key_here",
    "token_here",
    "here>",
    "notreal",
    "not_real",
    "not-a-real",
    "fake",
    "foobar",
    "abcdefgh",
    "12345678",
    "00000000",
    "password",
    "mock",
];

/// Whole values that are stand-ins (`user:pass@host`).
const DUMMY_VALUES: &[&str] = &[
    "pass", "passwd", "pwd", "secret", "test", "admin", "root", "guest", "user", "foo", "bar",
    "baz", "qux", "hello", "world", "letmein", "hunter2", "s3cr3t", "p@ssw0rd", "p4ssw0rd",
];

/// A match whose host is a documentation domain (RFC 2606): `https://u:p@example.com`.
pub fn is_doc_host(whole: &[u8]) -> bool {
    let lower = whole.to_ascii_lowercase();
    [
        &b"example.com"[..],
        b"example.org",
        b"example.net",
        b".example",
        b".invalid",
    ]
    .iter()
    .any(|d| memchr::memmem::find(&lower, d).is_some())
}

/// Whether a UUID (GUID) appears anywhere in the value.
fn contains_uuid(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() >= 36 && (0..=b.len() - 36).any(|i| is_uuid_bytes(&b[i..i + 36]))
}

/// Values that are references to something else, not literals.
const REFERENCES: &[&str] = &[
    "${",
    "{{",
    "$(",
    "%(",
    "#{",
    "<%",
    "process.env",
    "os.environ",
    "getenv",
    "env[",
    "env(",
    "env.",
    "vault:",
    "arn:aws",
    "secretsmanager",
    "ref+",
    "!ref",
    "::",
    "->",
];

/// Whether a string is noise that no rule should report (placeholders, doc examples,
/// references). Applies to every rule but the Keyward one.
pub fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    DUMMY_VALUES.contains(&lower.as_str())
        || PLACEHOLDERS.iter().any(|p| lower.contains(p))
        || REFERENCES.iter().any(|p| lower.contains(p))
        || lower.starts_with('$')
        || lower.starts_with('%')
        || lower.starts_with('<')
        || lower.starts_with('{')
        || dominant_char(value) * 2 > value.len()
}

fn dominant_char(value: &str) -> usize {
    let mut counts = [0usize; 256];
    for b in value.bytes() {
        counts[b as usize] += 1;
    }
    counts.into_iter().max().unwrap_or(0)
}

/// Shannon entropy in bits per byte.
pub fn entropy(value: &str) -> f32 {
    if value.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in value.bytes() {
        counts[b as usize] += 1;
    }
    let n = value.len() as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f32 / n;
            -p * p.log2()
        })
        .sum()
}

pub fn classify_name(name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    if QUIET_NAMES.iter().any(|q| lower.contains(q)) {
        return None;
    }
    if lower.contains("pass") || lower.contains("pwd") {
        Some(Kind::Password)
    } else {
        Some(Kind::Secret)
    }
}

fn is_uuid_bytes(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A dotted identifier path (`config.api_key`, `self.token`, `settings.SECRET_KEY`) or a
/// plain identifier made of words (`apiKeyFromEnv`, `API_TOKEN`).
fn is_identifier(v: &str) -> bool {
    let parts_ok = v
        .split(['.', '_', '-'])
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphabetic()));
    parts_ok
        || (v.contains('.')
            && v.split('.').all(|p| {
                p.len() >= 2
                    && p.as_bytes()[0].is_ascii_alphabetic()
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }))
}

struct Classes {
    lower: bool,
    upper: bool,
    digit: bool,
    symbol: bool,
}

fn classes(v: &str) -> Classes {
    Classes {
        lower: v.bytes().any(|b| b.is_ascii_lowercase()),
        upper: v.bytes().any(|b| b.is_ascii_uppercase()),
        digit: v.bytes().any(|b| b.is_ascii_digit()),
        symbol: v.bytes().any(|b| !b.is_ascii_alphanumeric()),
    }
}

/// Whether `value`, assigned to a name of `kind`, is reported.
pub fn is_secret(kind: Kind, value: &str) -> bool {
    let value = value.trim();
    // Base64 JSON (`eyJ...`) is a JWT or its payload: the `jwt` rule's business.
    if value.contains(char::is_whitespace)
        || is_placeholder(value)
        || contains_uuid(value)
        || value.starts_with("eyJ")
        || value.contains('\\')
    {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    // Integrity strings and typed digests, paths, URLs, booleans.
    if [
        "sha1-", "sha256-", "sha384-", "sha512-", "sha1:", "sha256:", "md5:", "sha512:",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
        || value.starts_with('/')
        || value.starts_with("./")
        || value.starts_with("~/")
        || value.contains("://")
        || value.ends_with(".pem")
        || value.ends_with(".key")
        || value.ends_with(".json")
        || is_identifier(value)
    {
        return false;
    }
    let c = classes(value);
    let n_classes = [c.lower, c.upper, c.digit, c.symbol]
        .iter()
        .filter(|&&x| x)
        .count();
    let h = entropy(value);
    match kind {
        Kind::Secret => {
            value.len() >= 12
                && (c.digit || value.len() >= 32)
                && (c.lower || c.upper)
                && n_classes >= 2
                && h >= if value.len() < 20 || value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    3.0
                } else {
                    3.3
                }
        }
        Kind::Password => value.len() >= 8 && n_classes >= 3 && h >= 2.8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(text: &str) -> Option<String> {
        let re = regex();
        let caps = re.captures(text.as_bytes())?;
        let name = std::str::from_utf8(&caps[1]).unwrap();
        assert!(name.len() <= NAME_MAX);
        let value = (2..=5).find_map(|i| caps.get(i)).unwrap();
        let value = std::str::from_utf8(value.as_bytes()).unwrap();
        let kind = classify_name(name)?;
        is_secret(kind, value).then(|| value.to_owned())
    }

    #[test]
    fn assignments_in_many_languages() {
        let v = "q8Zr2LmX0vT5nWc7Jp4Ks9Hd";
        for line in [
            format!("API_KEY={v}"),
            format!("export API_KEY=\"{v}\""),
            format!("api_key = '{v}'"),
            format!("  apiKey: \"{v}\","),
            format!("\"client_secret\": \"{v}\""),
            format!("$apiToken = '{v}';"),
            format!("token := \"{v}\""),
            format!(":auth_token => '{v}',"),
            format!("const API_SECRET: &str = \"{v}\";"),
            format!("private static final String SECRET_KEY = \"{v}\";"),
            format!("<add key=\"ApiKey\" value=\"{v}\" />"),
            format!("<apiKey>{v}</apiKey>"),
            format!("secret_key: {v}"),
        ] {
            assert_eq!(hit(&line).as_deref(), Some(v), "{line}");
        }
    }

    #[test]
    fn passwords() {
        assert!(hit("password = \"Tr0ub4dor&3x!\"").is_some());
        assert!(hit("DB_PASSWORD=Hk8#vPq2$wLm").is_some());
        assert!(hit("$DB_PASS = 'KHACpN6trf*xAVnR';").is_some()); // keyward:allow
        assert!(hit("compass = 'KHACpN6trf*xAVnR';").is_none());
        assert!(hit("password = \"correcthorsebattery\"").is_none());
        assert!(hit("password: hunter2").is_none());
    }

    #[test]
    fn quiet_values() {
        for line in [
            "api_key = \"YOUR_API_KEY\"",
            "api_key = \"xxxxxxxxxxxxxxxxxxxxxxxx\"",
            "API_KEY=${API_KEY}",
            "token: {{ .Values.token }}",
            "api_key = os.getenv(\"API_KEY\")",
            "apiKey: process.env.API_KEY,",
            "secret = config.secret_key",
            "token_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
            "\"integrity\": \"sha512-3Yt3KrCfOTuFkdVxqA3s0Bd6XR9DZg5Z3Jf6qAsVt5zSqkCqIpTiq2SI3tXYbfjC3nVzgvuPXzc7yT0RZgZzAg==\"",
            "api_key = \"123e4567-e89b-12d3-a456-426614174000\"",
            "commit_token = \"da39a3ee5e6b4b0d3255bfef95601890afd80709\"",
            "secret_key = \"AKIAIOSFODNN7EXAMPLE\"",
            "token = \"<token>\"",
            "password = \"changeme\"",
            "password = \"{a:20}\"",
            "token_type = \"bearer\"",
            "api_key_file = \"/etc/keys/api.key\"",
            "token = getToken()",
            "secret: apiKeyFromEnvironment",
            "secret = base64.b64encode(os.urandom(32))",
            "api_key=<your-api-key>\nserver.port=8080",
        ] {
            assert_eq!(hit(line), None, "{line}");
        }
    }

    #[test]
    fn entropy_of_simple_strings() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("ab") - 1.0).abs() < 1e-6);
    }
}
