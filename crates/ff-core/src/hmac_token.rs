//! Waitpoint HMAC tokens and the per-partition keystore (spec 02 §2).
//!
//! A token is `<kid>:<40 lowercase hex>`, the HMAC-SHA1 of
//! `waitpoint_id|waitpoint_key|created_at_ms` under the secret of `kid`. The
//! keystore is pure data: backends load it, call one method, and store it back.
//! Time is always a parameter (`now_ms`), never read here.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::error::{ConflictKind, EngineError, ValidationKind};
use crate::ids::WaitpointId;

/// Length of a token's digest part, in lowercase hex characters (20-byte SHA-1 MAC).
pub const TOKEN_DIGEST_HEX_LEN: usize = 40;
/// Default rotation grace period, in ms (24 h).
pub const HMAC_GRACE_MS_DEFAULT: u64 = 86_400_000;
/// Largest rotation grace period, in ms (2^53 − 1, the Lua exact-integer limit).
pub const HMAC_GRACE_MS_MAX: u64 = (1 << 53) - 1;
/// Kid installed at server boot when a keystore has none.
pub const HMAC_INITIAL_KID: &str = "k1";
/// Exact length of a seeded secret, in hex characters (32 bytes).
pub const SEED_SECRET_HEX_LEN: usize = 64;

type HmacSha1 = Hmac<Sha1>;

/// A waitpoint bearer token (`kid:40hex`); `Debug`/`Display` never show the digest.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WaitpointToken(String);

impl WaitpointToken {
    /// Parses a wire token; errors: `Validation(InvalidToken)` with `missing_token` or `invalid_token`.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        let (_, digest) = split_token(s)?;
        if !digest.bytes().all(is_lower_hex) {
            return Err(invalid_token());
        }
        Ok(Self(s.to_owned()))
    }

    /// Wraps a raw wire value without checking its shape (verification checks it).
    pub fn from_raw(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The raw wire value; a bearer credential, never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kid part, if the token has a non-empty one.
    pub fn kid(&self) -> Option<&str> {
        match self.0.split_once(':') {
            Some((kid, _)) if !kid.is_empty() => Some(kid),
            _ => None,
        }
    }

    fn fmt_redacted(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once(':') {
            Some((kid, digest)) if !kid.is_empty() => write!(f, "{kid}:<REDACTED:len={}>", digest.len()),
            _ => f.write_str("<REDACTED:malformed>"),
        }
    }
}

impl fmt::Display for WaitpointToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_redacted(f)
    }
}

impl fmt::Debug for WaitpointToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WaitpointToken(")?;
        self.fmt_redacted(f)?;
        f.write_str(")")
    }
}

/// Result of one rotation on one keystore (spec 02 §2.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotateOutcome {
    /// `new_kid` became current; the former current kid (if any) verifies until its grace expiry.
    Rotated {
        /// The demoted kid, `None` on a first install.
        previous_kid: Option<String>,
        /// The kid now current.
        new_kid: String,
        /// How many expired kids were garbage-collected.
        gc_count: u32,
    },
    /// `kid` was already current with this secret (or its missing secret was repaired).
    Noop {
        /// The current kid.
        kid: String,
    },
}

/// A non-current kid that still verifies tokens (spec 02 §2.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KidInfo {
    /// The key id.
    pub kid: String,
    /// Last ms (inclusive) at which the kid verifies.
    pub expires_at_ms: i64,
}

/// Result of seeding one keystore (spec 02 §2.9 per-partition outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeedKeystoreOutcome {
    /// The kid and secret were written (fresh install or repair of a missing secret).
    Installed,
    /// The kid is current with the same secret; nothing written.
    Matched,
    /// The kid is current with another secret; nothing written.
    SameKidDifferentSecret,
    /// Another kid is current; nothing written.
    DifferentKid,
}

/// Aggregate seed result over every keystore (spec 02 §2.9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeedOutcome {
    /// At least one keystore was installed.
    Seeded {
        /// The seeded kid.
        kid: String,
    },
    /// Nothing was installed.
    AlreadySeeded {
        /// The requested kid.
        kid: String,
        /// True iff no keystore differed and at least one matched.
        same_secret: bool,
    },
}

