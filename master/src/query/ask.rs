//! Asking the master for the cluster's status ([`ask`]): a signed status query on
//! `bramble/v1/operator/query`, answered page by page on a reply topic of this call's own, each
//! page sealed with the operator's key and bound to the query it answers (see PROTOCOL.md,
//! "Status queries"). Unlike the retained topics, it has no limit on how many entries a broker
//! hands over, so it works at any cluster size.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use agent_nostd_core::auth::{MessageKey, TAG_LEN};
use bramble_master_core::master::{
    open_reply, sign_operator_command, QueryKind, QueryPage, QueryRequest, OPERATOR_QUERY_TOPIC,
};
use rumqttc::{AsyncClient, Event, Packet, QoS};

use super::StatusSnapshot;
use crate::mqtt::{one_shot, BrokerAddr, Brokers, QueryError};

/// The most pages one answer may take (10,000 agents with their tasks is a few dozen).
const MAX_PAGES: usize = 1_000;

/// Asks the master (through the first of `brokers` that can be reached) for the status topics of
/// `what`, signed as `operator` with `key`; every page within `timeout` of the last.
pub async fn ask(
    brokers: &Brokers,
    operator: &str,
    key: &MessageKey,
    what: QueryKind,
    timeout: Duration,
) -> Result<StatusSnapshot, QueryError> {
    let mut last = None;
    for broker in brokers {
        match ask_at(broker, operator, key, what, timeout).await {
            Err(e @ QueryError::Connection { .. }) => last = Some(e),
            done => return done,
        }
    }
    Err(last.expect("a broker list is never empty"))
}

/// The query for the page after `after`, signed: its payload and its tag.
fn query(
    operator: &str,
    key: &MessageKey,
    reply_to: &str,
    what: QueryKind,
    after: Option<String>,
) -> (Vec<u8>, [u8; TAG_LEN]) {
    let request = QueryRequest {
        operator: operator.to_owned(),
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        reply_to: reply_to.to_owned(),
        what,
        after,
        limit: None,
    };
    let json = serde_json::to_vec(&request).expect("a query serializes");
    let payload = sign_operator_command(&json, key);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&payload[json.len()..]);
    (payload, tag)
}

async fn ask_at(
    broker: &BrokerAddr,
    operator: &str,
    key: &MessageKey,
    what: QueryKind,
    timeout: Duration,
) -> Result<StatusSnapshot, QueryError> {
    let n = RandomState::new().hash_one(std::process::id()) as u32;
    let reply_to = format!("q-{}-{n:08x}", std::process::id());
    let reply_topic = format!(
        "{}{reply_to}",
        bramble_master_core::master::OPERATOR_REPLY_PREFIX
    );
    let (client, mut eventloop) =
        bramble_mqtt::connect(one_shot(format!("bramble-query-{reply_to}"), broker));
    let connection = |e: &dyn std::fmt::Display| QueryError::connection(broker, e);
    let refused_or = |e| QueryError::of(broker, e);
    let send = |client: &AsyncClient, payload: Vec<u8>| {
        client.try_publish(OPERATOR_QUERY_TOPIC, QoS::AtLeastOnce, false, payload)
    };
    let mut snapshot = StatusSnapshot::default();
    let mut asked: Option<[u8; TAG_LEN]> = None;
    let mut pages = 0;
    loop {
        let event = tokio::time::timeout(timeout, eventloop.poll())
            .await
            .map_err(|_| QueryError::Timeout(broker.to_string()))?
            .map_err(refused_or)?;
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                client
                    .try_subscribe(&reply_topic, QoS::AtLeastOnce)
                    .map_err(|e| connection(&e))?;
            }
            Event::Incoming(Packet::SubAck(_)) if asked.is_none() => {
                let (payload, tag) = query(operator, key, &reply_to, what, None);
                send(&client, payload).map_err(|e| connection(&e))?;
                asked = Some(tag);
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == reply_topic => {
                let Some(tag) = asked else { continue };
                // Anything not sealed for this query (a forgery, a late page) is ignored.
                let Some(page) = open_reply(&p.payload, key, &tag)
                    .and_then(|json| serde_json::from_slice::<QueryPage>(json).ok())
                else {
                    tracing::debug!("ignored a reply that is not the answer to this query");
                    continue;
                };
                for (topic, value) in page.entries {
                    snapshot.insert(&topic, value.to_string().as_bytes());
                }
                pages += 1;
                match page.next {
                    Some(after) if pages < MAX_PAGES => {
                        let (payload, tag) = query(operator, key, &reply_to, what, Some(after));
                        send(&client, payload).map_err(|e| connection(&e))?;
                        asked = Some(tag);
                    }
                    _ => {
                        let _ = client.try_disconnect();
                        return Ok(snapshot);
                    }
                }
            }
            _ => {}
        }
    }
}
