//! The typed errors of sse-hub. Every input a caller passes is checked; none of it panics.

/// The error a [`ToSse`](crate::ToSse) implementation returns when it cannot write its data.
pub type EncodeError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A frame field that cannot be put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// An `id` containing CR, LF (it would end the line) or NUL (clients ignore it).
    #[error("an SSE id must not contain CR, LF or NUL")]
    Id,
    /// An `event` name containing CR, LF or NUL.
    #[error("an SSE event name must not contain CR, LF or NUL")]
    EventName,
    /// A comment containing CR, LF or NUL.
    #[error("an SSE comment must not contain CR, LF or NUL")]
    Comment,
}

/// A thread name that cannot be used: see [`ThreadId`](crate::ThreadId). Over HTTP: `400` with
/// `{"error":"invalid_thread"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidThread {
    /// The name is empty.
    #[error("a thread name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_THREAD_LEN`](crate::MAX_THREAD_LEN) bytes.
    #[error("the thread name is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name is not UTF-8.
    #[error("a thread name must be UTF-8")]
    NotUtf8,
    /// The request names a thread more than once (`?thread=a&thread=b`): which one it meant
    /// is not known.
    #[error("the thread is named more than once")]
    Repeated,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The user already has [`Config::max_connections_per_user`](crate::Config) connections on
    /// this channel. Over HTTP: `429 Too Many Requests`.
    #[error("the user already has {max} connections on this channel")]
    TooManyConnections {
        /// The configured limit.
        max: usize,
    },
    /// The broadcaster holds [`Config::max_channels`](crate::Config) user channels and none has
    /// expired. Over HTTP: `503 Service Unavailable`.
    #[error("the broadcaster is at its limit of {max} user channels")]
    AtCapacity {
        /// The configured limit.
        max: usize,
    },
    /// [`Broadcaster::shutdown`](crate::Broadcaster::shutdown) was called. Over HTTP: `503`.
    #[error("the broadcaster is shutting down")]
    ShuttingDown,
}

/// Why an event was not published. When `broadcast` returns an error, no connection received
/// the event and nothing was stored, except with [`PublishError::Backplane`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event's [`ToSse`](crate::ToSse) implementation failed (for serde types, the
    /// serialisation error).
    #[error("the event could not be encoded: {0}")]
    Encode(#[source] EncodeError),
    /// The event's data is not UTF-8, which SSE requires.
    #[error("the event data is not UTF-8")]
    NotUtf8,
    /// The event's name cannot be put on the wire.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The encoded frame is larger than [`Config::max_frame_bytes`](crate::Config).
    #[error("the encoded frame is {size} bytes, over the limit of {max}")]
    FrameTooLarge {
        /// The size of the encoded frame.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// [`Broadcaster::shutdown`](crate::Broadcaster::shutdown) was called.
    #[error("the broadcaster is shutting down")]
    ShuttingDown,
    /// A publish into a thread must keep the thread's state, which needs the user's channel,
    /// and the broadcaster holds [`Config::max_channels`](crate::Config) channels already.
    /// Over HTTP: `503`.
    #[error("the broadcaster is at its limit of {max} user channels")]
    AtCapacity {
        /// The configured limit.
        max: usize,
    },
    /// The broadcaster's [backplane](crate::backplane) does not carry threads
    /// ([`Backplane::supports_threads`](crate::backplane::Backplane::supports_threads); the
    /// Redis backplane does). Over HTTP: `501`.
    #[error("publishing into a thread is not supported by this backplane")]
    ThreadsNeedOneNode,
    /// The event is one its protocol rejects (an AG-UI event with a wrong role, a missing
    /// member, a malformed JSON Patch, a timestamp that is not a safe integer, ...): the error
    /// names the member. Checked before anything is encoded, so nothing was published. Over
    /// HTTP: `400` with the code `invalid_event`.
    #[error("the event is invalid: {0}")]
    InvalidEvent(#[from] InvalidEvent),
    /// The [backplane](crate::backplane) could not take the event. When it surely did not
    /// reach the backplane ([`BackplaneError::Disconnected`], `Timeout` or `Failed`), this
    /// node's own connections *did* receive it, without an id (so their last event id stays
    /// valid); the other nodes and the shared history did not, and the loss is counted in
    /// [`Stats::backplane_failures`](crate::Stats::backplane_failures). Over HTTP: `503`.
    /// [`BackplaneError::Overloaded`] and `Closed`: delivered nowhere (`503`).
    /// [`BackplaneError::Unknown`]: maybe delivered everywhere, not delivered locally without
    /// an id (`504`).
    #[error("the event did not reach the backplane: {0}")]
    Backplane(#[source] BackplaneError),
}

impl From<serde_json::Error> for PublishError {
    fn from(error: serde_json::Error) -> Self {
        Self::Encode(Box::new(error))
    }
}

/// Why the backplane could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackplaneError {
    /// The backplane is not connected (it reconnects by itself).
    #[error("the backplane is not connected")]
    Disconnected,
    /// The node's queue of publishes waiting for the backplane is full: the event was
    /// delivered nowhere.
    #[error("the backplane's publish queue is full")]
    Overloaded,
    /// The backplane did not answer in time.
    #[error("the backplane did not answer in time")]
    Timeout,
    /// The backplane answered with an error.
    #[error("backplane error: {0}")]
    Failed(String),
    /// The publish was sent, but the backplane did not confirm it before the retries ran out
    /// (`RedisConfig::publish_retry` for the Redis backplane): the event
    /// may have reached the history and every node, or none. It was *not* delivered locally
    /// without an id (that would duplicate it if it did get through). Retrying it may
    /// duplicate it; a caller that must know reads the user's stream. Over HTTP: `504`.
    #[error(
        "the backplane did not confirm the publish in time: it may have reached every node, or none"
    )]
    Unknown,
    /// A setting of the backplane cannot work; returned when the backplane is created.
    #[error("invalid backplane setting `{setting}`: {problem}")]
    InvalidConfig {
        /// The setting's name, as its field is named.
        setting: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The backplane's server is a version that cannot keep the guarantees (the Redis
    /// backplane needs Redis 7.0 or later). The backplane keeps retrying, in case the server is
    /// upgraded, and stays disconnected meanwhile.
    #[error("unsupported backplane server version {version}: {requirement}")]
    Unsupported {
        /// The version the server reported.
        version: String,
        /// The version needed.
        requirement: &'static str,
    },
    /// The backplane was closed (`RedisBackplane::close`)
    /// and takes no more publishes.
    #[error("the backplane is closed")]
    Closed,
}

/// An event the AG-UI 1.0 schemas reject: which member, and why.
///
/// Displayed as ``invalid `member`: reason``; `member` is the member's wire name, or its path
/// inside it (`messages[1].toolCalls[0].id`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{member}`: {reason}")]
pub struct InvalidEvent {
    /// The member, by its wire name or its path.
    pub member: String,
    /// What is wrong with it.
    pub reason: String,
}

impl InvalidEvent {
    /// An error about `member`.
    pub fn new(member: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            member: member.into(),
            reason: reason.into(),
        }
    }
}
