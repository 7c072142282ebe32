//! Mirroring over HTTP (admin routes): `GET /v1/mirror[/{ns}]` reports it,
//! `PUT` and `DELETE /v1/mirror/{ns}` enable and disable a namespace's,
//! `PUT` and `DELETE /v1/mirror/{ns}/peers/{node}` add and remove a link
//! between this node and a peer.

use super::ErrorBody;
use super::{authorized, Api, ApiResult};
use crate::ops::parse_node;
use crate::NamespaceMirror;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

#[utoipa::path(get, path = "/v1/mirror", summary = "Every namespace's mirroring, and its traffic with each peer (admin)", responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn status(State(api): State<Api>, h: HeaderMap) -> ApiResult {
    authorized(&api, &h)?;
    let all = crate::store::blocking(|| api.store.mirror_status(None))?;
    Ok(Json(
        json!({ "namespaces": all.iter().map(NamespaceMirror::to_json).collect::<Vec<_>>() }),
    ))
}

#[utoipa::path(get, path = "/v1/mirror/{ns}", summary = "A namespace's mirroring (admin)", params(("ns" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn get_one(
    State(api): State<Api>,
    h: HeaderMap,
    Path(ns): Path<String>,
) -> ApiResult {
    authorized(&api, &h)?;
    let one = crate::store::blocking(|| api.store.mirror_status(Some(&ns)))?;
    let first = one
        .first()
        .map(NamespaceMirror::to_json)
        .unwrap_or(Value::Null);
    Ok(Json(first))
}

#[utoipa::path(put, path = "/v1/mirror/{ns}", summary = "Mirrors a namespace (admin)", params(("ns" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn enable(
    State(api): State<Api>,
    h: HeaderMap,
    Path(ns): Path<String>,
) -> ApiResult {
    authorized(&api, &h)?;
    crate::store::blocking(|| api.store.set_mirrored(&ns, true))?;
    Ok(Json(json!({ "namespace": ns, "mirrored": true })))
}

#[utoipa::path(delete, path = "/v1/mirror/{ns}", summary = "Keeps a namespace local (admin)", params(("ns" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn disable(
    State(api): State<Api>,
    h: HeaderMap,
    Path(ns): Path<String>,
) -> ApiResult {
    authorized(&api, &h)?;
    crate::store::blocking(|| api.store.set_mirrored(&ns, false))?;
    Ok(Json(json!({ "namespace": ns, "mirrored": false })))
}

#[utoipa::path(put, path = "/v1/mirror/{ns}/peers/{node}", summary = "Links this node and a peer for a namespace (admin)", params(("ns" = String, Path), ("node" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn add_peer(
    State(api): State<Api>,
    h: HeaderMap,
    Path((ns, node)): Path<(String, String)>,
) -> ApiResult {
    link(api, h, ns, node, true).await
}

#[utoipa::path(delete, path = "/v1/mirror/{ns}/peers/{node}", summary = "Unlinks this node and a peer for a namespace (admin)", params(("ns" = String, Path), ("node" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn remove_peer(
    State(api): State<Api>,
    h: HeaderMap,
    Path((ns, node)): Path<(String, String)>,
) -> ApiResult {
    link(api, h, ns, node, false).await
}

async fn link(api: Api, h: HeaderMap, ns: String, node: String, linked: bool) -> ApiResult {
    authorized(&api, &h)?;
    let peer = parse_node(&node)?;
    crate::store::blocking(|| api.store.set_mirror_peer(&ns, peer, linked))?;
    Ok(Json(json!({
        "namespace": ns,
        "peer": peer.to_string(),
        "linked": linked,
    })))
}
