//! Answering an operator's status query ([`crate::master::StatusQuery`]) from what the publisher
//! published: one page of the status topics it asks for, in topic order.

use crate::master::{QueryPage, StatusQuery, MAX_PAGE_BYTES};

use super::{StatusPublisher, STATUS_PREFIX};

impl StatusPublisher {
    /// The page `query` asks for, as JSON ([`QueryPage`]): the status topics its kind covers, in
    /// order, after `query.after`, at most `query.limit` of them and [`MAX_PAGE_BYTES`] of their
    /// JSON (but at least one), with the topic to ask after for the next page.
    pub fn answer(&self, query: &StatusQuery) -> Vec<u8> {
        let mut topics: Vec<&str> = self
            .published
            .keys()
            .map(String::as_str)
            .filter(|t| {
                t.strip_prefix(STATUS_PREFIX)
                    .is_some_and(|rest| query.what.covers(rest))
            })
            .collect();
        topics.sort_unstable();
        let total = topics.len();
        let start = query
            .after
            .as_deref()
            .map_or(0, |after| topics.partition_point(|t| *t <= after));
        let mut entries = Vec::new();
        let mut bytes = 0;
        for topic in &topics[start..] {
            let payload = &self.published[*topic];
            if entries.len() == query.limit
                || (!entries.is_empty() && bytes + payload.len() > MAX_PAGE_BYTES)
            {
                break;
            }
            // What the publisher rendered itself: it parses.
            let Ok(json) = serde_json::from_slice(payload) else {
                continue;
            };
            bytes += topic.len() + payload.len();
            entries.push(((*topic).to_owned(), json));
        }
        let next = (start + entries.len() < total)
            .then(|| entries.last().map(|(t, _)| t.clone()))
            .flatten();
        let page = QueryPage {
            entries,
            next,
            total,
        };
        serde_json::to_vec(&page).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master::{QueryKind, QueryRequest};
    use crate::Config;
    use agent_nostd_core::auth::MessageKey;

    fn query(what: QueryKind, after: Option<String>, limit: u32) -> StatusQuery {
        let request = QueryRequest {
            operator: "operator-admin".into(),
            time: 0,
            reply_to: "cli".into(),
            what,
            after,
            limit: Some(limit),
        };
        StatusQuery::new(request, MessageKey::anonymous(), [0; 8]).unwrap()
    }

    fn page(publisher: &StatusPublisher, q: &StatusQuery) -> QueryPage {
        serde_json::from_slice(&publisher.answer(q)).unwrap()
    }

    #[test]
    fn a_long_list_comes_in_pages_in_topic_order_until_next_is_null() {
        let mut publisher = StatusPublisher::new(&Config::default(), 0);
        for i in (0..5).rev() {
            publisher.published.insert(
                format!("{STATUS_PREFIX}agent/pi{i}"),
                format!("{{\"n\":{i}}}").into(),
            );
        }
        publisher
            .published
            .insert(format!("{STATUS_PREFIX}task/f/t"), b"{}".to_vec());
        publisher
            .published
            .insert("homeassistant/sensor/x/config".into(), b"{}".to_vec());

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let p = page(&publisher, &query(QueryKind::Agents, after, 2));
            assert_eq!(p.total, 5);
            assert!(p.entries.len() <= 2);
            seen.extend(
                p.entries
                    .iter()
                    .map(|(t, v)| (t.clone(), v["n"].as_u64().unwrap())),
            );
            match p.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<_> = (0..5)
            .map(|i| (format!("{STATUS_PREFIX}agent/pi{i}"), i))
            .collect();
        assert_eq!(seen, expected);

        let all = page(&publisher, &query(QueryKind::All, None, 100));
        assert_eq!(all.total, 6, "every status topic, and nothing else");
        assert_eq!(all.next, None);
    }

    #[test]
    fn a_page_ends_before_it_exceeds_its_byte_bound_but_holds_at_least_one_entry() {
        let mut publisher = StatusPublisher::new(&Config::default(), 0);
        let big = format!("\"{}\"", "x".repeat(MAX_PAGE_BYTES / 2));
        for i in 0..3 {
            publisher
                .published
                .insert(format!("{STATUS_PREFIX}offer/{i}"), big.clone().into());
        }
        let p = page(&publisher, &query(QueryKind::Offers, None, 100));
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.next.as_deref(), Some("bramble/v1/status/offer/0"));
    }
}
