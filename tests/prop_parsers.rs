//! Property tests (proptest) of every pure function that parses outside input: file names,
//! percent-decoding, query strings, safe paths, content types and lengths, configuration text,
//! HMAC signatures in queries, JWT upload tokens, and CGI parameters.
//!
//! The properties are the ones the program's safety rests on: nothing panics, a name that
//! passes is one plain path component, a joined path never leaves the upload root, arbitrary
//! input never verifies as a signature or token. Each test runs `PROPTEST_CASES` cases when
//! that is set (e.g. `PROPTEST_CASES=100000` for a long run), else the number written here.

use std::collections::HashMap;
use std::path::{Component, Path};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use sha2::Sha256;

use xmpp_http_upload::config::{Config, parse_human_duration, parse_human_size};
use xmpp_http_upload::content_type::media_type;
use xmpp_http_upload::files::{SafePath, is_token};
use xmpp_http_upload::hmac::{Version, signature_from_query, signed_message, verify};
use xmpp_http_upload::jwt::verify_token;
use xmpp_http_upload::name::{
    MAX_NAME_BYTES, is_safe_name, parse_query, percent_decode_segment, percent_encode_segment,
    sanitize_file_name, url_name_matches,
};
use xmpp_http_upload::put::{check_media_type, declared_length};
use xmpp_http_upload::request::Request;

/// The number of cases: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any Unicode text of `min..=max` characters (faster to generate than a regex strategy).
fn chars(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), min..=max).prop_map(String::from_iter)
}

/// Text a hostile client might send as a name or path segment: traversal pieces, encodings of
/// them, separators, NUL, overlong UTF-8 escapes, control and bidi characters, and any Unicode.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("\0".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2E%2E%2F".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("%c0%ae".to_string()),
        Just("%25".to_string()),
        Just("\u{202e}".to_string()),
        Just("\u{ff0e}".to_string()),
        Just("\u{2215}".to_string()),
        Just("~".to_string()),
        Just(" ".to_string()),
        "[a-zA-Z0-9._-]{1,6}",
        chars(1, 4),
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// A 40-hex token, or something that only looks a bit like one.
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{40}",
        "[0-9a-fA-F]{38,42}",
        Just("..".to_string()),
        hostile_text(),
    ]
}

