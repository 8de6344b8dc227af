//! Data sets shared by several tests.

/// Puts, in order, that leave four keys under `key/` whose orders by key, version,
/// create revision, mod revision and value all differ. On an empty store (revision 1)
/// they take revisions 2 to 11 and leave:
///
/// | key   | value | version | create | mod |
/// |-------|-------|---------|--------|-----|
/// | key/a | v3    | 1       | 3      | 3   |
/// | key/b | v1    | 4       | 5      | 10  |
/// | key/c | v4    | 2       | 2      | 11  |
/// | key/d | v2    | 3       | 4      | 7   |
pub const SORT_PUTS: &[(&str, &str)] = &[
    ("key/c", "x"),
    ("key/a", "v3"),
    ("key/d", "x"),
    ("key/b", "x"),
    ("key/d", "x"),
    ("key/d", "v2"),
    ("key/b", "x"),
    ("key/b", "x"),
    ("key/b", "v1"),
    ("key/c", "v4"),
];

/// The keys [`SORT_PUTS`] leaves, in ascending order of each sort target (named as
/// etcdctl's `--sort-by` names them); descending order is the reverse.
pub const SORTED_ASCENDING: [(&str, [&str; 4]); 5] = [
    ("KEY", ["key/a", "key/b", "key/c", "key/d"]),
    ("VERSION", ["key/a", "key/c", "key/d", "key/b"]),
    ("CREATE", ["key/c", "key/a", "key/d", "key/b"]),
    ("MODIFY", ["key/a", "key/d", "key/b", "key/c"]),
    ("VALUE", ["key/b", "key/d", "key/a", "key/c"]),
];

/// [`SORTED_ASCENDING`]'s order for `target`, reversed when `descending`.
pub fn sorted_keys(target: &str, descending: bool) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = SORTED_ASCENDING
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, keys)| keys.to_vec())
        .unwrap_or_default();
    if descending {
        keys.reverse();
    }
    keys
}
