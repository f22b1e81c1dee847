//! Content digests and canonical hashing.
//!
//! Owns the one digest type of mesh ([`Digest`], 32 bytes of blake3) and the
//! rule that turns a value into a digest. A cache key is a `Serialize` struct
//! (see `exec::KeyInput`); [`digest_of`] streams its serde_json serialization
//! into a `blake3::Hasher` behind a domain separator. That serialization is
//! canonical for the types we hash: struct fields come in declaration order,
//! every map is a `BTreeMap` (sorted keys), and no floats are involved. Two
//! plans that differ only in formatting or table order therefore produce the
//! same digests, and nothing machine-specific (paths, times) is ever fed in.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A blake3 digest. Displayed and serialized as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digest of raw bytes.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex form.
    pub fn hex(&self) -> String {
        String::from_utf8(self.hex_bytes().to_vec()).expect("hex is ASCII")
    }

    /// Lowercase hex into a stack buffer (hot: every key serializes its
    /// digests this way).
    pub fn hex_bytes(&self) -> [u8; 64] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 15) as usize];
        }
        out
    }

    /// The first 12 hex characters, for humans.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }

    /// Parse 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Digest> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16)?;
            let lo = (chunk[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Digest(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex_bytes();
        s.serialize_str(std::str::from_utf8(&hex).expect("hex is ASCII"))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("not a 64-character hex digest"))
    }
}

/// Canonical digest of a serializable value, under a domain tag so that equal
/// encodings of different kinds of things never collide.
pub fn digest_of<T: Serialize + ?Sized>(domain: &str, value: &T) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(domain.as_bytes());
    h.update(&[0]);
    // Serialized into a buffer first: serde_json writes a value in many
    // small pieces, and one `update` per piece costs more than the hashing.
    // The buffer is the thread's own and kept between calls: planning takes
    // a digest per plan leaf, and a fresh buffer each time (malloc, page
    // faults) cost a quarter of it. Our types always serialize.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut write = |buf: &mut Vec<u8>| {
        buf.clear();
        serde_json::to_writer(&mut *buf, value).expect("hashable values serialize to JSON");
        h.update(buf);
    };
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            write(&mut buf);
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new();
            }
        }
        // A value whose serialization takes a digest itself.
        Err(_) => write(&mut Vec::new()),
    });
    Digest(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn hex_round_trips() {
        let d = Digest::of_bytes(b"mesh");
        assert_eq!(Digest::from_hex(&d.hex()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn map_order_does_not_matter_but_values_do() {
        let mut a = BTreeMap::new();
        a.insert("x", 1);
        a.insert("y", 2);
        let mut b = BTreeMap::new();
        b.insert("y", 2);
        b.insert("x", 1);
        assert_eq!(digest_of("t", &a), digest_of("t", &b));
        b.insert("x", 3);
        assert_ne!(digest_of("t", &a), digest_of("t", &b));
        assert_ne!(digest_of("t", &a), digest_of("u", &a));
    }
}
