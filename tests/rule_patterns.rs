//! Rule patterns compiled on first use (`rules::Pattern`, issue 12's CGI start-up) decide
//! exactly as the patterns compiled at load did: the same patterns are refused at load, with
//! the same message, and the same JIDs match.
//!
//! The reference is what the configuration did before: `RegexBuilder` with
//! `case_insensitive(true)`, compiled at once. Random patterns are drawn from an alphabet of
//! regex syntax (classes, repetitions, groups, escapes, Unicode classes, flags) so that most
//! are invalid in some way and many are valid; the JIDs include the characters whose case
//! folding differs between ASCII and Unicode (K KELVIN SIGN, ſ LONG S).

use proptest::prelude::*;
use regex::RegexBuilder;

use xmpp_http_upload::rules::Pattern;

/// What loading used to say about a pattern: `Ok` or the last line of the compiler's error.
fn reference(source: &str) -> Result<regex::Regex, String> {
    RegexBuilder::new(source)
        .case_insensitive(true)
        .build()
        .map_err(|e| e.to_string().lines().last().unwrap_or("").trim().to_owned())
}

fn lazy(source: &str) -> Result<Pattern, String> {
    Pattern::new(source).map_err(|e| e.lines().last().unwrap_or("").trim().to_owned())
}

const JIDS: &[&str] = &[
    "admin@example.com",
    "ADMIN@example.com",
    "alice@example.org",
    "ſam@example.org",
    "\u{212A}im@example.org",
    "kim@example.org",
    "bob@sub.example.net",
    "",
    "ü@é.de",
    "x\ny@z",
];

fn same_decision(source: &str) {
    match (reference(source), lazy(source)) {
        (Ok(regex), Ok(pattern)) => {
            assert!(pattern.compile().is_ok(), "{source:?}");
            assert_eq!(pattern.as_str(), source);
            for jid in JIDS {
                assert_eq!(
                    pattern.is_match(jid),
                    regex.is_match(jid),
                    "{source:?} on {jid:?}"
                );
            }
        }
        (Err(before), Err(now)) => assert_eq!(before, now, "{source:?}"),
        (before, now) => panic!(
            "{source:?}: at load before {:?}, now {:?}",
            before.map(|_| ()),
            now.map(|_| ())
        ),
    }
}

#[test]
fn hand_picked_patterns_decide_as_before() {
    for source in [
        "",
        "^admin@example\\.com$",
        "@example\\.org$",
        ".*",
        "^Blocked@Example\\.org$",
        "^s",
        "^k",
        "(",
        "a{2,1}",
        "\\p{Greek}",
        "\\p{NoSuchClass}",
        "(?-u:\\xFF)",
        "(?-u:.)",
        "[z-a]",
        "\\w+@\\d",
        "(?i)x",
        "(?P<n>a)(?P<n>b)",
        "\\",
        &"(".repeat(300),
        &format!("{}a{}", "(".repeat(300), ")".repeat(300)),
    ] {
        same_decision(source);
    }
}

#[test]
fn a_pattern_too_large_to_compile_is_refused_at_compile_and_denies() {
    // Valid syntax, over the compiled size limit: loading cannot see it, compiling can.
    let source = "\\w{1000}{1000}";
    assert!(reference(source).is_err());
    let pattern = Pattern::new(source).expect("the syntax is valid");
    assert!(pattern.compile().is_err());
    // A broken rule stops the search and refuses whoever reaches it.
    let rules = vec![xmpp_http_upload::rules::Rule {
        pattern,
        action: xmpp_http_upload::rules::Action::Allow(Default::default()),
    }];
    assert!(xmpp_http_upload::rules::limits_for(&rules, "alice@example.org").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn random_patterns_decide_as_before(
        parts in prop::collection::vec(prop::sample::select(vec![
            "a", "K", "s", "@", ".", "\\.", "^", "$", "*", "+", "?", "{2}", "{1,", "}", "(", ")",
            "(?:", "(?i)", "(?-u:", "[", "]", "[^", "-", "|", "\\w", "\\d", "\\s", "\\b",
            "\\p{L}", "\\p{Foo}", "\\x", "\\xFF", "\\", "ſ", "é", "\\u{212A}", "&&", "[:alpha:]",
        ]), 0..12)
    ) {
        same_decision(&parts.concat());
    }
}
