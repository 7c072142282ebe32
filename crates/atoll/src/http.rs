//! The node's local HTTP/JSON API.
//!
//! Bound to 127.0.0.1 by default; on any other address a bearer token is
//! required (`Authorization: Bearer TOKEN`), and the node refuses to start
//! without one. Values are strings, as on the command line. Every error is
//! `{"error": "..."}` with a 4xx or 5xx status. The OpenAPI document
//! (`GET /v1/openapi.json`) is built from the same handlers as the router
//! (`utoipa`: each handler's `#[utoipa::path]`).
//!
//! Over 600 lines: the data routes' handlers are one line of routing each
//! but for their contract attribute; the owned variables', the namespaces',
//! the mirroring's and the watch's live in submodules. Split the data handlers out by type
//! when it next grows.

use crate::node::Control;
use crate::ops::{body, Request};
use crate::tokens::{Grant, Tokens};
use crate::CoreError;
use crate::{Error, Store};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

mod metrics;
mod mirror;
mod namespaces;
mod owned;
mod watch;
use owned::*;

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) store: Store,
    pub(crate) control: Arc<Control>,
    pub(crate) tokens: Tokens,
}

pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::Core(CoreError::Storage(_) | CoreError::Failed(_))
            | Error::Io { .. }
            | Error::Net(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // Retry later: the node is catching up with its peers.
            Error::Core(CoreError::Fenced { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Core(CoreError::Ownership(ref o)) => ownership_status(o),
            Error::Reserved { .. } => StatusCode::FORBIDDEN,
            Error::NoNamespace { .. } => StatusCode::NOT_FOUND,
            Error::NamespaceNotEmpty { .. } | Error::NamespaceMirrored { .. } => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

/// The status of an owned variable's error: 503 when retrying later may
/// succeed (the owner is away, moving, busy or catching up), 409 when the
/// variable is not in a state for the operation, 504 when the outcome is
/// unknown.
fn ownership_status(e: &atoll_core::OwnershipError) -> StatusCode {
    use atoll_core::OwnershipError as O;
    match e {
        O::OwnerUnreachable { .. } | O::InTransfer { .. } | O::Busy { .. } | O::Fenced { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        O::OutcomeUnknown { .. } => StatusCode::GATEWAY_TIMEOUT,
        O::NotOwned { .. }
        | O::Elsewhere { .. }
        | O::NotAPeer { .. }
        | O::Placement { .. }
        | O::BelowFloor { .. }
        | O::Escrow { .. } => StatusCode::CONFLICT,
        O::Refused { .. } => StatusCode::BAD_REQUEST,
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Every error answer's body (for the API's document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    /// What went wrong, and what to do.
    error: String,
}

/// The grant of the bearer token a request presented (401 if it is
/// missing or unknown while tokens are configured).
fn grant(api: &Api, headers: &HeaderMap) -> Result<Grant, ApiError> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    api.tokens.grant(given).ok_or_else(|| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        )
    })
}

/// An admin route's check: a known token with admin access (or no tokens
/// configured).
fn authorized(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    grant(api, headers)?
        .admin()
        .map_err(|why| ApiError(StatusCode::FORBIDDEN, why))
}

/// The API: its routes, behind the layer that routes a namespace's
/// requests (`/v1/ns/{ns}/...`, see [`namespaces`]) as the default
/// namespace's routes. (A layer of the outer router runs before the inner
/// one routes, so the rewritten request is routed.)
pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .fallback_service(routes(api))
        .layer(axum::middleware::from_fn(namespaces::rewrite))
}

/// The API's routes, and its OpenAPI document, from the same handlers (each
/// handler's `#[utoipa::path]` names its route): the document cannot list a
/// route the router does not serve, nor miss one it does.
fn api_routes() -> (Router<Api>, utoipa::openapi::OpenApi) {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(namespaces::list))
        .routes(routes!(namespaces::create, namespaces::drop))
        .routes(routes!(check))
        .routes(routes!(mirror::status))
        .routes(routes!(mirror::get_one, mirror::enable, mirror::disable))
        .routes(routes!(mirror::add_peer, mirror::remove_peer))
        .routes(routes!(peers, add_peer))
        .routes(routes!(remove_peer))
        .routes(routes!(readmit_peer))
        .routes(routes!(vars))
        .routes(routes!(watch::watch))
        .routes(routes!(conflicts))
        .routes(routes!(counter_get, counter_incr))
        .routes(routes!(counter_decr_if))
        .routes(routes!(counter_escrow_get, counter_escrow))
        .routes(routes!(register_cas))
        .routes(routes!(set_claim))
        .routes(routes!(owner_get, owner_own))
        .routes(routes!(owner_release))
        .routes(routes!(owner_force))
        .routes(routes!(register_get, register_set))
        .routes(routes!(set_get, set_change))
        .routes(routes!(bag_get, bag_insert))
        .routes(routes!(bag_take))
        .routes(routes!(bag_transfer))
        .routes(routes!(bag_adopt))
        .routes(routes!(map_keys))
        .routes(routes!(map_get, map_change, map_remove))
        .routes(routes!(map_cas))
        .routes(routes!(metrics::metrics))
        .split_for_parts()
}

