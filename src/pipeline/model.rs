//! A model call's doors (Chat Completions, Messages, Responses) as
//! endpoints of the driver: each reads its client's API into the internal
//! request, and reaches the provider through the model stages (cache,
//! route, failover), which the driver runs and concludes.

use std::convert::Infallible;
use std::sync::Arc;

use http::request::Parts;
use http::Response;

use super::call::{Call, Endpoint, Reached, Received};
use super::{unseen, Context};
use crate::endpoint::Door;
use crate::router::mode::ModeChoice;
use crate::server::body::Body;
use crate::server::error::ApiError;
use crate::server::ids::RequestId;
use crate::wire::request::{ChatRequest, P402Options};

/// A model call, parsed.
pub(crate) struct Asked {
    chat: ChatRequest,
    /// The client's own session id (Claude Code's), recorded with each
    /// ledger entry.
    client_session: Option<String>,
}

impl Endpoint for Door {
    type Request = Asked;
    /// Never produced: a model call's answer is the model stages'.
    type Answer = Infallible;

    fn name(&self) -> &'static str {
        Door::name(*self)
    }

    fn parse(&self, _call: &Call<'_>, parts: Parts, body: Received) -> Result<Asked, ApiError> {
        let chat = Door::parse(*self, &body.whole()?, &parts.headers)?;
        let client_session = parts
            .headers
            .get("x-claude-code-session-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map(str::to_string);
        Ok(Asked {
            chat,
            client_session,
        })
    }

    fn options<'r>(&self, asked: &'r Asked) -> Option<&'r P402Options> {
        Some(&asked.chat.options)
    }

    /// What a budget cannot count is refused here (or kept to one
    /// candidate), and the request's mode settled, before the model
    /// stages take it.
    async fn reach(
        &self,
        call: &mut Call<'_>,
        asked: Asked,
    ) -> Result<Reached<Infallible>, ApiError> {
        let Asked {
            mut chat,
            client_session,
        } = asked;
        let charge = call
            .charge
            .take()
            .ok_or_else(|| ApiError::internal("a model call without its charge"))?;
        if charge.is_budgeted() {
            unseen::refuse_under_budget(&chat)?;
        } else if unseen::background(&chat) {
            // A queued job is billed once it runs, whatever p402 does next:
            // sent to one candidate only, it can never be started twice.
            chat.options.failover = Some(false);
        }
        // A session may carry the mode of its requests (`p402 run --mode`).
        if chat.options.mode.is_none() {
            chat.options.mode = charge.session.as_ref().and_then(|s| s.mode);
        }
        let mode = chat.options.mode.unwrap_or(ModeChoice::Named(
            call.runtime.config().routing.default_mode,
        ));
        Ok(Reached::Model(Arc::new(Context {
            state: call.state.clone(),
            runtime: Arc::clone(call.runtime),
            id: call.id.clone(),
            started: call.started,
            door: *self,
            chat,
            charge,
            mode,
            client_session,
        })))
    }

    fn render(&self, _call: &Call<'_>, answer: Infallible) -> Response<Body> {
        match answer {}
    }

    fn error(&self, error: &ApiError, id: &RequestId) -> Response<Body> {
        Door::error(*self, error, id)
    }
}
