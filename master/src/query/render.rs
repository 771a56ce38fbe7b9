//! The tables of `bramble status|agents|frameworks|tasks|offers`, from the status shapes.

use bramble_master_core::status::{
    state_name, AgentStatus, ClusterStatus, FrameworkStatus, OfferStatus, TaskStatus,
};

/// Renders rows under headers as an aligned table (columns separated by two spaces).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(c);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON number as the JSON has it (`1.0`, `0.25`), or `-` if it is not finite.
fn number(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// Thousandths of a core as cores, e.g. `1.5`.
fn cores(millis: u64) -> String {
    let s = format!("{:.2}", millis as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `bramble status`: the cluster summary as `key: value` lines.
pub fn render_cluster(c: &ClusterStatus) -> String {
    let tasks = c
        .tasks
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tasks = if tasks.is_empty() {
        "none".to_owned()
    } else {
        tasks
    };
    let rows = [
        vec![
            "agents".to_owned(),
            format!("{} online, {} offline", c.agents_online, c.agents_offline),
        ],
        vec![
            "frameworks".to_owned(),
            format!("{} ({} connected)", c.frameworks, c.frameworks_connected),
        ],
        vec!["tasks".to_owned(), tasks],
        vec![
            "cpu (cores)".to_owned(),
            format!(
                "{} used of {}, {} free",
                cores(c.cpu_millis_used),
                cores(c.cpu_millis_total),
                cores(c.cpu_millis_free)
            ),
        ],
        vec![
            "memory (MiB)".to_owned(),
            format!(
                "{} used of {}, {} free",
                c.mem_mib_used, c.mem_mib_total, c.mem_mib_free
            ),
        ],
        vec![
            "disk (MiB)".to_owned(),
            format!(
                "{} used of {}, {} free",
                c.disk_mib_used, c.disk_mib_total, c.disk_mib_free
            ),
        ],
        vec![
            "offers outstanding".to_owned(),
            c.offers_outstanding.to_string(),
        ],
    ];
    rows.iter()
        .map(|r| format!("{:<19} {}\n", format!("{}:", r[0]), r[1]))
        .collect()
}

/// `bramble agents`.
pub fn render_agents(agents: &[&AgentStatus]) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let attrs = a
                .attributes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                a.agent_id.clone(),
                a.state.as_str().to_owned(),
                format!("{}/{}", cores(a.cpu_millis_used), cores(a.cpu_millis_total)),
                format!("{}/{}", a.mem_mib_used, a.mem_mib_total),
                a.soc_temp_c.map_or("-".to_owned(), |t| format!("{t:.1}")),
                a.running_tasks.to_string(),
                attrs,
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "STATE",
            "CPU",
            "MEM MiB",
            "TEMP °C",
            "TASKS",
            "ATTRIBUTES",
        ],
        &rows,
    )
}

/// `bramble frameworks`.
pub fn render_frameworks(frameworks: &[&FrameworkStatus]) -> String {
    let rows: Vec<Vec<String>> = frameworks
        .iter()
        .map(|f| {
            vec![
                f.framework_id.clone(),
                f.name.clone(),
                f.role.clone(),
                number(f.weight),
                f.state.as_str().to_owned(),
                format!("{:.3}", f.dominant_share),
                f.tasks.running.to_string(),
                f.tasks.finished.to_string(),
                f.tasks.failed.to_string(),
                f.offers.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "FRAMEWORK",
            "NAME",
            "ROLE",
            "WEIGHT",
            "STATE",
            "SHARE",
            "RUNNING",
            "FINISHED",
            "FAILED",
            "OFFERS",
        ],
        &rows,
    )
}

/// `bramble tasks`.
pub fn render_tasks(tasks: &[&TaskStatus]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let reason = match (t.exit_code, t.signal) {
                (Some(code), _) => format!("exited {code}"),
                (_, Some(sig)) => format!("signal {sig}"),
                _ => t.reason.as_str().to_owned(),
            };
            vec![
                t.framework_id.clone(),
                t.task_id.clone(),
                state_name(t.state).to_owned(),
                t.agent_id.clone(),
                cores(t.cpu_millis.into()),
                t.mem_mib.to_string(),
                reason,
                t.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "FRAMEWORK",
            "TASK",
            "STATE",
            "AGENT",
            "CPU",
            "MEM MiB",
            "REASON",
            "MESSAGE",
        ],
        &rows,
    )
}

/// `bramble offers`; ages are from `now_ms` (epoch ms).
pub fn render_offers(offers: &[&OfferStatus], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = offers
        .iter()
        .map(|o| {
            let age = now_ms.saturating_sub(o.since);
            vec![
                o.offer_id.to_string(),
                o.framework_id.clone(),
                o.agent_id.clone(),
                cores(o.cpu_millis.into()),
                o.mem_mib.to_string(),
                o.disk_mib.to_string(),
                format!("{:.1}s", age as f64 / 1000.0),
            ]
        })
        .collect();
    table(
        &[
            "OFFER",
            "FRAMEWORK",
            "AGENT",
            "CPU",
            "MEM MiB",
            "DISK MiB",
            "AGE",
        ],
        &rows,
    )
}