/// `root` joined with a `SafePath`, checked: below `root`, only normal components, and as
/// many of them as expected.
fn assert_stays_under(root: &Path, path: &SafePath, expected_components: usize) {
    let joined = root.join(path.to_string());
    assert!(joined.starts_with(root), "{joined:?} escapes {root:?}");
    let below: Vec<Component> = joined.strip_prefix(root).unwrap().components().collect();
    assert_eq!(
        below.len(),
        expected_components,
        "{joined:?}: unexpected component count"
    );
    for component in below {
        match component {
            Component::Normal(part) => {
                let part = part.to_str().unwrap();
                assert!(
                    !part.starts_with('.'),
                    "dot component {part:?} in {joined:?}"
                );
                assert!(!part.contains('\0'), "NUL in {joined:?}");
            }
            other => panic!("{other:?} in {joined:?}"),
        }
    }
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn sanitized_names_are_one_plain_component(raw in hostile_text()) {
        match sanitize_file_name(&raw) {
            Ok(name) => {
                prop_assert!(is_safe_name(&name), "{name:?} from {raw:?} is not safe");
                prop_assert_eq!(sanitize_file_name(&name).unwrap(), name.clone(), "idempotent");
                prop_assert!(!name.starts_with('.'));
                prop_assert!(!name.contains(['/', '\\', '\0']));
                prop_assert!(name.len() <= MAX_NAME_BYTES);
                // One character for one: nothing is dropped or added, so names stay recognisable.
                prop_assert_eq!(name.chars().count(), raw.chars().count());
                let components: Vec<_> = Path::new(&name).components().collect();
                prop_assert_eq!(components.len(), 1);
                prop_assert!(matches!(components[0], Component::Normal(_)));
            }
            Err(refusal) => {
                prop_assert_eq!(refusal.kind.status(), 400);
                let mapped_len: usize = raw
                    .chars()
                    .map(|c| if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') { c.len_utf8() } else { 1 })
                    .sum();
                prop_assert!(raw.is_empty() || mapped_len > MAX_NAME_BYTES,
                    "refused {:?} although it maps to {} bytes", raw, mapped_len);
            }
        }
    }

    #[test]
    fn safe_names_are_exactly_the_sanitiser_fixpoints(raw in hostile_text()) {
        let safe = is_safe_name(&raw);
        prop_assert_eq!(safe, sanitize_file_name(&raw).is_ok_and(|n| n == raw));
        if safe {
            prop_assert!(raw != "." && raw != ".." && !raw.contains('/'));
        }
    }

    #[test]
    fn percent_encoding_round_trips(text in chars(0, 40)) {
        let encoded = percent_encode_segment(&text);
        prop_assert!(!encoded.contains(['/', '?', '#', ' ', '%']) || encoded.contains('%'));
        prop_assert!(encoded.is_ascii());
        prop_assert_eq!(percent_decode_segment(&encoded), Some(text));
    }

    #[test]
    fn percent_decoding_never_panics(segment in hostile_text()) {
        if let Some(decoded) = percent_decode_segment(&segment) {
            // Decoding never makes text longer.
            prop_assert!(decoded.len() <= segment.len());
        }
    }

    #[test]
    fn url_names_match_raw_once_or_twice_encoded_only(
        raw in hostile_text(),
        segment in hostile_text(),
    ) {
        let Ok(name) = sanitize_file_name(&raw) else { return Ok(()); };
        let once = percent_encode_segment(&name);
        let twice = once.replace('%', "%25");
        prop_assert!(url_name_matches(&name, &name));
        prop_assert!(url_name_matches(&once, &name));
        prop_assert!(url_name_matches(&twice, &name));
        if twice != once {
            prop_assert!(!url_name_matches(&twice.replace('%', "%25"), &name), "three times is too many");
        }
        // An arbitrary segment matches only when one of its decodings is the name.
        if url_name_matches(&segment, &name) {
            let d1 = percent_decode_segment(&segment);
            let d2 = d1.as_deref().and_then(percent_decode_segment);
            prop_assert!(segment == name || d1.as_deref() == Some(&*name) || d2.as_deref() == Some(&*name));
        }
    }

    #[test]
    fn queries_round_trip(pairs in prop::collection::vec((chars(0, 12), chars(0, 24)), 0..12)) {
        let form = |s: &str| percent_encode_segment(s);
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", form(k), form(v))).collect();
        let parsed = parse_query(&query.join("&")).unwrap();
        prop_assert_eq!(parsed, pairs);
    }

    #[test]
    fn arbitrary_queries_never_panic(query in "[a-z=&?%+0-9A-F\\PC]{0,200}") {
        if let Ok(pairs) = parse_query(&query) {
            for (k, v) in &pairs {
                prop_assert!(!k.contains(['&', '?']) && !v.contains(['&', '?']) || query.contains('%'));
            }
        }
    }

    #[test]
    fn slot_paths_stay_under_the_root(token in token_like(), name in hostile_text()) {
        let root = Path::new("/srv/xhu/files");
        match SafePath::slot(&token, &name) {
            Ok(path) => {
                prop_assert!(is_token(&token) && is_safe_name(&name));
                assert_stays_under(root, &path, 2);
                prop_assert_eq!(path.file_name(), name.as_str());
            }
            Err(refusal) => {
                prop_assert!(!is_token(&token) || !is_safe_name(&name));
                prop_assert!(matches!(refusal.kind.status(), 400 | 404));
            }
        }
    }

    #[test]
    fn sanitized_slot_paths_always_exist(token in "[0-9a-f]{40}", raw in hostile_text()) {
        if let Ok(name) = sanitize_file_name(&raw) {
            let path = SafePath::slot(&token, &name).expect("a sanitised name is a safe name");
            assert_stays_under(Path::new("/u"), &path, 2);
        }
    }

    #[test]
    fn external_paths_stay_under_the_root(
        dir in prop_oneof![Just("share"), Just("file_share"), Just("a/b")],
        segments in prop::collection::vec(hostile_text(), 0..10),
    ) {
        let root = Path::new("/srv/xhu/files");
        if let Ok(path) = SafePath::under(dir, &segments) {
            prop_assert!((2..=8).contains(&segments.len()));
            let dir_parts = dir.split('/').count();
            assert_stays_under(root, &path, dir_parts + segments.len());
            prop_assert!(root.join(path.to_string()).starts_with(root.join(dir)));
        }
    }

    #[test]
    fn declared_lengths_are_exact_u64(
        length in prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            Just("-1".to_string()),
            Just("99999999999999999999".to_string()),
            Just("9223372036854775808".to_string()),
            Just(" 12 ".to_string()),
            Just("0x10".to_string()),
            Just("1e3".to_string()),
            chars(0, 24),
        ],
        chunked in any::<bool>(),
    ) {
        let req = Request {
            method: "PUT".into(),
            content_length: Some(length.clone()),
            transfer_encoding: chunked.then(|| "chunked".to_string()),
            ..Request::default()
        };
        match declared_length(&req) {
            Ok(n) => {
                prop_assert!(!chunked);
                prop_assert_eq!(Some(n), length.trim().parse::<u64>().ok());
            }
            Err(refusal) => prop_assert!(matches!(refusal.kind.status(), 400 | 411)),
        }
    }

    #[test]
    fn content_types_compare_by_media_type(
        slot_type in chars(0, 30),
        sent in proptest::option::of(chars(0, 30)),
    ) {
        let mt = media_type(&slot_type);
        prop_assert!(!mt.contains(';'));
        prop_assert_eq!(mt.clone(), mt.trim().to_ascii_lowercase());
        let req = Request { content_type: sent.clone(), ..Request::default() };
        let verdict = check_media_type(&req, Some(&slot_type));
        if mt != "application/octet-stream" {
            let same = sent.as_deref().map(media_type) == Some(mt);
            prop_assert_eq!(verdict.is_ok(), same);
        }
        prop_assert!(check_media_type(&req, None).is_ok());
    }

    #[test]
    fn human_sizes_and_durations_never_wrap(n in any::<u64>(), unit in 0usize..10, junk in chars(0, 12)) {
        let units = [("", 1u64), ("B", 1), ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000),
            ("TB", 1_000_000_000_000), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)];
        let (suffix, factor) = units[unit];
        prop_assert_eq!(parse_human_size(&format!("{n} {suffix}")).ok(), n.checked_mul(factor));
        let durations = [("s", 1u64), ("m", 60), ("h", 3600), ("d", 86_400), ("w", 604_800)];
        let (suffix, factor) = durations[unit % durations.len()];
        prop_assert_eq!(parse_human_duration(&format!("{n}{suffix}")).ok(), n.checked_mul(factor).and_then(|s| i64::try_from(s).ok()));
        let _ = parse_human_size(&junk);
        let _ = parse_human_duration(&junk);
    }

    #[test]
    fn hmac_signatures_in_queries(
        query in "[a-z0-9=&?%+]{0,120}",
        mac in prop::collection::vec(any::<u8>(), 32),
        other in prop::collection::vec(any::<u8>(), 32),
        noise in "[a-uw-z0-9=&]{0,30}",
    ) {
        if let Ok(signature) = signature_from_query(&query) {
            prop_assert_eq!(signature.mac.len(), 32);
        }
        let v1 = signature_from_query(&format!("{noise}&v={}", hex::encode(&mac))).unwrap();
        prop_assert_eq!(v1.version, Version::V1);
        prop_assert_eq!(&v1.mac, &mac);
        // The highest version present wins, whatever the order.
        let both = signature_from_query(&format!("v={}&{noise}&v2={}", hex::encode(&other), hex::encode(&mac))).unwrap();
        prop_assert_eq!(both.version, Version::V2);
        prop_assert_eq!(&both.mac, &mac);
        // A wrong length is refused, never padded or truncated.
        let short = format!("v={}", hex::encode(&mac[..31]));
        let long = format!("v={}00", hex::encode(&mac));
        prop_assert!(signature_from_query(&short).is_err());
        prop_assert!(signature_from_query(&long).is_err());
    }

    #[test]
    fn only_the_right_secret_verifies_an_hmac(
        secret in prop::collection::vec(any::<u8>(), 1..64),
        path in chars(1, 40),
        size in any::<u64>(),
        content_type in chars(0, 20),
        flip in 0usize..256,
    ) {
        let message = signed_message(Version::V2, &path, size, &content_type);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret).unwrap();
        mac.update(&message);
        let good = mac.finalize().into_bytes().to_vec();
        let query = format!("v2={}", hex::encode(&good));
        let signature = signature_from_query(&query).unwrap();
        prop_assert!(verify(&secret, &signature, &message));
        let mut bad = signature.clone();
        bad.mac[flip % 32] ^= 1 << (flip % 8);
        prop_assert!(!verify(&secret, &bad, &message));
        let v1 = signed_message(Version::V1, &path, size, &content_type);
        prop_assert!(!verify(&secret, &signature, &v1));
        let bigger = signed_message(Version::V2, &path, size.wrapping_add(1), &content_type);
        prop_assert!(!verify(&secret, &signature, &bigger));
    }

    #[test]
    fn arbitrary_tokens_never_verify(
        secret in prop::collection::vec(any::<u8>(), 0..48),
        token in prop_oneof![
            chars(0, 200),
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,60}",
            "[A-Za-z0-9_.=+/-]{0,300}",
        ],
    ) {
        prop_assert!(verify_token(&secret, &token).is_err());
    }

    #[test]
    fn forged_tokens_never_verify(
        secret in prop::collection::vec(any::<u8>(), 1..48),
        claims in claims_json(),
        flip in any::<usize>(),
        alg in prop_oneof![Just("none"), Just("HS384"), Just("hs256"), Just("RS256"), Just("")],
    ) {
        let good = sign(&secret, "HS256", &claims);
        prop_assert!(verify_token(&secret, &good).is_ok(), "a properly signed token must verify: {}", good);
        // Any single changed character breaks it (or makes it unreadable).
        let mut bytes = good.clone().into_bytes();
        let i = flip % bytes.len();
        let replacement = if bytes[i] == b'A' { b'B' } else { b'A' };
        bytes[i] = replacement;
        let tampered = String::from_utf8(bytes).unwrap();
        if tampered != good {
            prop_assert!(verify_token(&secret, &tampered).is_err(), "tampered token verified: {}", tampered);
        }
        // Another secret, another algorithm, or no signature: refused.
        let mut other = secret.clone();
        other[0] ^= 0xff;
        prop_assert!(verify_token(&other, &good).is_err());
        prop_assert!(verify_token(&secret, &sign(&secret, alg, &claims)).is_err());
        let unsigned = good.rsplit_once('.').unwrap().0.to_string() + ".";
        prop_assert!(verify_token(&secret, &unsigned).is_err());
    }

    #[test]
    fn requests_from_arbitrary_params(
        params in prop::collection::hash_map(
            prop_oneof![
                Just("REQUEST_METHOD".to_string()), Just("REQUEST_URI".to_string()),
                Just("QUERY_STRING".to_string()), Just("CONTENT_LENGTH".to_string()),
                Just("HTTP_CONTENT_LENGTH".to_string()), Just("CONTENT_TYPE".to_string()),
                Just("HTTP_TRANSFER_ENCODING".to_string()), Just("HTTPS".to_string()),
                Just("REQUEST_SCHEME".to_string()), Just("XHU_AUTHORIZE".to_string()),
                Just("HTTP_AUTHORIZATION".to_string()), Just("REMOTE_ADDR".to_string()),
                "[A-Z_]{1,12}",
            ],
            prop_oneof![Just(String::new()), Just("1".to_string()), chars(0, 60), "[/?a-z%.]{0,40}"],
            0..14,
        ),
        authorizer in any::<bool>(),
    ) {
        let map: HashMap<String, String> = params;
        let req = Request::from_params(|k| map.get(k).cloned(), authorizer);
        let get = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
        prop_assert!(!req.path.contains('?'));
        let uri = get("REQUEST_URI").unwrap_or_default();
        prop_assert!(uri.starts_with(&req.path));
        let expected_query = get("QUERY_STRING")
            .unwrap_or_else(|| uri.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default());
        prop_assert_eq!(&req.query, &expected_query);
        prop_assert_eq!(req.decide_only, authorizer || get("XHU_AUTHORIZE").as_deref() == Some("1"));
        prop_assert_eq!(req.method, get("REQUEST_METHOD").unwrap_or_default());
        prop_assert_eq!(req.content_length, get("CONTENT_LENGTH").or_else(|| get("HTTP_CONTENT_LENGTH")));
    }
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn config_text_never_panics(text in config_text()) {
        match Config::parse(&text, "fuzz.toml") {
            Ok(config) => {
                prop_assert!(config.upload_root.is_absolute());
                prop_assert!(config.database.sqlite_path().is_none_or(|p| p.is_absolute()));
                prop_assert!(config.put_timeout > 0);
            }
            Err(error) => prop_assert!(error.to_string().starts_with("fuzz.toml"), "message names the file: {error}"),
        }
    }

    #[test]
    fn config_noise_never_panics(text in chars(0, 300), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Config::parse(&text, "noise.toml");
        let _ = Config::parse(&String::from_utf8_lossy(&bytes), "noise.toml");
    }
}