impl SeedOutcome {
    /// Folds per-keystore outcomes; errors: `Validation(InvalidInput)` if any keystore has another kid.
    pub fn aggregate(kid: &str, outcomes: &[SeedKeystoreOutcome]) -> Result<Self, EngineError> {
        use SeedKeystoreOutcome as O;
        if outcomes.contains(&O::DifferentKid) {
            return Err(EngineError::invalid_input("a different kid is current: use rotate to change kid"));
        }
        if outcomes.contains(&O::Installed) {
            return Ok(Self::Seeded { kid: kid.to_owned() });
        }
        let same_secret = outcomes.contains(&O::Matched) && !outcomes.contains(&O::SameKidDifferentSecret);
        Ok(Self::AlreadySeeded { kid: kid.to_owned(), same_secret })
    }
}

/// One partition's waitpoint HMAC keystore (spec 02 §2.3); `Debug` hides secrets.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HmacKeystore {
    /// Kid used to mint new tokens (`current_kid`); never has an expiry.
    pub current_kid: Option<String>,
    /// Hex secret per retained kid (`secret:<kid>`), stored as given.
    pub secrets: BTreeMap<String, String>,
    /// Grace expiry per demoted kid (`expires_at:<kid>`), inclusive, in ms.
    pub expires_at_ms: BTreeMap<String, i64>,
    /// Last demoted kid (`previous_kid`); audit only.
    pub previous_kid: Option<String>,
    /// Grace expiry of `previous_kid` (`previous_expires_at`); audit only.
    pub previous_expires_at_ms: Option<i64>,
}

impl fmt::Debug for HmacKeystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&String> = self.secrets.keys().collect();
        f.debug_struct("HmacKeystore")
            .field("current_kid", &self.current_kid)
            .field("secret_kids", &kids)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("previous_kid", &self.previous_kid)
            .field("previous_expires_at_ms", &self.previous_expires_at_ms)
            .finish()
    }
}

impl HmacKeystore {
    /// An empty (uninitialised) keystore.
    pub fn new() -> Self {
        Self::default()
    }

    /// The kid new tokens are minted with, if initialised.
    pub fn current_kid(&self) -> Option<&str> {
        self.current_kid.as_deref()
    }

    /// Install-only seed (§2.9); errors: `Validation(InvalidInput)` for a bad kid or a secret not 64 hex chars.
    pub fn seed(&mut self, kid: &str, secret_hex: &str) -> Result<SeedKeystoreOutcome, EngineError> {
        if secret_hex.len() != SEED_SECRET_HEX_LEN || decode_hex(secret_hex).is_none() {
            return Err(EngineError::invalid_input(
                "invalid_secret_hex: secret_hex must be exactly 64 hex chars",
            ));
        }
        if !is_valid_kid(kid) {
            return Err(EngineError::invalid_input("invalid_kid: kid must be non-empty without ':'"));
        }
        let outcome = match self.current_kid.as_deref() {
            None => SeedKeystoreOutcome::Installed,
            Some(current) if current != kid => return Ok(SeedKeystoreOutcome::DifferentKid),
            Some(_) => match self.secrets.get(kid) {
                None => SeedKeystoreOutcome::Installed,
                Some(stored) if stored == secret_hex => return Ok(SeedKeystoreOutcome::Matched),
                Some(_) => return Ok(SeedKeystoreOutcome::SameKidDifferentSecret),
            },
        };
        // The current kid never carries an expiry.
        self.expires_at_ms.remove(kid);
        self.secrets.insert(kid.to_owned(), secret_hex.to_owned());
        self.current_kid = Some(kid.to_owned());
        Ok(outcome)
    }

