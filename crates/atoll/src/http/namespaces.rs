//! Namespaces over HTTP: every data route also lives under
//! `/v1/ns/{ns}/...` (`/v1/ns/billing/counter/invoices`), and the routes
//! without the prefix are the default namespace's. `GET /v1/ns` lists the
//! namespaces, `PUT /v1/ns/{ns}` creates one, `DELETE /v1/ns/{ns}` drops
//! one (`?force=true` when it holds variables).
//!
//! A namespaced request is routed as its route without the prefix, with
//! the namespace in a header that only this layer sets ([`NS_HEADER`]; a
//! client's own is dropped), which [`super::run`] reads.

use super::ErrorBody;
use super::{authorized, Api, ApiError, ApiResult};
use crate::DEFAULT_NS;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

/// The header that carries a rewritten request's namespace.
pub(super) const NS_HEADER: &str = "x-atoll-namespace";

/// The data routes a namespace has: the first segment after `/v1/`.
const DATA_ROUTES: [&str; 9] = [
    "watch",
    "counter",
    "register",
    "set",
    "bag",
    "map",
    "owner",
    "vars",
    "conflicts",
];

/// The path a rewritten request was sent to (for error messages).
#[derive(Clone)]
pub(super) struct SentPath(pub(super) String);

/// Routes `/v1/ns/{ns}/{route}` as `/v1/{route}` in namespace `ns`.
pub(super) async fn rewrite(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    req.headers_mut().remove(NS_HEADER);
    let path = req.uri().path();
    let Some((ns, tail)) = path.strip_prefix("/v1/ns/").and_then(|r| r.split_once('/')) else {
        return next.run(req).await;
    };
    let route = tail.split('/').next().unwrap_or("");
    if !DATA_ROUTES.contains(&route) {
        return ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no such route in a namespace: {path} (a namespace has the data routes {})",
                DATA_ROUTES.join(", ")
            ),
        )
        .into_response();
    }
    let Ok(value) = HeaderValue::from_str(ns) else {
        return ApiError::from(crate::Error::NoNamespace { ns: ns.to_string() }).into_response();
    };
    let target = match req.uri().query() {
        Some(q) => format!("/v1/{tail}?{q}"),
        None => format!("/v1/{tail}"),
    };
    match target.parse::<Uri>() {
        Ok(uri) => {
            let sent = SentPath(req.uri().path().to_string());
            req.extensions_mut().insert(sent);
            *req.uri_mut() = uri;
            req.headers_mut().insert(NS_HEADER, value);
            next.run(req).await
        }
        Err(e) => {
            ApiError(StatusCode::BAD_REQUEST, format!("bad request target: {e}")).into_response()
        }
    }
}

/// The namespace a data request names: the rewritten request's, or the
/// default.
pub(super) fn requested(h: &HeaderMap) -> Result<String, ApiError> {
    match h.get(NS_HEADER) {
        None => Ok(DEFAULT_NS.to_string()),
        Some(v) => v.to_str().map(String::from).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "a namespace's name is ASCII".into(),
            )
        }),
    }
}

/// The namespaces the request's token reaches.
#[utoipa::path(get, path = "/v1/ns", summary = "The namespaces the token reaches", responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn list(State(api): State<Api>, h: HeaderMap) -> ApiResult {
    let grant = super::grant(&api, &h)?;
    let names: Vec<String> = api
        .store
        .namespaces()?
        .into_iter()
        .filter(|ns| grant.sees(ns))
        .collect();
    Ok(Json(json!({ "namespaces": names })))
}

#[utoipa::path(put, path = "/v1/ns/{ns}", summary = "Creates a namespace (admin)", params(("ns" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn create(
    State(api): State<Api>,
    h: HeaderMap,
    Path(ns): Path<String>,
) -> ApiResult {
    authorized(&api, &h)?;
    crate::store::blocking(|| api.store.create_namespace(&ns))?;
    Ok(Json(json!({ "namespace": ns, "created": true })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DropQuery {
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/v1/ns/{ns}", summary = "Drops a namespace (admin)", params(("ns" = String, Path), DropQuery), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn drop(
    State(api): State<Api>,
    h: HeaderMap,
    Path(ns): Path<String>,
    Query(q): Query<DropQuery>,
) -> ApiResult {
    authorized(&api, &h)?;
    let existed = crate::store::blocking(|| api.store.drop_namespace(&ns, q.force))?;
    Ok(Json(json!({ "namespace": ns, "dropped": existed })))
}
