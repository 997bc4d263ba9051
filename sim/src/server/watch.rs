//! Watches: replay from a resourceVersion, `410` as an `ERROR` event, `timeoutSeconds`,
//! bookmarks and injected cuts.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiServer;
use super::resources::Target;
use super::selectors::{query_param, selected};
use crate::store::{EventType, status};

impl ApiServer {
    pub(super) fn watch(&self, t: &Target, uri: &Uri) -> Response {
        let key = t.api.store_key();
        let from = query_param(uri, "resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0);
        let timeout = query_param(uri, "timeoutSeconds")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        let bookmarks = query_param(uri, "allowWatchBookmarks").is_some_and(|v| v == "true");
        let namespace = t.namespace.clone();
        let uri = uri.clone();
        let api = t.api;
        // No resourceVersion: start with the current objects as ADDED events.
        let (initial, start) = match from {
            Some(rv) => (Vec::new(), rv),
            None => {
                let (items, rv) = self.store.list(&key, namespace.as_deref());
                (items, rv)
            }
        };
        let line = |kind: &str, object: &Value| {
            let mut s = serde_json::to_vec(&json!({"type": kind, "object": object}))
                .expect("events serialize");
            s.push(b'\n');
            Bytes::from(s)
        };
        let mut prefix: Vec<Bytes> = initial
            .iter()
            .filter(|o| selected(&uri, o))
            .map(|o| line("ADDED", o))
            .collect();
        let watch = match self.store.watch(&key, start) {
            Ok(w) => Some(w),
            Err(e) => {
                prefix.push(line("ERROR", &status(&e)));
                None
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let bookmark = move |rv: u64| {
            line(
                "BOOKMARK",
                &json!({"kind": api.kind, "apiVersion": api.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}}),
            )
        };
        let mut cuts = self.faults.cuts();
        cuts.mark_unchanged();
        let state = (
            prefix.into_iter(),
            watch,
            uri,
            namespace,
            bookmarks,
            start,
            cuts,
        );
        let stream = futures::stream::unfold(state, move |mut st| async move {
            if let Some(b) = st.0.next() {
                return Some((Ok::<Bytes, std::io::Error>(b), st));
            }
            let watch = st.1.as_mut()?;
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout_at(
                        deadline.min(tokio::time::Instant::now() + Duration::from_secs(60)),
                        watch.next(),
                    ) => next,
                    _ = st.6.changed() => {
                        // An injected cut: the connection drops mid-stream.
                        st.1 = None;
                        return Some((Err(std::io::Error::other("watch cut by fault injection")), st));
                    }
                };
                match next {
                    // The watch ends at timeoutSeconds, with a last bookmark when asked.
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        if st.4 {
                            let b = bookmark(st.5);
                            st.1 = None;
                            return Some((Ok(b), st));
                        }
                        return None;
                    }
                    Err(_) if st.4 => {
                        let b = bookmark(st.5);
                        return Some((Ok(b), st));
                    }
                    Err(_) => continue,
                    Ok(Err(e)) => {
                        let b = line("ERROR", &status(&e));
                        st.1 = None;
                        return Some((Ok(b), st));
                    }
                    Ok(Ok(e)) => {
                        st.5 = e.resource_version;
                        let in_ns = st.3.as_deref().is_none_or(|ns| {
                            e.object["metadata"]["namespace"].as_str() == Some(ns)
                        });
                        if !in_ns || !selected(&st.2, &e.object) {
                            continue;
                        }
                        let kind = match e.kind {
                            EventType::Added => "ADDED",
                            EventType::Modified => "MODIFIED",
                            EventType::Deleted => "DELETED",
                        };
                        return Some((Ok(line(kind, &e.object)), st));
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .expect("a valid response")
    }
}
