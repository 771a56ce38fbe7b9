//! The operator's status queries (`bramble status`, `agents`, `frameworks`, `tasks`, `offers`):
//! a signed request on [`OPERATOR_QUERY_TOPIC`], which the driver answers from the status
//! publisher ([`crate::status::StatusPublisher::answer`]) one page at a time on the reply topic the
//! request names, sealed with the requesting operator's key so the CLI knows the master sent it.
//!
//! The CLI used to gather the retained status topics, which fails on a broker that hands a new
//! subscriber only so many retained messages (rumqttd: about 100); a query has no such limit and
//! pages long lists. See PROTOCOL.md, "Status queries".

use std::collections::VecDeque;

use agent_nostd_core::auth::{MessageKey, TAG_LEN};
use serde::{Deserialize, Serialize};

/// The topic operators publish status queries on.
pub const OPERATOR_QUERY_TOPIC: &str = "bramble/v1/operator/query";
/// The prefix of the topics the master answers on: `bramble/v1/operator/reply/{reply_to}`.
pub const OPERATOR_REPLY_PREFIX: &str = "bramble/v1/operator/reply/";
/// How many queries may wait for the driver; more are dropped and counted (the CLI asks again or
/// falls back to the retained topics).
pub const MAX_QUERIES: usize = 32;
/// The most entries a page holds, whatever the query asks.
pub const MAX_PAGE: usize = 2_000;
/// The entries of a page when the query does not say.
pub const DEFAULT_PAGE: usize = 500;
/// The most bytes of entries a page holds (a page ends early rather than exceed it).
pub const MAX_PAGE_BYTES: usize = 256 * 1024;
const REPLY_LABEL: &[u8] = b"bramble/v1 master->operator";

/// Which status topics a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    /// Every status topic.
    All,
    /// `cluster` and `master`.
    Cluster,
    /// `agent/*`.
    Agents,
    /// `framework/*`.
    Frameworks,
    /// `task/*/*`.
    Tasks,
    /// `offer/*`.
    Offers,
}

impl QueryKind {
    /// Whether the status topic `rest` (after `bramble/v1/status/`) answers this kind.
    pub fn covers(self, rest: &str) -> bool {
        let kind = rest.split('/').next().unwrap_or_default();
        match self {
            QueryKind::All => true,
            QueryKind::Cluster => matches!(kind, "cluster" | "master"),
            QueryKind::Agents => kind == "agent",
            QueryKind::Frameworks => kind == "framework",
            QueryKind::Tasks => kind == "task",
            QueryKind::Offers => kind == "offer",
        }
    }
}

/// A query's JSON, as the CLI signs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The operator principal, e.g. `operator-admin`.
    pub operator: String,
    /// When it was made, in seconds since the Unix epoch.
    pub time: u64,
    /// The last part of the reply topic: 1–64 bytes of `A-Z a-z 0-9 . _ -`.
    pub reply_to: String,
    /// What it asks for.
    pub what: QueryKind,
    /// The page starts after this status topic (`null`: at the first).
    #[serde(default)]
    pub after: Option<String>,
    /// The most entries of the page (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A page of the answer, as the master sends it (before its tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryPage {
    /// The status topics of the page, in order, each with its JSON.
    pub entries: Vec<(String, serde_json::Value)>,
    /// The last topic of this page when more follow (ask again with it as `after`), else `null`.
    pub next: Option<String>,
    /// How many topics the query covers in all.
    pub total: usize,
}

/// A query the master took, waiting for the driver to answer it.
#[derive(Debug, Clone)]
pub struct StatusQuery {
    /// What it asks for.
    pub what: QueryKind,
    /// The page starts after this topic.
    pub after: Option<String>,
    /// The most entries of the page.
    pub limit: usize,
    reply_to: String,
    key: MessageKey,
    request_tag: [u8; TAG_LEN],
}

impl StatusQuery {
    /// The query `request`, signed with `tag` by the operator whose key is `key`; `None` when
    /// its reply topic is not a valid name.
    pub(crate) fn new(
        request: QueryRequest,
        key: MessageKey,
        tag: [u8; TAG_LEN],
    ) -> Option<StatusQuery> {
        let valid = (1..=64).contains(&request.reply_to.len())
            && request
                .reply_to
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        valid.then(|| StatusQuery {
            what: request.what,
            after: request.after,
            limit: request
                .limit
                .map_or(DEFAULT_PAGE, |l| l as usize)
                .clamp(1, MAX_PAGE),
            reply_to: request.reply_to,
            key,
            request_tag: tag,
        })
    }

    /// The topic its answer goes on.
    pub fn reply_topic(&self) -> String {
        format!("{OPERATOR_REPLY_PREFIX}{}", self.reply_to)
    }