    /// Rotates to `new_kid` (§2.6); errors: `InvalidKid`, `InvalidSecretHex`, `InvalidGraceMs`, `Conflict(RotationConflict)`.
    pub fn rotate(
        &mut self,
        new_kid: &str,
        new_secret_hex: &str,
        grace_ms: u64,
        now_ms: i64,
    ) -> Result<RotateOutcome, EngineError> {
        validate_rotate_args(new_kid, new_secret_hex, grace_ms)?;
        if self.current_kid.as_deref() == Some(new_kid) {
            return self.rotate_to_current(new_kid, new_secret_hex);
        }
        // Spec fix: reusing a retained kid would replace its secret and could
        // later let GC delete the current secret. Checked before any write.
        if self.secrets.contains_key(new_kid) {
            return Err(EngineError::Conflict(ConflictKind::RotationConflict(new_kid.to_owned())));
        }
        let gc_count = self.collect_expired(now_ms);
        // grace_ms <= 2^53 - 1, so the cast is lossless.
        let prev_expires_ms = now_ms.saturating_add(grace_ms as i64);
        let previous_kid = self.current_kid.take();
        if let Some(previous) = &previous_kid {
            self.previous_kid = Some(previous.clone());
            self.previous_expires_at_ms = Some(prev_expires_ms);
            self.expires_at_ms.insert(previous.clone(), prev_expires_ms);
        }
        self.expires_at_ms.remove(new_kid);
        self.secrets.insert(new_kid.to_owned(), new_secret_hex.to_owned());
        self.current_kid = Some(new_kid.to_owned());
        Ok(RotateOutcome::Rotated { previous_kid, new_kid: new_kid.to_owned(), gc_count })
    }

    /// Replay of a rotation to the already-current kid: no-op, repair, or conflict.
    fn rotate_to_current(&mut self, kid: &str, secret_hex: &str) -> Result<RotateOutcome, EngineError> {
        match self.secrets.get(kid) {
            Some(stored) if stored == secret_hex => {}
            Some(_) => return Err(EngineError::Conflict(ConflictKind::RotationConflict(kid.to_owned()))),
            None => {
                self.secrets.insert(kid.to_owned(), secret_hex.to_owned());
            }
        }
        Ok(RotateOutcome::Noop { kid: kid.to_owned() })
    }

    /// Deletes every kid whose expiry is ≤ 0 or `< now_ms`; returns how many were removed.
    fn collect_expired(&mut self, now_ms: i64) -> u32 {
        let current = self.current_kid.clone();
        let expired: Vec<String> = self
            .expires_at_ms
            .iter()
            .filter(|(kid, at)| !still_verifies(**at, now_ms) && current.as_deref() != Some(kid.as_str()))
            .map(|(kid, _)| kid.clone())
            .collect();
        for kid in &expired {
            self.expires_at_ms.remove(kid);
            self.secrets.remove(kid);
        }
        u32::try_from(expired.len()).unwrap_or(u32::MAX)
    }

    /// Non-current kids that still verify at `now_ms`, sorted by `(expires_at_ms, kid)` (§2.8).
    pub fn kids(&self, now_ms: i64) -> Vec<KidInfo> {
        let mut kids: Vec<KidInfo> = self
            .expires_at_ms
            .iter()
            .filter(|(_, at)| still_verifies(**at, now_ms))
            .map(|(kid, at)| KidInfo { kid: kid.clone(), expires_at_ms: *at })
            .collect();
        kids.sort_by(|a, b| (a.expires_at_ms, &a.kid).cmp(&(b.expires_at_ms, &b.kid)));
        kids
    }

    /// Mints a token with the current kid (§2.4); errors: `Validation(InvalidInput)` `hmac_secret_not_initialized` / `invalid_secret`.
    pub fn mint(
        &self,
        waitpoint_id: &WaitpointId,
        waitpoint_key: &str,
        created_at_ms: i64,
    ) -> Result<WaitpointToken, EngineError> {
        let kid = self.current_kid.as_deref().ok_or_else(not_initialized)?;
        let secret_hex = self.secrets.get(kid).ok_or_else(not_initialized)?;
        let digest = digest_hex(secret_hex, waitpoint_id, waitpoint_key, created_at_ms)?;
        Ok(WaitpointToken(format!("{kid}:{digest}")))
    }

    /// Verifies a presented token (§2.5); errors: `Validation(InvalidToken)` `missing_token` / `invalid_token` / `token_expired`, `Validation(InvalidInput)` `hmac_secret_not_initialized` / `invalid_secret`.
    pub fn verify(
        &self,
        token: &str,
        waitpoint_id: &WaitpointId,
        waitpoint_key: &str,
        created_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let (kid, presented) = split_token(token)?;
        let secret_hex = self.verifying_secret(kid, now_ms)?;
        let expected = digest_hex(secret_hex, waitpoint_id, waitpoint_key, created_at_ms)?;
        // Both sides are exactly 40 bytes here; exact byte compare, so uppercase fails.
        if bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(invalid_token())
        }
    }

    /// Selects the secret that may verify tokens of `kid` at `now_ms` (§2.5 steps 4–5).
    fn verifying_secret(&self, kid: &str, now_ms: i64) -> Result<&str, EngineError> {
        let current = self.current_kid.as_deref().ok_or_else(not_initialized)?;
        let secret = self.secrets.get(kid).ok_or_else(invalid_token)?;
        if kid == current {
            return Ok(secret);
        }
        match self.expires_at_ms.get(kid) {
            Some(&at) if still_verifies(at, now_ms) => Ok(secret),
            _ => Err(token_expired()),
        }
    }
}

