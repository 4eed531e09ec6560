//! Logged-in sessions, in memory only (a restart logs everyone out, which is what an
//! operator expects of a daemon that holds keys). A session is named by 32 random bytes in
//! a cookie; the table is keyed by their SHA-256, so neither a timing of the lookup nor a
//! memory image of the table hands out a usable cookie. Each session has its own CSRF
//! token, which every form and every state-changing request must carry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// Sessions kept at most; a new login past it ends the least recently used one.
pub const MAX_SESSIONS: usize = 32;

/// The name of the session cookie. `__Host-`: the browser keeps it only if it is Secure,
/// has no Domain and the Path `/`, so a neighbouring host cannot plant one.
pub const COOKIE: &str = "__Host-atrest";

/// What a request learns of its session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The account.
    pub user: String,
    /// Where the login came from.
    pub source: IpAddr,
    /// The token its forms carry.
    pub csrf: String,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    created: Instant,
    used: Instant,
}

/// The table.
#[derive(Debug)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Entry>>,
    idle: Duration,
    max: Duration,
}

/// A random token, hex (64 characters).
pub fn token() -> Zeroizing<String> {
    let mut b = Zeroizing::new([0u8; 32]);
    openssl::rand::rand_bytes(&mut b[..]).expect("the system's random generator fails");
    Zeroizing::new(hex::encode(&b[..]))
}

fn digest(cookie: &str) -> [u8; 32] {
    openssl::sha::sha256(cookie.as_bytes())
}

impl Sessions {
    /// Sessions that end after `idle` unused or `max` after their login.
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            by_digest: Mutex::new(HashMap::new()),
            idle,
            max,
        }
    }

    /// A new session; its cookie value (to send once, never kept here).
    pub fn create(&self, user: &str, source: IpAddr) -> (Zeroizing<String>, Session) {
        let cookie = token();
        let session = Session {
            user: user.to_owned(),
            source,
            csrf: token().to_string(),
        };
        let now = Instant::now();
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut map, now);
        if map.len() >= MAX_SESSIONS {
            if let Some(k) = map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
        map.insert(
            digest(&cookie),
            Entry {
                session: session.clone(),
                created: now,
                used: now,
            },
        );
        (cookie, session)
    }

    /// The live session the cookie names (and it counts as used), or none.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.by_digest.lock().unwrap_or_else(|p| p.into_inner());
        self.expire(&mut map, now);
        let e = map.get_mut(&digest(cookie))?;
        e.used = now;
        Some(e.session.clone())
    }

    /// Ends the session the cookie names.
    pub fn end(&self, cookie: &str) {
        self.by_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest(cookie));
    }

    /// Ends every session (the password changed).
    pub fn end_all(&self) {
        self.by_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn expire(&self, map: &mut HashMap<[u8; 32], Entry>, now: Instant) {
        map.retain(|_, e| {
            now.duration_since(e.used) < self.idle && now.duration_since(e.created) < self.max
        });
    }
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_session_is_found_by_its_cookie_only_and_ends() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (c1, s1) = s.create("admin", HERE);
        let (c2, s2) = s.create("admin", HERE);
        assert_ne!(s1.csrf, s2.csrf);
        assert_eq!(s.get(&c1).unwrap().csrf, s1.csrf);
        assert_eq!(s.get(&c2).unwrap().csrf, s2.csrf);
        assert!(s.get("00").is_none());
        let mut forged = c1.to_string();
        forged.replace_range(0..1, if forged.starts_with('0') { "1" } else { "0" });
        assert!(s.get(&forged).is_none());
        s.end(&c1);
        assert!(s.get(&c1).is_none());
        assert!(s.get(&c2).is_some());
        s.end_all();
        assert!(s.get(&c2).is_none());
    }

    #[test]
    fn idle_and_absolute_limits_end_sessions() {
        let s = Sessions::new(Duration::from_millis(100), Duration::from_secs(600));
        let (c, _) = s.create("admin", HERE);
        std::thread::sleep(Duration::from_millis(150));
        assert!(s.get(&c).is_none(), "idle past its limit");
        let s = Sessions::new(Duration::from_secs(600), Duration::from_millis(200));
        let (c, _) = s.create("admin", HERE);
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(50));
            let _ = s.get(&c);
        }
        assert!(
            s.get(&c).is_none(),
            "used all along, but past its absolute limit"
        );
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_least_recently_used() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let (keep, _) = s.create("admin", HERE);
        let (first_idle, _) = s.create("admin", HERE);
        for _ in 0..MAX_SESSIONS - 2 {
            s.create("admin", HERE);
            assert!(s.get(&keep).is_some());
        }
        s.create("admin", HERE);
        assert!(s.get(&first_idle).is_none());
        assert!(s.get(&keep).is_some());
        assert!(s.by_digest.lock().unwrap().len() <= MAX_SESSIONS);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abcd", "abce"));
        assert!(!same_token("abcd", "abc"));
        assert!(!same_token("", "a"));
    }
}
