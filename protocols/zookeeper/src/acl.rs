//! ZooKeeper access control as the server applies it: the identities a session holds
//! (`ip` always, `digest` after `addAuth`), validation of the ACL a client asks for
//! (INVALIDACL), and the permission check before each operation (NOAUTH).
//! Pure functions; the connection keeps the session's identities.

use std::net::IpAddr;

use base64_engine::encode;
use concord_kernel::types::Acl as StoredAcl;
use sha1::{Digest, Sha1};

use crate::records::{Acl, Id};

/// One identity a session holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub scheme: String,
    pub id: String,
}

/// The digest id ZooKeeper stores for `user:password`: `user:base64(sha1(user:password))`.
pub fn digest_id(user_password: &str) -> Option<String> {
    let (user, _) = user_password.split_once(':')?;
    let hash = Sha1::digest(user_password.as_bytes());
    Some(format!("{user}:{}", encode(&hash)))
}

/// The identity an `auth` packet grants, or `None` if ZooKeeper would answer AUTHFAILED
/// (a scheme it has no provider for, or a malformed digest credential).
pub fn authenticate(scheme: &str, auth: &[u8]) -> Option<Identity> {
    match scheme {
        "digest" => {
            let text = std::str::from_utf8(auth).ok()?;
            Some(Identity {
                scheme: "digest".into(),
                id: digest_id(text)?,
            })
        }
        _ => None,
    }
}

fn valid_ip_id(id: &str) -> bool {
    let (addr, bits) = match id.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (id, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| b.parse::<u32>().is_ok_and(|n| n <= max))
}

/// Checks and expands the ACL a create or setACL names, as ZooKeeper's `fixupACL` does:
/// not empty; `world` only as `world:anyone`; `auth` replaced by the session's
/// authenticated (digest) identities, and invalid if it has none; `digest` ids of the
/// form `user:hash`; `ip` ids an address or CIDR; any other scheme invalid. Duplicates
/// are dropped. `None` means INVALIDACL.
pub fn fix_up(requested: &[Acl], session: &[Identity]) -> Option<Vec<StoredAcl>> {
    if requested.is_empty() {
        return None;
    }
    let mut out: Vec<StoredAcl> = Vec::new();
    let mut push = |perms: i32, scheme: &str, id: &str| {
        let entry = StoredAcl {
            perms,
            scheme: scheme.to_string(),
            id: id.to_string(),
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    };
    for acl in requested {
        let Id { scheme, id } = &acl.id;
        match scheme.as_str() {
            "world" if id == "anyone" => push(acl.perms, scheme, id),
            "auth" => {
                let mut any = false;
                for identity in session.iter().filter(|i| i.scheme == "digest") {
                    push(acl.perms, &identity.scheme, &identity.id);
                    any = true;
                }
                if !any {
                    return None;
                }
            }
            "digest" if id.split(':').count() == 2 => push(acl.perms, scheme, id),
            "ip" if valid_ip_id(id) => push(acl.perms, scheme, id),
            _ => return None,
        }
    }
    Some(out)
}

fn ip_matches(pattern: &str, client: &str) -> bool {
    let Ok(client) = client.parse::<IpAddr>() else {
        return false;
    };
    let (addr, bits) = match pattern.split_once('/') {
        Some((addr, bits)) => (addr, bits.parse::<u32>().ok()),
        None => (pattern, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, client) {
        (IpAddr::V4(n), IpAddr::V4(c)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(c) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(c)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(c) & mask
        }
        _ => false,
    }
}

/// Whether `session` may do what `perm` names on a node with `acl` (an empty ACL allows
/// everything, as in ZooKeeper).
pub fn allows(acl: &[StoredAcl], perm: i32, session: &[Identity]) -> bool {
    if acl.is_empty() {
        return true;
    }
    acl.iter()
        .filter(|entry| entry.perms & perm != 0)
        .any(|entry| match entry.scheme.as_str() {
            "world" => entry.id == "anyone",
            "ip" => session
                .iter()
                .any(|i| i.scheme == "ip" && ip_matches(&entry.id, &i.id)),
            scheme => session
                .iter()
                .any(|i| i.scheme == scheme && i.id == entry.id),
        })
}

/// Stored ACL entries as wire records.
pub fn to_wire(acl: &[StoredAcl]) -> Vec<Acl> {
    acl.iter()
        .map(|entry| Acl {
            perms: entry.perms,
            id: Id {
                scheme: entry.scheme.clone(),
                id: entry.id.clone(),
            },
        })
        .collect()
}

/// Standard base64 with padding, for digest ids (20-byte hashes).
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::perms;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id {
                scheme: scheme.into(),
                id: id.into(),
            },
        }
    }

    #[test]
    fn digest_matches_zookeeper() {
        // `DigestAuthenticationProvider.generateDigest("user:pw")` in ZooKeeper 3.8.
        assert_eq!(
            digest_id("super:test").as_deref(),
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")
        );
        assert_eq!(digest_id("nocolon"), None);
        assert_eq!(base64_engine::encode(b"ab"), "YWI=");
        assert_eq!(base64_engine::encode(b"abc"), "YWJj");
        assert_eq!(base64_engine::encode(b"a"), "YQ==");
    }

    #[test]
    fn fix_up_follows_zookeeper() {
        let digest = Identity {
            scheme: "digest".into(),
            id: "u:h".into(),
        };
        let ip = Identity {
            scheme: "ip".into(),
            id: "127.0.0.1".into(),
        };
        assert_eq!(fix_up(&[], &[]), None);
        assert_eq!(fix_up(&[acl(perms::ALL, "world", "someone")], &[]), None);
        assert_eq!(
            fix_up(&[acl(perms::ALL, "auth", "")], std::slice::from_ref(&ip)),
            None
        );
        assert_eq!(fix_up(&[acl(perms::ALL, "nosuch", "x")], &[]), None);
        assert_eq!(fix_up(&[acl(perms::ALL, "ip", "10.0.0.0/33")], &[]), None);
        let fixed = fix_up(
            &[
                acl(perms::ALL, "auth", ""),
                acl(perms::READ, "world", "anyone"),
            ],
            &[ip, digest],
        );
        assert_eq!(
            fixed,
            Some(vec![
                StoredAcl {
                    perms: perms::ALL,
                    scheme: "digest".into(),
                    id: "u:h".into()
                },
                StoredAcl {
                    perms: perms::READ,
                    scheme: "world".into(),
                    id: "anyone".into()
                },
            ])
        );
    }

    #[test]
    fn permission_checks() {
        let local = vec![Identity {
            scheme: "ip".into(),
            id: "127.0.0.1".into(),
        }];
        let only_net = vec![StoredAcl {
            perms: perms::READ,
            scheme: "ip".into(),
            id: "127.0.0.0/8".into(),
        }];
        assert!(allows(&only_net, perms::READ, &local));
        assert!(!allows(&only_net, perms::WRITE, &local));
        let digest_only = vec![StoredAcl {
            perms: perms::ALL,
            scheme: "digest".into(),
            id: "u:h".into(),
        }];
        assert!(!allows(&digest_only, perms::READ, &local));
        assert!(allows(&[], perms::ADMIN, &local));
    }
}
