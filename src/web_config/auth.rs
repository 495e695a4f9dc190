//! `basic_auth_users` as exporter-toolkit checks them: bcrypt hashes only; one bcrypt compare at
//! a time, off the async runtime; an unknown user costs as much bcrypt work as a known one;
//! successful checks remembered (by a keyed hash of user, stored hash and password) so a scrape
//! does not pay bcrypt every time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hyper::header::HeaderValue;
use sha2::Sha256;
use tokio::sync::Semaphore;

use super::Secret;

use crate::lock::lock;

/// At most this many remembered logins; when full, a tenth is dropped (as exporter-toolkit).
pub(crate) const CACHE_SIZE: usize = 100;

/// bcrypt cost of the stand-in hash for unknown users when no user is configured with one.
const DEFAULT_COST: u32 = 10;

/// Salt and hash of exporter-toolkit's stand-in hash (of "fakepassword"): any well-formed value
/// makes bcrypt do the full work.
const DUMMY_TAIL: &str = "QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// The users of one reading of the file.
#[derive(Clone, Default)]
pub(crate) struct Users {
    entries: Vec<(String, Secret)>,
    /// Compared against for an unknown user: the highest cost among the users, so an unknown
    /// name is never cheaper than a known one.
    dummy: String,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(u, _)| u))
            .finish()
    }
}

impl Users {
    pub(crate) fn new(entries: Vec<(String, Secret)>) -> Users {
        let cost = entries
            .iter()
            .filter_map(|(_, h)| bcrypt_cost(h.expose()).ok())
            .max()
            .unwrap_or(DEFAULT_COST);
        Users {
            entries,
            dummy: format!("$2y${cost:02}${DUMMY_TAIL}"),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, user: &[u8]) -> Option<&Secret> {
        self.entries
            .iter()
            .find(|(u, _)| u.as_bytes() == user)
            .map(|(_, h)| h)
    }

    /// exporter-toolkit's `validateUsers` (startup only): every hash is a bcrypt hash.
    pub(crate) fn check_hashes(&self) -> Result<(), String> {
        for (user, hash) in &self.entries {
            bcrypt_cost(hash.expose()).map_err(|e| format!("basic_auth_users.{user}: {e}"))?;
        }
        Ok(())
    }
}

/// The cost of a bcrypt hash (`$2a$`, `$2b$` or `$2y$`, cost 4 to 31, 53 characters of salt and
/// hash), or why it is not one. Messages never quote the hash.
pub(crate) fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    if hash.len() < 59 {
        return Err("hashedSecret too short to be a bcrypted password".into());
    }
    if !hash.starts_with('$') {
        return Err("not a bcrypt hash: bcrypt hashes must start with '$'".into());
    }
    if !["$2a$", "$2b$", "$2y$"].contains(&hash.get(..4).unwrap_or("")) {
        return Err("not a bcrypt hash: only $2a$, $2b$ and $2y$ hashes are supported".into());
    }
    let cost: u32 = hash
        .get(4..6)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .filter(|_| hash.get(6..7) == Some("$"))
        .ok_or("not a bcrypt hash: malformed cost")?;
    if !(4..=31).contains(&cost) {
        return Err(format!(
            "bcrypt cost {cost} is outside the allowed range 4..31"
        ));
    }
    let tail = hash.get(7..).unwrap_or("");
    if tail.len() != 53
        || !tail
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Err("not a bcrypt hash: expected 53 characters of salt and hash".into());
    }
    Ok(cost)
}

