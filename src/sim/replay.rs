//! A server that answers with recorded vendor answers, whatever was asked: the vendors' own
//! published examples and answers captured by `probe --save` (the fixtures in
//! `tests/answers/`). It checks no signature: what it tests is how answers are read.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use super::{SimRequest, SimResponse, Simulator};
use futures_util::future::BoxFuture;

use crate::lock::lock;

/// One recorded answer.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The API it answers (`Action`, `X-TC-Action`, `x-acs-action`, Agora's API by its path, or the last path
    /// segment of the request).
    pub api: String,
    /// Only for requests whose query or body contains this text (e.g. `Property=true`).
    pub when: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// The body, byte for byte as recorded.
    pub body: Vec<u8>,
}

/// Answers each API's requests with its recorded answers in order; the last one repeats.
pub struct Replay {
    vendor: &'static str,
    answers: Vec<Recorded>,
    served: Mutex<HashMap<Vec<usize>, usize>>,
    asked: Mutex<Vec<String>>,
}

impl Replay {
    /// A replay of `answers` for `vendor`.
    pub fn new(vendor: &'static str, answers: Vec<Recorded>) -> Self {
        Replay {
            vendor,
            answers,
            served: Mutex::new(HashMap::new()),
            asked: Mutex::new(Vec::new()),
        }
    }

    /// The APIs asked so far, in order.
    pub fn asked(&self) -> Vec<String> {
        lock(&self.asked).clone()
    }
}

/// The API a request is for, whichever way its vendor names it.
pub fn api_of(req: &SimRequest) -> String {
    if let Some(action) = form_urlencoded::parse(req.query.as_bytes())
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
    {
        return action;
    }
    if let Some(action) = req.header("x-tc-action") {
        return action;
    }
    // Alibaba's V3 signature names the API in a header.
    if let Some(action) = req.header("x-acs-action") {
        return action;
    }
    // Agora names its APIs by path only; the last segment is a channel or app id.
    if let Some(api) = super::agora::api_of(&req.path) {
        return api.to_string();
    }
    req.path.rsplit('/').next().unwrap_or_default().to_string()
}

impl Simulator for Replay {
    fn vendor(&self) -> &'static str {
        self.vendor
    }

    fn handle<'a>(&'a self, req: SimRequest) -> BoxFuture<'a, SimResponse> {
        Box::pin(async move {
            let api = api_of(&req);
            lock(&self.asked).push(api.clone());
            let text = format!("{}&{}", req.query, String::from_utf8_lossy(&req.body));
            let candidates: Vec<usize> = self
                .answers
                .iter()
                .enumerate()
                .filter(|(_, a)| a.api == api && a.when.as_ref().is_none_or(|w| text.contains(w)))
                .map(|(i, _)| i)
                .collect();
            let Some(last) = candidates.last().copied() else {
                return SimResponse::new(
                    404,
                    "text/plain",
                    format!("replay: no recorded answer for {api}").into_bytes(),
                );
            };
            let mut served = lock(&self.served);
            let n = served.entry(candidates.clone()).or_default();
            let pick = candidates.get(*n).copied().unwrap_or(last);
            *n += 1;
            let a = &self.answers[pick];
            SimResponse::new(a.status, "application/json", a.body.clone())
        })
    }

    fn demo_target(&self, _endpoint: &str) -> serde_yaml::Value {
        serde_yaml::Value::Null
    }

    fn describe(&self) -> String {
        format!("replay of {} recorded answer(s)", self.answers.len())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
