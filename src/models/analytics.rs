//! Analytics events.
//!
//! [`AnalyticsEvent`]s carry visitor analytics (sessions, page views,
//! engagement) and aggregated real-time statistics to dashboards.
//!
//! JSON uses a `"type"` tag in `SCREAMING_SNAKE_CASE` like the other
//! channels, but — unlike them — **`snake_case` member names**
//! (`session_id`, `time_on_page_ms`, ...), matching the analytics events of
//! the system sse-hub replaces. Every event has an optional `timestamp`
//! (milliseconds); durations are milliseconds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An analytics event, tagged by `"type"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnalyticsEvent {
    /// `SESSION_STARTED`: a visitor session began.
    SessionStarted(SessionStarted),
    /// `SESSION_ENDED`: a visitor session ended.
    SessionEnded(SessionEnded),
    /// `PAGE_VIEW`: a page was viewed.
    PageView(PageView),
    /// `ENGAGEMENT_UPDATE`: engagement metrics for the current page.
    EngagementUpdate(EngagementUpdate),
    /// `REAL_TIME_STATS`: aggregated live statistics.
    RealTimeStats(RealTimeStats),
    /// `HEARTBEAT`: keep-alive.
    Heartbeat(Heartbeat),
}

event_enum!(AnalyticsEvent {
    SessionStarted => "SESSION_STARTED",
    SessionEnded => "SESSION_ENDED",
    PageView => "PAGE_VIEW",
    EngagementUpdate => "ENGAGEMENT_UPDATE",
    RealTimeStats => "REAL_TIME_STATS",
    Heartbeat => "HEARTBEAT",
});

unknown_members!(extra: SessionStarted, SessionEnded, PageView, EngagementUpdate, Heartbeat);
unknown_members!(unknown: RealTimeStats);

/// Payload of `SESSION_STARTED`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    /// `session_id`: id of the visitor session.
    pub session_id: String,
    /// `user_agent`: the browser's user-agent string, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `referrer`: the referring URL, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `SESSION_ENDED`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEnded {
    /// `session_id`: id of the visitor session.
    pub session_id: String,
    /// `duration_ms`: total session length in milliseconds, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `PAGE_VIEW`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageView {
    /// `session_id`: id of the visitor session.
    pub session_id: String,
    /// `page`: path or URL of the page viewed.
    pub page: String,
    /// `title`: the page title, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `referrer`: the referring URL, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `ENGAGEMENT_UPDATE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngagementUpdate {
    /// `session_id`: id of the visitor session.
    pub session_id: String,
    /// `page`: path or URL of the page, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// `time_on_page_ms`: time spent on the page in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_on_page_ms: Option<u64>,
    /// `scroll_depth`: deepest scroll position reached (typically a
    /// percentage, 0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scroll_depth: Option<f64>,
    /// `clicks`: number of clicks on the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clicks: Option<u64>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Payload of `REAL_TIME_STATS`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RealTimeStats {
    /// `active_sessions`: number of currently active sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_sessions: Option<u64>,
    /// `active_users`: number of currently active users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_users: Option<u64>,
    /// `page_views`: number of page views in the reporting window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_views: Option<u64>,
    /// `extra`: any further free-form statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones (named `unknown` here, since `extra` is a member of this event).
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// Payload of `HEARTBEAT`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `timestamp`: milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Members this model does not know, kept as they came and written back after the known
    /// ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