/// The API's OpenAPI 3 document, as `GET /v1/openapi.json` serves it.
pub(crate) fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api_routes();
    doc.info.title = "atoll HTTP API".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.contact = None;
    doc.info.license = None;
    doc.info.description = Some(
        "Every data route (counter, register, set, bag, map, owner, vars, conflicts, watch) also lives under /v1/ns/{ns}/..., in namespace ns; the routes without the prefix are the default namespace's. Errors are {\"error\": \"...\"}. A bearer token (Authorization: Bearer ...) is needed when the node has tokens.".into(),
    );
    doc
}

fn routes(api: Api) -> Router {
    let (router, _) = api_routes();
    let doc = openapi();
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc) }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(api)
}

/// The largest request body accepted (413 past it).
pub(crate) const MAX_BODY_BYTES: usize = 16 << 20;

/// The longest request target accepted (414 past it). Names are at most a
/// few hundred bytes; the HTTP server itself answers a bare 414 only past
/// 64 KiB.
pub(crate) const MAX_URI_BYTES: usize = 8 << 10;

/// Makes every error answer `{"error": "..."}` with a message that says what
/// to fix: the routes' own errors already are; this covers what the
/// framework answers before a route runs (no route, wrong method, a body
/// that is not JSON, too large or of the wrong shape).
async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // A namespace's request was routed as another path: errors name the
    // one the client sent.
    let path = match req.extensions().get::<namespaces::SentPath>() {
        Some(sent) => sent.0.clone(),
        None => req.uri().path().to_string(),
    };
    let method = req.method().clone();
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > MAX_URI_BYTES {
        return ApiError(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target_len} bytes, over the limit of {MAX_URI_BYTES}; variable names are at most a few hundred"),
        )
        .into_response();
    }
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let allow = res
        .headers()
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = axum::body::to_bytes(res.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    };
    let message = match status {
        StatusCode::NOT_FOUND => format!(
            "no such route: {method} {path} (the API's routes are listed in docs/operations.md)"
        ),
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "{method} is not allowed on {path}; use {}",
            allow.as_deref().unwrap_or("another method")
        ),
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is over the limit of {MAX_BODY_BYTES} bytes; send fewer values per request"
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "send the body as JSON, with the header Content-Type: application/json".to_string()
        }
        StatusCode::UNPROCESSABLE_ENTITY => format!(
            "the JSON body does not have the fields this route takes{detail} (see docs/operations.md)"
        ),
        StatusCode::BAD_REQUEST if !body.is_empty() => body,
        _ => format!(
            "{}{detail}",
            status.canonical_reason().unwrap_or("error")
        ),
    };
    let mut out = ApiError(status, message).into_response();
    if let Some(allow) = allow.and_then(|a| a.parse().ok()) {
        out.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    out
}

