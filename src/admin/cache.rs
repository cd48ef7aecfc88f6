//! `DELETE /api/cache?pool=NAME&key=KEY` (or `&prefix=PREFIX`): a cache purge,
//! proposed through the cluster and applied by every instance at the index it
//! commits at; answered once committed and applied here. Same token and forwarding
//! as upstream changes. Keys read `GET host/path?query` (HEAD shares GET's entries).

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::parse::decode;
use super::{failure, json_response, read_body, text, Admin, Body, Outcome};
use crate::cluster::state::{Command, PurgeScope};

const USAGE: &str = "usage: DELETE /api/cache?pool=NAME&key=KEY or ?pool=NAME&prefix=PREFIX\n";

/// The pool and scope a purge query names.
pub fn purge_command(query: &str) -> Result<Command, String> {
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect::<Result<_, String>>()?;
    if let Some(other) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "pool" | "key" | "prefix"))
    {
        return Err(format!("unknown parameter {other:?}; {USAGE}"));
    }
    let pool = params.get("pool").ok_or(USAGE)?.clone();
    let scope = match (params.get("key"), params.get("prefix")) {
        (Some(k), None) => PurgeScope::Key(k.clone()),
        (None, Some(p)) => PurgeScope::Prefix(p.clone()),
        _ => return Err(format!("give exactly one of key and prefix; {USAGE}")),
    };
    let cmd = Command::PurgeCache { pool, scope };
    cmd.validate().map_err(|r| r.to_string())?;
    Ok(cmd)
}

impl Admin {
    pub(super) async fn purge(&self, req: Request<Incoming>) -> Response<Body> {
        let refusal = self.refusal(&req);
        let query = req.uri().query().unwrap_or("").to_owned();
        // Read (bounded) before any answer, as for every change.
        let _ = read_body(req).await;
        if let Some(refusal) = refusal {
            return refusal;
        }
        let cmd = match purge_command(&query) {
            Ok(cmd) => cmd,
            Err(why) => return text(StatusCode::BAD_REQUEST, &format!("{why}\n")),
        };
        let Command::PurgeCache { pool, .. } = &cmd else {
            return text(StatusCode::BAD_REQUEST, USAGE);
        };
        if self.proxy.snapshot().pool(pool).is_none() {
            return text(StatusCode::NOT_FOUND, &format!("no pool named {pool:?}\n"));
        }
        match self.propose(cmd).await {
            Outcome::Done(answer) => json_response(StatusCode::OK, json!({"purge": answer})),
            Outcome::TimedOut => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the purge did not commit in time; it may still apply: send it again\n",
            ),
            Outcome::Failed(e) => failure(&e),
            Outcome::Stuck(status, why) => text(status, &format!("{why}\n")),
        }
    }
}