    /// `json` (a [`QueryPage`]) sealed for the operator who asked: the payload to publish.
    pub fn seal(&self, json: &[u8]) -> Vec<u8> {
        seal_reply(json, &self.key, &self.request_tag)
    }
}

/// `json` followed by its tag: HMAC-SHA-256 under the operator's key of
/// `bramble/v1 master->operator` ‖ the request's tag ‖ `json`, truncated to 8 bytes. The request's
/// tag binds the answer to the query (a recorded answer is no answer to another).
pub fn seal_reply(json: &[u8], key: &MessageKey, request_tag: &[u8]) -> Vec<u8> {
    let tag = key.tag(&[REPLY_LABEL, request_tag, json]);
    let mut out = Vec::with_capacity(json.len() + TAG_LEN);
    out.extend_from_slice(json);
    out.extend_from_slice(&tag);
    out
}

/// The page JSON of a reply `payload` to the query whose tag was `request_tag`, if its tag
/// verifies under `key`.
pub fn open_reply<'p>(payload: &'p [u8], key: &MessageKey, request_tag: &[u8]) -> Option<&'p [u8]> {
    let at = payload.len().checked_sub(TAG_LEN)?;
    let (json, tag) = payload.split_at(at);
    key.verify(&[REPLY_LABEL, request_tag, json], tag)
        .then_some(json)
}

/// The queries waiting for the driver, at most [`MAX_QUERIES`].
#[derive(Debug, Clone, Default)]
pub(super) struct Queries {
    waiting: VecDeque<StatusQuery>,
}

impl Queries {
    /// Queues `query`; `false` (it is dropped) when [`MAX_QUERIES`] wait already.
    pub(super) fn push(&mut self, query: StatusQuery) -> bool {
        if self.waiting.len() >= MAX_QUERIES {
            return false;
        }
        self.waiting.push_back(query);
        true
    }

    pub(super) fn pop(&mut self) -> Option<StatusQuery> {
        self.waiting.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::auth::Secret;

    fn request(reply_to: &str, limit: Option<u32>) -> QueryRequest {
        QueryRequest {
            operator: "operator-admin".into(),
            time: 1,
            reply_to: reply_to.into(),
            what: QueryKind::Agents,
            after: None,
            limit,
        }
    }

    #[test]
    fn a_reply_opens_only_with_the_operators_key_and_the_tag_of_its_own_query() {
        let key = Secret::from_bytes([3; 32]).message_key();
        let q = StatusQuery::new(request("cli-1", None), key.clone(), [7; 8]).unwrap();
        assert_eq!(q.reply_topic(), "bramble/v1/operator/reply/cli-1");
        let sealed = q.seal(b"{\"entries\":[]}");
        assert_eq!(
            open_reply(&sealed, &key, &[7; 8]),
            Some(&b"{\"entries\":[]}"[..])
        );
        assert_eq!(open_reply(&sealed, &key, &[8; 8]), None, "another query's");
        let other = Secret::from_bytes([4; 32]).message_key();
        assert_eq!(open_reply(&sealed, &other, &[7; 8]), None, "a forgery");
        assert_eq!(open_reply(&sealed[..4], &key, &[7; 8]), None);
    }

    #[test]
    fn a_query_names_a_valid_reply_topic_and_its_page_size_is_bounded() {
        let key = MessageKey::anonymous();
        for bad in ["", "a/b", "+", "#", &"x".repeat(65)] {
            assert!(
                StatusQuery::new(request(bad, None), key.clone(), [0; 8]).is_none(),
                "{bad}"
            );
        }
        let page = |limit| {
            StatusQuery::new(request("c", limit), key.clone(), [0; 8])
                .unwrap()
                .limit
        };
        assert_eq!(page(None), DEFAULT_PAGE);
        assert_eq!(page(Some(0)), 1);
        assert_eq!(page(Some(1_000_000)), MAX_PAGE);
    }

    #[test]
    fn each_kind_covers_its_own_status_topics() {
        assert!(QueryKind::Agents.covers("agent/pi"));
        assert!(!QueryKind::Agents.covers("task/f/agent"));
        assert!(QueryKind::Tasks.covers("task/f/t"));
        assert!(QueryKind::Cluster.covers("cluster") && QueryKind::Cluster.covers("master"));
        assert!(QueryKind::All.covers("offer/3"));
    }

    #[test]
    fn no_more_than_the_bound_of_queries_wait() {
        let mut queries = Queries::default();
        let q = StatusQuery::new(request("c", None), MessageKey::anonymous(), [0; 8]).unwrap();
        for _ in 0..MAX_QUERIES {
            assert!(queries.push(q.clone()));
        }
        assert!(!queries.push(q), "the one too many is dropped");
        assert!(queries.pop().is_some());
    }
}
