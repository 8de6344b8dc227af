//! A small line diff (longest common subsequence) for showing where two transcripts part.

/// Lines of context shown around each change.
pub const CONTEXT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

/// `None` when `expected` and `actual` have the same lines; otherwise a diff in which
/// `-` lines are only in `expected`, `+` lines only in `actual`, with [`CONTEXT`] lines of
/// context around each change and `@@ line N @@` giving the line in `expected`.
pub fn lines(expected: &str, actual: &str) -> Option<String> {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    if old == new {
        return None;
    }
    let edits = edits(&old, &new);
    let changed: Vec<bool> = edits.iter().map(|e| !matches!(e, Edit::Same(_))).collect();
    let mut out = String::new();
    let mut old_line = 0;
    let mut last_shown: Option<usize> = None;
    for (i, edit) in edits.iter().enumerate() {
        let lo = i.saturating_sub(CONTEXT);
        let hi = (i + CONTEXT + 1).min(edits.len());
        if changed[lo..hi].iter().any(|&c| c) {
            if last_shown.is_none_or(|last| last + 1 != i) {
                out.push_str(&format!("@@ line {} @@\n", old_line + 1));
            }
            last_shown = Some(i);
            let (mark, text) = match edit {
                Edit::Same(t) => (' ', t),
                Edit::Removed(t) => ('-', t),
                Edit::Added(t) => ('+', t),
            };
            out.push(mark);
            out.push(' ');
            out.push_str(text);
            out.push('\n');
        }
        if !matches!(edit, Edit::Added(_)) {
            old_line += 1;
        }
    }
    Some(out)
}

/// The shortest edit script from `old` to `new` by longest common subsequence.
fn edits<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Edit<'a>> {
    // lcs[i][j]: length of the LCS of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(old.len().max(new.len()));
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push(Edit::Same(old[i]));
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(Edit::Removed(old[i]));
            i += 1;
        } else {
            out.push(Edit::Added(new[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(lines("a\nb\n", "a\nb\n"), None);
    }

    #[test]
    fn a_changed_line_shows_as_removed_and_added_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            lines(old, new).unwrap(),
            "@@ line 2 @@\n  2\n  3\n  4\n- 5\n+ five\n  6\n  7\n  8\n"
        );
    }

    #[test]
    fn missing_and_extra_lines() {
        assert_eq!(lines("a\nb\n", "a\n").unwrap(), "@@ line 1 @@\n  a\n- b\n");
        assert_eq!(lines("a\n", "a\nb\n").unwrap(), "@@ line 1 @@\n  a\n+ b\n");
    }
}