/// `Authorization: Basic …` as Go's `Request.BasicAuth` reads it: case-insensitive scheme,
/// standard base64, user and password split at the first colon.
pub(crate) fn parse_basic(v: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let b = v.as_bytes();
    if !b.get(..6)?.eq_ignore_ascii_case(b"Basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&b[6..])
        .ok()?;
    let colon = decoded.iter().position(|&c| c == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// Basic-auth checks for one server: the remembered logins and the one-at-a-time bcrypt gate.
pub(crate) struct Auth {
    /// Keys the cache entries, so a remembered entry is not a fast hash of a password.
    /// `None` (no OS randomness): nothing is remembered.
    key: Option<[u8; 32]>,
    remembered: Mutex<HashSet<[u8; 32]>>,
    one_at_a_time: Arc<Semaphore>,
}

impl Auth {
    pub(crate) fn new() -> Auth {
        let mut key = [0u8; 32];
        let key = rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut key)
            .ok()
            .map(|()| key);
        if key.is_none() {
            tracing::warn!("no OS randomness: successful basic-auth logins are not cached");
        }
        Auth {
            key,
            remembered: Mutex::new(HashSet::new()),
            one_at_a_time: Arc::new(Semaphore::new(1)),
        }
    }

    /// Whether `authorization` names a user of `users` with the right password.
    pub(crate) async fn check(&self, users: &Users, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let known = users.get(&user);
        let hash = match known {
            Some(h) => h.expose().to_string(),
            None => users.dummy.clone(),
        };
        let key = self.cache_key(&user, &hash, &password);
        if known.is_some() && key.is_some_and(|k| self.remembers(&k)) {
            return true;
        }
        let Ok(permit) = self.one_at_a_time.clone().acquire_owned().await else {
            return false;
        };
        let matched = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(&password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let ok = matched && known.is_some();
        if let (true, Some(k)) = (ok, key) {
            self.remember(k);
        }
        ok
    }

    /// HMAC-SHA256 over length-prefixed user, stored hash and password: no two different
    /// triples share a key (CVE-2022-46146 was a collision of concatenated fields), and a
    /// changed hash misses.
    fn cache_key(&self, user: &[u8], hash: &str, password: &[u8]) -> Option<[u8; 32]> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_ref()?).ok()?;
        for part in [user, hash.as_bytes(), password] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Some(mac.finalize().into_bytes().into())
    }

    fn remembers(&self, key: &[u8; 32]) -> bool {
        lock(&self.remembered).contains(key)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut set = lock(&self.remembered);
        if set.len() >= CACHE_SIZE {
            let victims: Vec<[u8; 32]> = set.iter().take(CACHE_SIZE / 10).copied().collect();
            for v in victims {
                set.remove(&v);
            }
        }
        set.insert(key);
    }

    #[cfg(test)]
    fn remembered_len(&self) -> usize {
        lock(&self.remembered).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    fn users(list: &[(&str, &str)]) -> Users {
        Users::new(
            list.iter()
                .map(|(u, p)| (u.to_string(), Secret::new(bcrypt::hash(p, 4).unwrap())))
                .collect(),
        )
    }

    #[test]
    fn hashes() {
        let good = bcrypt::hash("pw", 4).unwrap();
        assert_eq!(bcrypt_cost(&good), Ok(4));
        assert_eq!(
            bcrypt_cost("doe").unwrap_err(),
            "hashedSecret too short to be a bcrypted password"
        );
        let msg = bcrypt_cost(&good.replacen("$2b$", "$2x$", 1)).unwrap_err();
        assert!(msg.contains("only $2a$, $2b$ and $2y$"), "{msg}");
        let msg = bcrypt_cost(&good.replacen("$04$", "$03$", 1)).unwrap_err();
        assert!(msg.contains("cost 3 is outside"), "{msg}");
        let msg = bcrypt_cost(&format!("{good}x")).unwrap_err();
        assert!(msg.contains("53 characters"), "{msg}");
        // A multi-byte character where the cost should be: an error, not a panic.
        assert!(bcrypt_cost(&format!("$2y$é{}", &good[6..])).is_err());
        let u = Users::new(vec![("john".into(), Secret::new("doe"))]);
        assert_eq!(
            u.check_hashes().unwrap_err(),
            "basic_auth_users.john: hashedSecret too short to be a bcrypted password"
        );
    }

    #[test]
    fn unknown_users_cost_as_much_as_known_ones() {
        let u = Users::new(vec![(
            "a".into(),
            Secret::new(bcrypt::hash_with_salt("x", 6, [0; 16]).unwrap().to_string()),
        )]);
        assert_eq!(bcrypt_cost(&u.dummy), Ok(6));
        assert_eq!(bcrypt_cost(&Users::new(Vec::new()).dummy), Ok(10));
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            parse_basic(&basic("dave", "pa:ss")),
            Some((b"dave".to_vec(), b"pa:ss".to_vec()))
        );
        let lower = HeaderValue::from_static("basic ZGF2ZTpwdw==");
        assert_eq!(parse_basic(&lower).map(|(u, _)| u), Some(b"dave".to_vec()));
        for bad in ["Bearer x", "Basic", "Basic !!!", "Basic ZGF2ZQ=="] {
            assert_eq!(parse_basic(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn right_wrong_unknown_and_remembered() {
        let u = users(&[("dave", "right")]);
        let auth = Auth::new();
        assert!(!auth.check(&u, None).await);
        assert!(!auth.check(&u, Some(&basic("dave", "wrong"))).await);
        assert!(!auth.check(&u, Some(&basic("nobody", "right"))).await);
        assert_eq!(auth.remembered_len(), 0, "failures are not remembered");
        assert!(auth.check(&u, Some(&basic("dave", "right"))).await);
        assert_eq!(auth.remembered_len(), 1);
        assert!(auth.check(&u, Some(&basic("dave", "right"))).await);
        // Another hash for the same user (the file changed): the remembered entry misses.
        let changed = users(&[("dave", "other")]);
        assert!(!auth.check(&changed, Some(&basic("dave", "right"))).await);
        assert!(auth.check(&changed, Some(&basic("dave", "other"))).await);
    }

    /// CVE-2022-46146: a login whose fields concatenate to a remembered one must not pass.
    #[tokio::test]
    async fn cache_key_injection() {
        let hash = bcrypt::hash("alicepw", 4).unwrap();
        let u = Users::new(vec![("alice".into(), Secret::new(hash.clone()))]);
        let auth = Auth::new();
        assert!(
            !auth
                .check(&u, Some(&basic(&format!("alice{hash}"), "fakepassword")))
                .await
        );
        assert!(
            !auth
                .check(&u, Some(&basic("alice", &format!("{hash}fakepassword"))))
                .await
        );
        assert!(auth.check(&u, Some(&basic("alice", "alicepw"))).await);
        let other = format!("{}alicepw", &hash[..hash.len() - 1]);
        assert!(!auth.check(&u, Some(&basic("alice", &other))).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_logins() {
        let u = Arc::new(users(&[("carol", "right")]));
        let auth = Arc::new(Auth::new());
        let mut tasks = Vec::new();
        for i in 0..60 {
            let (u, auth) = (u.clone(), auth.clone());
            let password = if i % 2 == 0 { "right" } else { "wrong" };
            tasks.push(tokio::spawn(async move {
                (
                    password,
                    auth.check(&u, Some(&basic("carol", password))).await,
                )
            }));
        }
        for t in tasks {
            let (password, ok) = t.await.unwrap();
            assert_eq!(ok, password == "right");
        }
    }

    #[test]
    fn cache_stays_bounded() {
        let auth = Auth::new();
        for i in 0..CACHE_SIZE {
            auth.remember([i as u8; 32]);
        }
        assert_eq!(auth.remembered_len(), CACHE_SIZE);
        auth.remember([0xff; 32]);
        assert_eq!(auth.remembered_len(), CACHE_SIZE - CACHE_SIZE / 10 + 1);
        for i in 0..200u32 {
            let mut k = [1u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            auth.remember(k);
            assert!(auth.remembered_len() <= CACHE_SIZE);
        }
    }
}
