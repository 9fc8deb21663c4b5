//! `GET /api/v1/events`: a server-sent-events stream with one `overview` event (every
//! task's state and metrics, as JSON) per second. Each stream ends when the node shuts
//! down, so no connection outlives the server.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use super::NodeState;
use super::api::ApiError;
use super::auth::Caller;
use crate::config::Role;
use crate::control::Control;

/// Seconds between two events.
const PERIOD: Duration = Duration::from_secs(1);

fn events(state: Arc<NodeState>) -> impl Stream<Item = Result<Event, Infallible>> {
    let tick = tokio::time::interval(PERIOD);
    futures_util::stream::unfold((state, tick), |(state, mut tick)| async move {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => None,
            _ = tick.tick() => {
                let event = match state.control.overview().await {
                    Ok(o) => Event::default().event("overview").json_data(&o).unwrap_or_else(|e| {
                        Event::default().event("error").data(format!("cannot encode the overview: {e}"))
                    }),
                    Err(e) => Event::default().event("error").data(e.to_string()),
                };
                Some((Ok(event), (state, tick)))
            }
        }
    })
}

/// `GET /api/v1/events`.
pub async fn stream(State(s): State<Arc<NodeState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Viewer, "reading events")?;
    Ok(Sse::new(events(s)).keep_alive(KeepAlive::default()).into_response())
}