#[utoipa::path(get, path = "/v1/status", summary = "The node's summary (admin)", responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn status(State(api): State<Api>, h: HeaderMap) -> ApiResult {
    authorized(&api, &h)?;
    let s = api.control.status(&api.store);
    let connected = s.peers.iter().filter(|(p, _)| p.connected).count();
    let (owned, handing_off, requests) = api.store.ownership_summary()?;
    Ok(Json(json!({
        "fenced": api.store.fenced(),
        "site": api.store.site_of(s.id),
        "owned_here": owned,
        "handing_off": handing_off,
        "requests_in_flight": requests,
        "id": s.id.to_string(),
        "listen": s.listen.to_string(),
        "last_seq": s.last_seq,
        "variables": api.store.variables()?.len(),
        "variables_loaded": s.variables_loaded,
        "resident_bytes": s.resident_bytes,
        "peers": s.peers.len(),
        "connected": connected,
        "refusals": s.refusals.iter().map(|(a, r)| json!({"addr": a.to_string(), "reason": r})).collect::<Vec<_>>(),
        "unanswered": unanswered(&s),
    })))
}

/// The dialed addresses no connected peer answers from, as JSON rows.
fn unanswered(s: &crate::NodeStatus) -> Vec<Value> {
    let now = crate::store::now_ms();
    s.unanswered
        .iter()
        .map(|(addr, why, since)| {
            json!({
                "addr": addr.to_string(),
                "state": if why.is_some() { "refused" } else { "dialing" },
                "reason": why,
                "since_ms_ago": now.saturating_sub(*since),
            })
        })
        .collect()
}

/// `POST /v1/check`: a consistency check of every reachable peer, with its
/// report (docs/consistency.md).
#[utoipa::path(post, path = "/v1/check", summary = "A consistency check of the peers (admin)", responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn check(State(api): State<Api>, h: HeaderMap) -> ApiResult {
    authorized(&api, &h)?;
    let report = api.store.check_consistency()?;
    let status = api.control.status(&api.store);
    Ok(Json(api.store.check_json(&report, &status)))
}

#[utoipa::path(get, path = "/v1/peers", summary = "The peers (admin)", responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn peers(State(api): State<Api>, h: HeaderMap) -> ApiResult {
    authorized(&api, &h)?;
    let s = api.control.status(&api.store);
    let rows: Vec<Value> = s
        .peers
        .iter()
        .map(|(p, addr)| {
            json!({
                "id": p.id.to_string(),
                "site": api.store.site_of(p.id),
                "addr": addr.map(|a| a.to_string()),
                "connected": p.connected,
                "connected_since_ms_ago": p.connected_since.map(|t| crate::store::mono_ms().saturating_sub(t)),
                "last_contact_ms_ago": p.last_contact.map(|t| crate::store::mono_ms().saturating_sub(t)),
                "acked": p.acked,
                "lag": p.lag,
                "lag_ms": p.lag_ms,
                "holds": p.holds,
                "stuck": p.stuck.as_ref().map(|st| json!({
                    "since_ms_ago": crate::store::mono_ms().saturating_sub(st.since),
                    "reason": st.reason,
                })),
                "bytes_in": p.stats.bytes_received,
                "bytes_out": p.stats.bytes_sent,
                "messages_in": p.stats.messages_received,
                "messages_out": p.stats.messages_sent,
                "retransmits": p.stats.retransmits,
                "state_transfers": p.stats.state_transfers,
                "changed_transfers": p.stats.changed_transfers,
                "state_parts_out": p.stats.state_parts_sent,
                "state_parts_in": p.stats.state_parts_received,
                "last_disconnect": s.disconnects.get(&p.id),
                "limits": p.limits.map(|l| json!({
                    "max_message_len": l.max_message_len,
                    "max_delta_len": l.max_delta_len,
                    "max_state_len": l.max_state_len,
                })),
                "transfer": p.transfer.as_ref().map(|t| json!({
                    "as_of": t.as_of,
                    "why": t.why.to_string(),
                    "done_through": t.done_through,
                    "in_parts": t.in_parts.as_ref().map(|(name, sent, acked)| json!({
                        "name": name,
                        "sent": sent,
                        "acked": acked,
                    })),
                    "blocked": t.blocked.as_ref().map(|b| json!({
                        "name": b.name,
                        "bytes": b.bytes,
                        "limit": b.limit,
                        "why": b.to_string(),
                    })),
                })),
            })
        })
        .collect();
    let removed: Vec<String> = crate::node::removed_peers(&api.store)?
        .iter()
        .map(|id| id.to_string())
        .collect();
    Ok(Json(
        json!({ "peers": rows, "unanswered": unanswered(&s), "removed": removed }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct AddPeer {
    addr: String,
}

#[utoipa::path(post, path = "/v1/peers", summary = "Adds a peer by address (admin)", request_body = AddPeer, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn add_peer(State(api): State<Api>, h: HeaderMap, Json(body): Json<AddPeer>) -> ApiResult {
    authorized(&api, &h)?;
    // An address, or a host name (resolved now, once; IPv4 first).
    let bad = |why: String| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "{:?} is not an address like 127.0.0.1:7700 or localhost:7700: {why}",
                body.addr
            ),
        )
    };
    let addr = crate::node::resolve_peer_async(&body.addr)
        .await
        .map_err(bad)?;
    let id = api.control.add_peer_and_wait(&api.store, addr).await?;
    Ok(Json(
        json!({ "id": id.to_string(), "addr": addr.to_string() }),
    ))
}

