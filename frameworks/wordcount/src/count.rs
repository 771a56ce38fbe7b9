//! Words, counts and chunks.

use std::collections::BTreeMap;

/// Counts per word.
pub type Counts = BTreeMap<String, u64>;

/// The words of `text`: maximal runs of alphanumeric characters, lowercased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Counts the words of `text`.
pub fn count_words(text: &str) -> Counts {
    let mut counts = Counts::new();
    for w in words(text) {
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}

/// Adds `part` into `total`.
pub fn merge(total: &mut Counts, part: impl IntoIterator<Item = (String, u64)>) {
    for (w, n) in part {
        let slot = total.entry(w).or_insert(0);
        *slot = slot.saturating_add(n);
    }
}

/// The `n` most frequent words, most frequent first, ties in alphabetical order.
pub fn top(counts: &Counts, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = counts.iter().map(|(w, c)| (w.clone(), *c)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

/// Splits `text` into chunks of at most `max_bytes` (at least 64), at line ends where it can. A line
/// longer than a chunk is cut between words (at a non-alphanumeric character), or, for a single
/// word longer than a chunk, at a character boundary: then that word is counted as two. Chunks
/// concatenate back to `text`.
pub fn chunks(text: &str, max_bytes: usize) -> Vec<&str> {
    let max = max_bytes.max(64);
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() <= max {
            out.push(rest);
            break;
        }
        let window = floor_char_boundary(rest, max);
        let head = &rest[..window];
        // The last line end in the window, else the last word boundary, else a char boundary.
        let cut = head
            .rfind('\n')
            .map(|i| i + 1)
            .or_else(|| {
                head.char_indices()
                    .rev()
                    .find(|(_, c)| !c.is_alphanumeric())
                    .map(|(i, c)| i + c.len_utf8())
            })
            .filter(|&i| i > 0)
            .unwrap_or(window.max(next_char_boundary(rest, 1)));
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn next_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn words_are_lowercased_alphanumeric_runs() {
        let c = count_words("The cat, the CAT! Ünïcode ünïcode 42 x_y");
        assert_eq!(c.get("the"), Some(&2));
        assert_eq!(c.get("cat"), Some(&2));
        assert_eq!(c.get("ünïcode"), Some(&2));
        assert_eq!(c.get("42"), Some(&1));
        assert_eq!(c.get("x"), Some(&1));
        assert_eq!(c.get("y"), Some(&1));
    }

    #[test]
    fn top_orders_by_count_then_alphabetically() {
        let c = count_words("b a c b a b d");
        assert_eq!(
            top(&c, 3),
            vec![("b".into(), 3), ("a".into(), 2), ("c".into(), 1)]
        );
    }

    #[test]
    fn chunks_break_at_line_ends_and_fit_their_limit() {
        let text = "one two three\n".repeat(100);
        let cs = chunks(&text, 100);
        assert!(cs.iter().all(|c| c.len() <= 100 && c.ends_with('\n')));
        assert_eq!(cs.concat(), text);
    }

    #[test]
    fn a_long_line_is_cut_between_words() {
        let text = "word ".repeat(100);
        let cs = chunks(&text, 64);
        assert!(cs.iter().all(|c| c.len() <= 64));
        assert_eq!(cs.concat(), text);
        let mut total = Counts::new();
        for c in &cs {
            merge(&mut total, count_words(c));
        }
        assert_eq!(total, count_words(&text));
    }

    proptest! {
        #[test]
        fn mapping_chunks_and_reducing_equals_counting_the_whole_text(
            text in "([a-zA-Zé0-9]{1,12}[ ,.!\n]{1,3}){0,200}",
            max in 64usize..400,
        ) {
            let cs = chunks(&text, max);
            prop_assert_eq!(cs.concat(), text.clone());
            let mut total = Counts::new();
            for c in cs {
                prop_assert!(c.len() <= max);
                merge(&mut total, count_words(c));
            }
            prop_assert_eq!(total, count_words(&text));
        }
    }
}
