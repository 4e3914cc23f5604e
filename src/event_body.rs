//! [`EventBody`]: an event in a request body, for the routes that publish.
//!
//! `axum::Json<T>` answers a body it cannot read as `T` with `422` (or `415` without
//! `Content-Type: application/json`) and a plain-text body, so a publishing route built on it
//! answers a malformed event differently from every other refusal of the library, which is a
//! status with the JSON body `{"error": code, "message": text}` (see
//! [`error_response`]). `EventBody` reads the body as `T` and refuses the same way as the rest:
//!
//! | body | status | `error` |
//! |---|---|---|
//! | empty, or not JSON | `400` | `invalid_json` |
//! | JSON, but not a `T` (a missing member, a wrong type) | `400` | `invalid_event`, with serde's explanation |
//! | over the route's body limit (axum's `DefaultBodyLimit`, 2 MB unless set) | `413` | `body_too_large` |
//! | unreadable (a broken chunked coding, a client gone) | `400` | `unreadable_body` |
//!
//! Any `Content-Type` is taken: agents and scripts often send none. An event that reads as a
//! `T` may still be refused when it is published (a member the AG-UI schemas reject, a frame
//! over [`Config::max_frame_bytes`](crate::Config::max_frame_bytes)): the [`PublishError`]
//! is a JSON refusal too.
//!
//! [`PublishError`]: crate::PublishError

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::sse::error_response;

/// The request body as an event of type `T`, refused with a JSON error when it is not one.
/// See the [module docs](self).
///
/// ```
/// use axum::{Router, extract::{Path, State}, http::StatusCode, response::IntoResponse};
/// use sse_hub::{EventBody, EventRouter, UserId, models::AgUiEvent};
///
/// async fn publish(
///     State(router): State<EventRouter>,
///     Path(user): Path<String>,
///     EventBody(event): EventBody<AgUiEvent>,
/// ) -> impl IntoResponse {
///     match router.route_agui(&UserId::from(user), &event) {
///         Ok(routed) => (StatusCode::ACCEPTED, axum::Json(routed)).into_response(),
///         Err(error) => error.into_response(),
///     }
/// }
///
/// let app: Router = Router::new()
///     .route("/agui/{user}", axum::routing::post(publish))
///     .with_state(EventRouter::default());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for EventBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the request body is over the route's limit",
                    )
                } else {
                    error_response(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        format_args!(
                            "the request body could not be read: {}",
                            rejection.body_text()
                        ),
                    )
                }
            })?;
        serde_json::from_slice(&body).map(Self).map_err(|error| {
            let refuse =
                |code, message: String| error_response(StatusCode::BAD_REQUEST, code, message);
            if body.iter().all(u8::is_ascii_whitespace) {
                refuse("invalid_json", "the request body is empty".to_owned())
            } else if error.is_syntax() || error.is_eof() {
                refuse(
                    "invalid_json",
                    format!("the request body is not JSON: {error}"),
                )
            } else {
                refuse(
                    "invalid_event",
                    format!(
                        "the request body is not a valid `{}`: {error}",
                        short_type_name::<T>()
                    ),
                )
            }
        })
    }
}

/// `T`'s name without its path (`AgUiEvent`, not `sse_hub::models::agui::AgUiEvent`): the
/// message names what was expected without the crate's layout.
fn short_type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    let end = name.find('<').unwrap_or(name.len());
    name[..end].rsplit("::").next().unwrap_or(name)
}