#[utoipa::path(delete, path = "/v1/peers/{id}", summary = "Removes a peer, by id or address (admin)", params(("id" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn remove_peer(State(api): State<Api>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authorized(&api, &h)?;
    // A node id (16 hex digits), or an address (host:port) for a peer that
    // may never have answered.
    if let Ok(addr) = id.parse::<std::net::SocketAddr>() {
        if !api.control.remove_peer_at(&api.store, addr)? {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no peer at {addr}"),
            ));
        }
        return Ok(Json(json!({ "removed": addr.to_string() })));
    }
    let id = u64::from_str_radix(&id, 16).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is neither a node id (16 hex digits) nor an address (host:port)"),
        )
    })?;
    let removed = api.control.remove_peer(&api.store, crate::ReplicaId(id))?;
    if !removed {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no peer {id:016x}"),
        ));
    }
    Ok(Json(json!({ "removed": format!("{id:016x}") })))
}

#[utoipa::path(post, path = "/v1/peers/{id}/readmit", summary = "Readmits a removed peer (admin)", params(("id" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn readmit_peer(State(api): State<Api>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authorized(&api, &h)?;
    let id = u64::from_str_radix(&id, 16).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a node id (16 hex digits, as `peer list` shows them)"),
        )
    })?;
    if !api.control.readmit_peer(&api.store, crate::ReplicaId(id))? {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("node {id:016x} is not removed"),
        ));
    }
    Ok(Json(json!({ "readmitted": format!("{id:016x}") })))
}

/// Runs one data operation (the same code as the CLI's; see [`crate::ops`]).
fn run(api: &Api, h: &HeaderMap, op: Request) -> ApiResult {
    let grant = grant(api, h)?;
    let ns = namespaces::requested(h)?;
    grant
        .allows(&ns, op.access())
        .map_err(|why| ApiError(StatusCode::FORBIDDEN, why))?;
    let ns = api.store.namespace(&ns)?;
    Ok(Json(op.apply_in(&ns)?))
}

#[utoipa::path(get, path = "/v1/vars", summary = "The variables and their types", responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn vars(State(api): State<Api>, h: HeaderMap) -> ApiResult {
    run(&api, &h, Request::Vars)
}

#[utoipa::path(get, path = "/v1/conflicts", summary = "Type conflicts", responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn conflicts(State(api): State<Api>, h: HeaderMap) -> ApiResult {
    run(&api, &h, Request::Conflicts)
}

#[utoipa::path(get, path = "/v1/counter/{name}", summary = "A counter's value", params(("name" = String, Path), ReadQuery), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn counter_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult {
    run(&api, &h, q.read(Request::CounterGet { name }))
}

