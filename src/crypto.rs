//! The cryptographic primitives, each written once: HMAC-SHA256 (both signed-URL protocols),
//! a constant-time comparison (the slot API's secret) and random hex (slot tokens, temporary
//! file names). It does not decide anything: the protocols say what is signed and what a
//! mismatch means.

// `::hmac` is the RustCrypto crate; `crate::hmac` is our HMAC upload protocol, which uses this.
use ::hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::refusal::Error;

/// HMAC-SHA256 of `message` under `secret`.
pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> [u8; 32] {
    hmac_with(secret, message).finalize().into_bytes().into()
}

/// Whether `mac` is the HMAC-SHA256 of `message` under `secret`, compared in constant time.
pub fn hmac_sha256_matches(secret: &[u8], message: &[u8], mac: &[u8]) -> bool {
    hmac_with(secret, message).verify_slice(mac).is_ok()
}

fn hmac_with(secret: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length (RFC 2104 hashes a long one), so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("HMAC accepts a key of any length");
    mac.update(message);
    mac
}

/// Whether `a` and `b` are equal, compared without stopping at the first difference, so that
/// the time taken does not reveal how much of a secret was guessed right (only its length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `len` lowercase hex digits (`len` even) from the operating system's random source.
pub fn random_hex(len: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; len / 2];
    random_bytes(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The bytes one `getrandom` call fetches for a thread: a slot request needs 16, and a call
/// per token was 4 % of a slot request's CPU (a system call, under a hypervisor at that).
const RANDOM_AHEAD: usize = 512;

thread_local! {
    /// Bytes from the operating system not handed out yet (the front `RANDOM_AHEAD - left`
    /// are used and zeroed). Each byte is handed out once, and the program never forks, so no
    /// two tokens share one; what this holds is what a userspace generator's state would.
    static AHEAD: std::cell::RefCell<([u8; RANDOM_AHEAD], usize)> =
        const { std::cell::RefCell::new(([0; RANDOM_AHEAD], 0)) };
}

/// Fills `out` with bytes of the operating system's random source (`getrandom`), fetched
/// `RANDOM_AHEAD` at a time per thread. Not fork-safe: a process forked after a call would
/// hand out the same bytes as its parent (the program never forks; a library user that does
/// must not make tokens before it).
fn random_bytes(out: &mut [u8]) -> Result<(), Error> {
    let fetch = |buf: &mut [u8]| {
        getrandom::fill(buf)
            .map_err(|e| Error::io("reading random bytes", std::io::Error::other(e.to_string())))
    };
    if out.len() > RANDOM_AHEAD {
        return fetch(out);
    }
    AHEAD.with_borrow_mut(|(ahead, left)| {
        let mut filled = 0;
        while filled < out.len() {
            if *left == 0 {
                fetch(ahead)?;
                *left = RANDOM_AHEAD;
            }
            let take = (out.len() - filled).min(*left);
            let from = RANDOM_AHEAD - *left;
            out[filled..filled + take].copy_from_slice(&ahead[from..from + take]);
            ahead[from..from + take].fill(0);
            *left -= take;
            filled += take;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf 'what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe (RFC 4231 case 2)
    const JEFE: &str = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), JEFE);
    }

    #[test]
    fn hmac_matches_only_its_own_message() {
        let mac = hex::decode(JEFE).unwrap();
        assert!(hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            &mac
        ));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing!",
            &mac
        ));
        assert!(!hmac_sha256_matches(
            b"jefe",
            b"what do ya want for nothing?",
            &mac
        ));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            b"what do ya want for nothing?",
            &mac[..31]
        ));
    }

    #[test]
    fn hmac_empty_key() {
        // An empty secret is a key like any other (config refuses it; the primitive does not).
        assert_eq!(hmac_sha256(b"", b"").len(), 32);
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_bytes_are_handed_out_once_across_refills() {
        // 16 bytes at a time over several refills of the thread's buffer: no two alike, and
        // none all zero (the used part of the buffer is zeroed: a byte read twice would show).
        let tokens: Vec<[u8; 16]> = (0..3 * RANDOM_AHEAD / 16 + 5)
            .map(|_| {
                let mut token = [0u8; 16];
                random_bytes(&mut token).unwrap();
                token
            })
            .collect();
        let distinct: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(distinct.len(), tokens.len());
        assert!(tokens.iter().all(|t| t != &[0u8; 16]));
        // Odd sizes that straddle a refill, and one larger than the buffer.
        let mut odd = [0u8; 37];
        for _ in 0..40 {
            random_bytes(&mut odd).unwrap();
            assert!(odd.iter().any(|&b| b != 0));
        }
        let mut big = vec![0u8; RANDOM_AHEAD + 1];
        random_bytes(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }

    #[test]
    fn random_hex_length_and_alphabet() {
        let a = random_hex(40).unwrap();
        assert_eq!(a.len(), 40);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(a, random_hex(40).unwrap());
    }
}
