//! Maps keyed by the plan's own strings (cell ids, tags), which a 10,000-cell plan
//! hashes some 50,000 times: with the standard library's SipHash that was 7 % of
//! `matrix plan`. The keys come from the matrix being planned, not from a network
//! peer, so flooding resistance buys nothing here; a multiply-rotate hash of a word
//! at a time (the scheme rustc's own maps use) is enough.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A map with [`WordHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;
/// A set with [`WordHasher`].
pub type FastSet<K> = HashSet<K, BuildHasherDefault<WordHasher>>;

/// An empty [`FastMap`] with room for `n` entries.
pub fn map_with_capacity<K, V>(n: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(n, BuildHasherDefault::default())
}

/// Hashes eight bytes at a time: each word is mixed into the state by a rotation, an
/// exclusive or and a multiplication by an odd constant.
#[derive(Default, Clone, Copy)]
pub struct WordHasher {
    state: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl WordHasher {
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0; 8];
            b.copy_from_slice(w);
            self.add(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0; 8];
            b[..rest.len()].copy_from_slice(rest);
            // the length keeps "a" and "a\0" apart
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// A key of two strings, such as a (base reference, platform): maps keyed by
/// `(String, String)` are looked up with two borrowed strings through `dyn Pair`
/// (see [`pair`]), with no key built per lookup.
pub trait Pair {
    fn pair(&self) -> (&str, &str);
}

impl Pair for (String, String) {
    fn pair(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl Pair for (&str, &str) {
    fn pair(&self) -> (&str, &str) {
        *self
    }
}

/// Hashed and compared as the tuple of its strings, as `(String, String)` is.
impl std::hash::Hash for dyn Pair + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.pair().hash(h);
    }
}

impl PartialEq for dyn Pair + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.pair() == other.pair()
    }
}

impl Eq for dyn Pair + '_ {}

impl<'a> std::borrow::Borrow<dyn Pair + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn Pair + 'a) {
        self
    }
}

/// `(a, b)` as a key of a map or set keyed by `(String, String)`.
pub fn pair<'k>(key: &'k (&'k str, &'k str)) -> &'k (dyn Pair + 'k) {
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_differ_hash_apart_and_maps_behave_as_maps() {
        let hash = |s: &str| {
            let mut h = WordHasher::default();
            h.write(s.as_bytes());
            h.finish()
        };
        let keys = [
            "",
            "a",
            "a\0",
            "ab",
            "ba",
            "12345678",
            "123456789",
            "py3.10-debian12-amd64-base",
        ];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            assert!(seen.insert(hash(k)), "{k:?} collides");
        }
        let mut m: FastMap<String, usize> = map_with_capacity(4);
        for (i, k) in keys.iter().enumerate() {
            m.insert((*k).to_string(), i);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(*k), Some(&i));
        }
        assert_eq!(m.get("absent"), None);
    }

    /// Borrowed pairs find what owned ones were stored under, in std's maps (SipHash)
    /// and in these, and only that: the halves are not run together.
    #[test]
    fn pairs_of_borrowed_strings_find_owned_keys() {
        let owned = |a: &str, b: &str| (a.to_string(), b.to_string());
        let mut std_map = std::collections::HashMap::new();
        let mut fast: FastMap<(String, String), u8> = map_with_capacity(2);
        for (i, (a, b)) in [
            ("ubuntu:22.04", "linux/amd64"),
            ("ubuntu:22.04", "linux/arm64"),
        ]
        .into_iter()
        .enumerate()
        {
            std_map.insert(owned(a, b), i);
            fast.insert(owned(a, b), i as u8);
        }
        assert_eq!(
            std_map.get(pair(&("ubuntu:22.04", "linux/arm64"))),
            Some(&1)
        );
        assert_eq!(fast.get(pair(&("ubuntu:22.04", "linux/amd64"))), Some(&0));
        assert_eq!(std_map.get(pair(&("ubuntu:22.04linux/", "amd64"))), None);
        assert_eq!(fast.get(pair(&("ubuntu:22.04", "linux/riscv64"))), None);
        let set: std::collections::HashSet<(String, String)> = std_map.into_keys().collect();
        assert!(set.contains(pair(&("ubuntu:22.04", "linux/amd64"))));
    }
}