#[utoipa::path(post, path = "/v1/counter/{name}", summary = "Adds to a counter", params(("name" = String, Path)), request_body = body::Incr, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn counter_incr(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::Incr>,
) -> ApiResult {
    run(&api, &h, Request::CounterAdd { name, by: b.by })
}

#[utoipa::path(get, path = "/v1/register/{name}", summary = "A register's value", params(("name" = String, Path), ReadQuery), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn register_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult {
    run(&api, &h, q.read(Request::RegisterGet { name }))
}

#[utoipa::path(put, path = "/v1/register/{name}", summary = "Writes a register", params(("name" = String, Path)), request_body = body::SetValue, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn register_set(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::SetValue>,
) -> ApiResult {
    run(
        &api,
        &h,
        Request::RegisterSet {
            name,
            value: b.value,
        },
    )
}

#[utoipa::path(get, path = "/v1/set/{name}", summary = "A set's members", params(("name" = String, Path), ReadQuery), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn set_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> ApiResult {
    run(&api, &h, q.read(Request::SetList { name }))
}

#[utoipa::path(post, path = "/v1/set/{name}", summary = "Adds and removes members", params(("name" = String, Path)), request_body = body::SetChange, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn set_change(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::SetChange>,
) -> ApiResult {
    let (add, remove) = (b.add, b.remove);
    run(&api, &h, Request::SetChange { name, add, remove })
}

#[utoipa::path(get, path = "/v1/bag/{name}", summary = "A bag's elements", params(("name" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn bag_get(State(api): State<Api>, h: HeaderMap, Path(name): Path<String>) -> ApiResult {
    run(&api, &h, Request::BagList { name })
}

#[utoipa::path(post, path = "/v1/bag/{name}", summary = "Inserts elements", params(("name" = String, Path)), request_body = body::BagInsert, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn bag_insert(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::BagInsert>,
) -> ApiResult {
    let values = b.insert;
    run(&api, &h, Request::BagInsert { name, values })
}

#[utoipa::path(post, path = "/v1/bag/{name}/take", summary = "Takes an element this node owns", params(("name" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn bag_take(State(api): State<Api>, h: HeaderMap, Path(name): Path<String>) -> ApiResult {
    run(&api, &h, Request::BagTake { name })
}

#[utoipa::path(post, path = "/v1/bag/{name}/transfer", summary = "Hands an element to another node", params(("name" = String, Path)), request_body = body::BagTransfer, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn bag_transfer(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::BagTransfer>,
) -> ApiResult {
    let (id, to) = (b.id, b.to);
    run(&api, &h, Request::BagTransfer { name, id, to })
}

#[utoipa::path(get, path = "/v1/map/{name}", summary = "A map's keys", params(("name" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn map_keys(State(api): State<Api>, h: HeaderMap, Path(name): Path<String>) -> ApiResult {
    run(&api, &h, Request::MapKeys { name })
}

#[utoipa::path(get, path = "/v1/map/{name}/{key}", summary = "A map entry", params(("name" = String, Path), ("key" = String, Path), ReadQuery), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn map_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path((name, key)): Path<(String, String)>,
    Query(q): Query<ReadQuery>,
) -> ApiResult {
    run(&api, &h, q.read(Request::MapGet { name, key }))
}

#[utoipa::path(post, path = "/v1/map/{name}/{key}", summary = "Changes a map entry", params(("name" = String, Path), ("key" = String, Path)), request_body = body::MapChange, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn map_change(
    State(api): State<Api>,
    h: HeaderMap,
    Path((name, key)): Path<(String, String)>,
    Json(b): Json<body::MapChange>,
) -> ApiResult {
    let (incr, set, add) = (b.incr, b.set, b.add);
    run(
        &api,
        &h,
        Request::MapChange {
            name,
            key,
            incr,
            set,
            add,
        },
    )
}

#[utoipa::path(delete, path = "/v1/map/{name}/{key}", summary = "Removes a map entry", params(("name" = String, Path), ("key" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
async fn map_remove(
    State(api): State<Api>,
    h: HeaderMap,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult {
    run(&api, &h, Request::MapRemove { name, key })
}