/// JSON claims of an upload token, of the shape Prosody writes, with hostile values.
fn claims_json() -> impl Strategy<Value = String> {
    (
        chars(0, 20),
        any::<u32>(),
        "[A-Za-z0-9_-]{0,30}",
        hostile_text(),
        any::<u64>(),
    )
        .prop_map(|(sub, exp, slot, filename, filesize)| {
            serde_json::json!({
                "sub": sub, "iat": 1, "exp": exp, "slot": slot, "expires": exp,
                "filename": filename, "filesize": filesize, "filetype": "image/png",
            })
            .to_string()
        })
}

/// `header.payload.signature` signed with HMAC-SHA256 whatever `alg` says.
fn sign(secret: &[u8], alg: &str, claims: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let signed = format!("{header}.{payload}");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// TOML-ish configuration text: known keys and tables with values of every type (and
/// sometimes garbage), in random order.
fn config_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(r#""/srv/up""#.to_string()),
        Just(r#""relative/path""#.to_string()),
        Just(r#""10 MiB""#.to_string()),
        Just(r#""99999999999999999999 TiB""#.to_string()),
        Just(r#""360s""#.to_string()),
        Just(r#""0s""#.to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("9223372036854775807".to_string()),
        Just("true".to_string()),
        Just(r#"["127.0.0.1", "::1", "10.0.0.0/8", "not an ip"]"#.to_string()),
        Just(r#"{ window = "1h", bytes = "1 GiB" }"#.to_string()),
        Just(r#"{ window = "0s", uploads = -3 }"#.to_string()),
        Just(r#"'(unclosed'"#.to_string()),
        Just(r#"'^a.*$'"#.to_string()),
        Just(r#""https://upload.example.org/""#.to_string()),
        Just(r#""/prefix/""#.to_string()),
        Just("1.5".to_string()),
        "\"\\PC{0,12}\"",
        "[0-9]{1,25}",
    ];
    let key = prop_oneof![
        Just("upload_root"),
        Just("database"),
        Just("base_url"),
        Just("slot_prefix"),
        Just("put_prefix"),
        Just("get_prefix"),
        Just("put_timeout"),
        Just("retention"),
        Just("webserver_download"),
        Just("listen"),
        Just("allow_from"),
        Just("secret"),
        Just("match"),
        Just("deny"),
        Just("max_file_size"),
        Just("max_total_size"),
        Just("bytes_per_window"),
        Just("uploads_per_window"),
        Just("prefix"),
        Just("unknown_key"),
    ];
    let line = prop_oneof![
        6 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => Just("[slot_api]".to_string()),
        1 => Just("[[rules]]".to_string()),
        1 => Just("[[external]]".to_string()),
        1 => Just("[[file_share]]".to_string()),
        1 => Just("[rules]".to_string()),
        1 => chars(0, 30),
    ];
    (any::<bool>(), prop::collection::vec(line, 0..24)).prop_map(|(with_required, lines)| {
        let mut text = String::new();
        if with_required {
            text.push_str("upload_root = \"/srv/up\"\ndatabase = \"/srv/db.sqlite3\"\n");
        }
        text.push_str(&lines.join("\n"));
        text
    })
}