/// Whether a demoted kid with expiry `at_ms` still verifies at `now_ms` (boundary inclusive).
fn still_verifies(at_ms: i64, now_ms: i64) -> bool {
    at_ms > 0 && at_ms >= now_ms
}

fn validate_rotate_args(new_kid: &str, new_secret_hex: &str, grace_ms: u64) -> Result<(), EngineError> {
    if !is_valid_kid(new_kid) {
        return Err(EngineError::validation(
            ValidationKind::InvalidKid,
            "new_kid must be non-empty without ':'",
        ));
    }
    if new_secret_hex.is_empty() || decode_hex(new_secret_hex).is_none() {
        return Err(EngineError::validation(
            ValidationKind::InvalidSecretHex,
            "new_secret_hex must be non-empty, even-length hex",
        ));
    }
    if grace_ms > HMAC_GRACE_MS_MAX {
        return Err(EngineError::validation(ValidationKind::InvalidGraceMs, "grace_ms must be <= 2^53 - 1"));
    }
    Ok(())
}

fn is_valid_kid(kid: &str) -> bool {
    !kid.is_empty() && !kid.contains(':')
}

/// Splits at the first `:` and checks the §2.5 step 2–3 shape (byte length of the digest).
fn split_token(token: &str) -> Result<(&str, &str), EngineError> {
    if token.is_empty() {
        return Err(EngineError::validation(ValidationKind::InvalidToken, "missing_token"));
    }
    let (kid, digest) = token.split_once(':').ok_or_else(invalid_token)?;
    if kid.is_empty() || digest.len() != TOKEN_DIGEST_HEX_LEN {
        return Err(invalid_token());
    }
    Ok((kid, digest))
}

/// Lowercase hex HMAC-SHA1 of `waitpoint_id|waitpoint_key|created_at_ms` (§2.2).
fn digest_hex(
    secret_hex: &str,
    waitpoint_id: &WaitpointId,
    waitpoint_key: &str,
    created_at_ms: i64,
) -> Result<String, EngineError> {
    let key = decode_hex(secret_hex).ok_or_else(|| EngineError::invalid_input("invalid_secret"))?;
    let mut mac =
        <HmacSha1 as Mac>::new_from_slice(&key).map_err(|_| EngineError::invalid_input("invalid_secret"))?;
    let message = format!("{}|{waitpoint_key}|{created_at_ms}", waitpoint_id.uuid().hyphenated());
    mac.update(message.as_bytes());
    Ok(encode_hex_lower(&mac.finalize().into_bytes()))
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Decodes mixed-case hex; `None` on odd length or a non-hex character.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks_exact(2).map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?)).collect()
}

fn encode_hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn invalid_token() -> EngineError {
    EngineError::validation(ValidationKind::InvalidToken, "invalid_token")
}

fn token_expired() -> EngineError {
    EngineError::validation(ValidationKind::InvalidToken, "token_expired")
}

fn not_initialized() -> EngineError {
    EngineError::invalid_input("hmac_secret_not_initialized")
}

#[cfg(test)]
mod tests {
    use super::*;

    const WP1: &str = "7f3c2a10-0000-4000-8000-000000000001";
    const KEY1: &str = "wpk:approval";
    const AT1: i64 = 1_700_000_000_000;
    const SECRET_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SECRET_B: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const SECRET_C: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const DAY_MS: u64 = 86_400_000;

    fn wp(s: &str) -> WaitpointId {
        WaitpointId::parse(s).unwrap()
    }

    fn seeded(kid: &str, secret: &str) -> HmacKeystore {
        let mut ks = HmacKeystore::new();
        assert_eq!(ks.seed(kid, secret).unwrap(), SeedKeystoreOutcome::Installed);
        ks
    }

    /// `(kind, detail)` of a validation error; panics on anything else.
    fn validation(e: EngineError) -> (ValidationKind, String) {
        match e {
            EngineError::Validation { kind, detail } => (kind, detail),
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    fn assert_token_err(r: Result<(), EngineError>, code: &str) {
        assert_eq!(validation(r.unwrap_err()), (ValidationKind::InvalidToken, code.to_owned()));
    }

    fn verify1(ks: &HmacKeystore, token: &str, now: i64) -> Result<(), EngineError> {
        ks.verify(token, &wp(WP1), KEY1, AT1, now)
    }

    #[test]
    fn spec_test_vectors() {
        let ks = seeded("k1", SECRET_A);
        let t = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        assert_eq!(t.as_str(), "k1:371124b787ea2ab3b1b78a2fa25bc426965cbc00");

        let ks = seeded("k1", &"11".repeat(32));
        let id = "00000000-0000-4000-8000-0000000000aa";
        let t = ks.mint(&wp(id), &format!("wpk:{id}"), 1_713_100_800_150).unwrap();
        assert_eq!(t.as_str(), "k1:b44f6575f7b4b8d587353e668e0a0b1171dfd885");

        // Long (80-byte) key: only rotate accepts secrets other than 64 hex chars.
        let mut ks = HmacKeystore::new();
        ks.rotate("long", &"ab".repeat(80), DAY_MS, 0).unwrap();
        let t = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        assert_eq!(t.as_str(), "long:9692ff3732d24a45347cfb8984b7d8249f44ebf9");
    }

    #[test]
    fn mixed_case_secret_hex_is_accepted() {
        let lower = seeded("k1", SECRET_A).mint(&wp(WP1), KEY1, AT1).unwrap();
        let upper = seeded("k1", &SECRET_A.to_uppercase()).mint(&wp(WP1), KEY1, AT1).unwrap();
        assert_eq!(lower, upper);
    }

    #[test]
    fn round_trip() {
        let ks = seeded("k1", SECRET_A);
        let t = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        assert_eq!(WaitpointToken::parse(t.as_str()).unwrap(), t);
        assert_eq!(t.kid(), Some("k1"));
        verify1(&ks, t.as_str(), AT1 + 1_000_000).unwrap();
        // Empty waitpoint key is a valid binding too.
        let t = ks.mint(&wp(WP1), "", AT1).unwrap();
        ks.verify(t.as_str(), &wp(WP1), "", AT1, AT1).unwrap();
    }

    #[test]
    fn tampering_any_part_fails() {
        let ks = seeded("k1", SECRET_A);
        let t = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        let raw = t.as_str();
        // Kid changed: unknown kid.
        assert_token_err(verify1(&ks, &raw.replacen("k1", "k2", 1), AT1), "invalid_token");
        // One digest digit at sampled positions.
        for pos in [0usize, 1, 7, 19, 20, 33, 39] {
            let mut bytes = raw.as_bytes().to_vec();
            let i = 3 + pos;
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            let forged = String::from_utf8(bytes).unwrap();
            assert_token_err(verify1(&ks, &forged, AT1), "invalid_token");
        }
        // Other MAC inputs.
        let other = wp("7f3c2a10-0000-4000-8000-000000000002");
        assert_token_err(ks.verify(raw, &other, KEY1, AT1, AT1), "invalid_token");
        assert_token_err(ks.verify(raw, &wp(WP1), "wpk:other", AT1, AT1), "invalid_token");
        assert_token_err(ks.verify(raw, &wp(WP1), KEY1, AT1 + 1, AT1), "invalid_token");
        // A different secret under the same kid.
        assert_token_err(verify1(&seeded("k1", SECRET_B), raw, AT1), "invalid_token");
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let ks = seeded("k1", SECRET_A);
        let raw = ks.mint(&wp(WP1), KEY1, AT1).unwrap().as_str().to_owned();
        assert_token_err(verify1(&ks, "", AT1), "missing_token");
        let truncated = &raw[..raw.len() - 1];
        let extended = format!("{raw}0");
        let no_colon = raw.replace(':', "");
        let no_kid = &raw[2..];
        for bad in [truncated, &extended, &no_colon, no_kid, "k1:", ":"] {
            assert_token_err(verify1(&ks, bad, AT1), "invalid_token");
            assert!(WaitpointToken::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            validation(WaitpointToken::parse("").unwrap_err()),
            (ValidationKind::InvalidToken, "missing_token".to_owned())
        );
    }

    #[test]
    fn uppercase_digest_fails() {
        let ks = seeded("k1", SECRET_A);
        let raw = ks.mint(&wp(WP1), KEY1, AT1).unwrap().as_str().to_owned();
        let upper = format!("k1:{}", raw[3..].to_uppercase());
        assert_ne!(upper, raw);
        assert_token_err(verify1(&ks, &upper, AT1), "invalid_token");
        assert!(WaitpointToken::parse(&upper).is_err());
    }

    #[test]
    fn uninitialised_keystore() {
        let ks = HmacKeystore::new();
        let e = ks.mint(&wp(WP1), KEY1, AT1).unwrap_err();
        assert_eq!(validation(e), (ValidationKind::InvalidInput, "hmac_secret_not_initialized".to_owned()));
        let token = format!("k1:{}", "0".repeat(40));
        let e = verify1(&ks, &token, AT1).unwrap_err();
        assert_eq!(validation(e), (ValidationKind::InvalidInput, "hmac_secret_not_initialized".to_owned()));
        // Shape checks come first.
        assert_token_err(verify1(&ks, "", AT1), "missing_token");
        assert_token_err(verify1(&ks, "k1:abc", AT1), "invalid_token");
        // Current kid without its secret: mint is uninitialised, verify is invalid_token.
        let mut torn = seeded("k1", SECRET_A);
        torn.secrets.clear();
        assert!(torn.mint(&wp(WP1), KEY1, AT1).is_err());
        assert_token_err(verify1(&torn, &token, AT1), "invalid_token");
    }

    #[test]
    fn corrupt_stored_secret_is_invalid_secret() {
        let mut ks = seeded("k1", SECRET_A);
        ks.secrets.insert("k1".into(), "abc".into());
        let e = ks.mint(&wp(WP1), KEY1, AT1).unwrap_err();
        assert_eq!(validation(e), (ValidationKind::InvalidInput, "invalid_secret".to_owned()));
        let e = verify1(&ks, &format!("k1:{}", "0".repeat(40)), AT1).unwrap_err();
        assert_eq!(validation(e), (ValidationKind::InvalidInput, "invalid_secret".to_owned()));
    }

    #[test]
    fn rotation_grace_window() {
        let mut ks = seeded("a", SECRET_A);
        let old = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        let now = AT1 + 10;
        let out = ks.rotate("b", SECRET_B, 1_000, now).unwrap();
        assert_eq!(
            out,
            RotateOutcome::Rotated { previous_kid: Some("a".into()), new_kid: "b".into(), gc_count: 0 }
        );
        assert_eq!(ks.current_kid(), Some("b"));
        assert_eq!(ks.previous_kid.as_deref(), Some("a"));
        assert_eq!(ks.previous_expires_at_ms, Some(now + 1_000));
        let new = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        assert_eq!(new.kid(), Some("b"));
        verify1(&ks, new.as_str(), now + 5_000_000).unwrap();
        verify1(&ks, old.as_str(), now).unwrap();
        verify1(&ks, old.as_str(), now + 1_000).unwrap(); // boundary accepts
        assert_token_err(verify1(&ks, old.as_str(), now + 1_001), "token_expired");
        // Non-positive stored expiry never verifies.
        ks.expires_at_ms.insert("a".into(), 0);
        assert_token_err(verify1(&ks, old.as_str(), -5), "token_expired");
    }

    #[test]
    fn rapid_rotation_keeps_each_kid_until_its_own_expiry() {
        let mut ks = seeded("a", SECRET_A);
        let ta = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        ks.rotate("b", SECRET_B, 100, 1_000).unwrap();
        ks.rotate("c", SECRET_C, 500, 1_050).unwrap();
        verify1(&ks, ta.as_str(), 1_100).unwrap();
        assert_token_err(verify1(&ks, ta.as_str(), 1_101), "token_expired");
        let kids = ks.kids(1_000);
        assert_eq!(
            kids,
            vec![
                KidInfo { kid: "a".into(), expires_at_ms: 1_100 },
                KidInfo { kid: "b".into(), expires_at_ms: 1_550 }
            ]
        );
        assert_eq!(ks.kids(1_101), vec![KidInfo { kid: "b".into(), expires_at_ms: 1_550 }]);
        assert!(ks.kids(1_551).is_empty());
        // The next rotation collects the expired kids.
        let out = ks.rotate("d", SECRET_A, 0, 2_000).unwrap();
        assert_eq!(
            out,
            RotateOutcome::Rotated { previous_kid: Some("c".into()), new_kid: "d".into(), gc_count: 2 }
        );
        assert_eq!(ks.secrets.keys().collect::<Vec<_>>(), vec!["c", "d"]);
        assert_eq!(ks.kids(2_000), vec![KidInfo { kid: "c".into(), expires_at_ms: 2_000 }]);
    }

    #[test]
    fn unknown_kid_is_invalid_token() {
        let mut ks = seeded("a", SECRET_A);
        ks.rotate("b", SECRET_B, DAY_MS, 0).unwrap();
        let token = format!("zz:{}", "0".repeat(40));
        assert_token_err(verify1(&ks, &token, 0), "invalid_token");
    }

    #[test]
    fn rotation_idempotency_and_conflicts() {
        let mut ks = seeded("a", SECRET_A);
        assert_eq!(ks.rotate("a", SECRET_A, DAY_MS, 0).unwrap(), RotateOutcome::Noop { kid: "a".into() });
        let before = ks.clone();
        let e = ks.rotate("a", SECRET_B, DAY_MS, 0).unwrap_err();
        assert!(matches!(e, EngineError::Conflict(ConflictKind::RotationConflict(ref k)) if k == "a"));
        assert_eq!(ks, before, "a failed rotation writes nothing");
        // Torn write: current kid without its secret is repaired.
        ks.secrets.clear();
        assert_eq!(ks.rotate("a", SECRET_C, DAY_MS, 0).unwrap(), RotateOutcome::Noop { kid: "a".into() });
        assert_eq!(ks.secrets.get("a").map(String::as_str), Some(SECRET_C));
    }

    #[test]
    fn kid_reuse_never_deletes_the_current_secret() {
        let mut ks = seeded("a", SECRET_A);
        let ta = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        ks.rotate("b", SECRET_B, 1_000, 0).unwrap();
        let tb = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        let before = ks.clone();
        let e = ks.rotate("a", SECRET_C, 1_000, 10).unwrap_err();
        assert!(matches!(e, EngineError::Conflict(ConflictKind::RotationConflict(ref k)) if k == "a"));
        assert_eq!(ks, before);
        verify1(&ks, ta.as_str(), 10).unwrap();
        verify1(&ks, tb.as_str(), 10).unwrap();
        // A later rotation after A's grace still keeps the current secret mintable.
        ks.rotate("c", SECRET_C, 1_000, 5_000).unwrap();
        assert_eq!(ks.current_kid(), Some("c"));
        assert!(ks.mint(&wp(WP1), KEY1, AT1).is_ok());
        assert!(!ks.expires_at_ms.contains_key("c"));
        // Even a legacy stale expiry on the current kid never lets GC remove its secret.
        ks.expires_at_ms.insert("c".into(), 1);
        ks.rotate("d", SECRET_A, 0, 9_000).unwrap();
        assert!(ks.secrets.contains_key("c"));
    }

    #[test]
    fn rotate_validation() {
        let mut ks = seeded("a", SECRET_A);
        let kind = |r: Result<RotateOutcome, EngineError>| validation(r.unwrap_err()).0;
        assert_eq!(kind(ks.rotate("", SECRET_B, 0, 0)), ValidationKind::InvalidKid);
        assert_eq!(kind(ks.rotate("b:1", SECRET_B, 0, 0)), ValidationKind::InvalidKid);
        assert_eq!(kind(ks.rotate("b", "", 0, 0)), ValidationKind::InvalidSecretHex);
        assert_eq!(kind(ks.rotate("b", "abc", 0, 0)), ValidationKind::InvalidSecretHex);
        assert_eq!(kind(ks.rotate("b", "zz", 0, 0)), ValidationKind::InvalidSecretHex);
        assert_eq!(kind(ks.rotate("b", SECRET_B, HMAC_GRACE_MS_MAX + 1, 0)), ValidationKind::InvalidGraceMs);
        assert!(ks.rotate("b", SECRET_B, HMAC_GRACE_MS_MAX, 0).is_ok());
        // First rotation into an empty keystore installs without demoting anything.
        let mut empty = HmacKeystore::new();
        let out = empty.rotate("x", SECRET_B, 0, 0).unwrap();
        assert_eq!(out, RotateOutcome::Rotated { previous_kid: None, new_kid: "x".into(), gc_count: 0 });
        assert!(empty.previous_kid.is_none() && empty.expires_at_ms.is_empty());
    }

    #[test]
    fn seed_rules() {
        let mut ks = HmacKeystore::new();
        let invalid = |r: Result<SeedKeystoreOutcome, EngineError>| validation(r.unwrap_err()).0;
        assert_eq!(invalid(ks.seed("k1", &SECRET_A[..62])), ValidationKind::InvalidInput);
        assert_eq!(invalid(ks.seed("k1", &format!("{}zz", &SECRET_A[..62]))), ValidationKind::InvalidInput);
        assert_eq!(invalid(ks.seed("", SECRET_A)), ValidationKind::InvalidInput);
        assert_eq!(invalid(ks.seed("k:1", SECRET_A)), ValidationKind::InvalidInput);
        assert_eq!(ks, HmacKeystore::new());

        assert_eq!(ks.seed("k1", SECRET_A).unwrap(), SeedKeystoreOutcome::Installed);
        assert_eq!(ks.seed("k1", SECRET_A).unwrap(), SeedKeystoreOutcome::Matched);
        assert_eq!(ks.seed("k1", SECRET_B).unwrap(), SeedKeystoreOutcome::SameKidDifferentSecret);
        assert_eq!(ks.seed("k2", SECRET_A).unwrap(), SeedKeystoreOutcome::DifferentKid);
        assert_eq!(ks.secrets.get("k1").map(String::as_str), Some(SECRET_A));
        ks.secrets.clear();
        assert_eq!(ks.seed("k1", SECRET_B).unwrap(), SeedKeystoreOutcome::Installed);
        assert_eq!(ks.secrets.get("k1").map(String::as_str), Some(SECRET_B));
    }

    #[test]
    fn seed_aggregate() {
        use SeedKeystoreOutcome as O;
        let agg = |o: &[O]| SeedOutcome::aggregate("k1", o);
        assert_eq!(agg(&[O::Installed, O::Matched]).unwrap(), SeedOutcome::Seeded { kid: "k1".into() });
        assert_eq!(
            agg(&[O::Matched, O::Matched]).unwrap(),
            SeedOutcome::AlreadySeeded { kid: "k1".into(), same_secret: true }
        );
        assert_eq!(
            agg(&[O::Matched, O::SameKidDifferentSecret]).unwrap(),
            SeedOutcome::AlreadySeeded { kid: "k1".into(), same_secret: false }
        );
        let e = agg(&[O::Installed, O::DifferentKid]).unwrap_err();
        assert_eq!(validation(e).0, ValidationKind::InvalidInput);
    }

    #[test]
    fn redaction() {
        let ks = seeded("k1", SECRET_A);
        let t = ks.mint(&wp(WP1), KEY1, AT1).unwrap();
        let digest = &t.as_str()[3..];
        assert_eq!(t.to_string(), "k1:<REDACTED:len=40>");
        assert_eq!(format!("{t:?}"), "WaitpointToken(k1:<REDACTED:len=40>)");
        assert!(!format!("{t:?}{t}").contains(digest));
        assert_eq!(WaitpointToken::from_raw("nocolon").to_string(), "<REDACTED:malformed>");
        assert_eq!(WaitpointToken::from_raw(":abc").to_string(), "<REDACTED:malformed>");
        let dbg = format!("{ks:?}");
        assert!(!dbg.contains(SECRET_A) && dbg.contains("k1"), "{dbg}");
    }

    #[test]
    fn keystore_serde_round_trip() {
        let mut ks = seeded("a", SECRET_A);
        ks.rotate("b", SECRET_B, 1_000, 5).unwrap();
        let json = serde_json::to_string(&ks).unwrap();
        assert_eq!(serde_json::from_str::<HmacKeystore>(&json).unwrap(), ks);
    }
}
