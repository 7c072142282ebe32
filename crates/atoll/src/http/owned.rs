//! The HTTP routes of owned variables: who owns one, changes of owner,
//! the strong operations, a bag share's adoption, and the query that makes
//! a read strong (docs/ownership.md).

use super::ErrorBody;
use super::{body, run, Api, ApiResult, Request};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;

#[utoipa::path(post, path = "/v1/counter/{name}/decr-if", summary = "Subtracts if the floor holds (owned)", params(("name" = String, Path)), request_body = body::DecrIf, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn counter_decr_if(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::DecrIf>,
) -> ApiResult {
    run(
        &api,
        &h,
        Request::CounterDecrIf {
            name,
            by: b.by,
            floor: b.floor,
        },
    )
}

#[utoipa::path(post, path = "/v1/counter/{name}/escrow", summary = "Enables a counter's escrow (owned)", params(("name" = String, Path)), request_body = body::Escrow, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn counter_escrow(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::Escrow>,
) -> ApiResult {
    let floor = Some(b.floor);
    run(&api, &h, Request::CounterEscrow { name, floor })
}

#[utoipa::path(get, path = "/v1/counter/{name}/escrow", summary = "A counter's escrow", params(("name" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn counter_escrow_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    run(&api, &h, Request::CounterEscrow { name, floor: None })
}

#[utoipa::path(post, path = "/v1/register/{name}/cas", summary = "Compare-and-set of a register (owned)", params(("name" = String, Path)), request_body = body::Cas, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn register_cas(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::Cas>,
) -> ApiResult {
    let (expected, value) = (b.expected, b.value);
    run(
        &api,
        &h,
        Request::RegisterCas {
            name,
            expected,
            value,
        },
    )
}

#[utoipa::path(post, path = "/v1/set/{name}/claim", summary = "Adds a member only if absent (owned)", params(("name" = String, Path)), request_body = body::Claim, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn set_claim(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::Claim>,
) -> ApiResult {
    let member = b.member;
    run(&api, &h, Request::SetClaim { name, member })
}

#[utoipa::path(get, path = "/v1/owner/{name}", summary = "Who owns a variable", params(("name" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn owner_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    run(&api, &h, Request::OwnerGet { name })
}

#[utoipa::path(post, path = "/v1/owner/{name}", summary = "Makes this node (or another) the owner", params(("name" = String, Path)), request_body = body::Own, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn owner_own(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Option<Json<body::Own>>,
) -> ApiResult {
    let to = body.and_then(|Json(b)| b.to);
    run(&api, &h, Request::Own { name, to })
}

#[utoipa::path(post, path = "/v1/owner/{name}/release", summary = "Makes a variable ownerless", params(("name" = String, Path)), responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn owner_release(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    run(&api, &h, Request::Release { name })
}

#[utoipa::path(post, path = "/v1/owner/{name}/force", summary = "Forces the owner (admin)", params(("name" = String, Path)), request_body = body::OwnForce, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn owner_force(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::OwnForce>,
) -> ApiResult {
    run(&api, &h, Request::OwnForce { name, to: b.to })
}

#[utoipa::path(post, path = "/v1/map/{name}/{key}/cas", summary = "Compare-and-set of a map entry's register (owned)", params(("name" = String, Path), ("key" = String, Path)), request_body = body::Cas, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn map_cas(
    State(api): State<Api>,
    h: HeaderMap,
    Path((name, key)): Path<(String, String)>,
    Json(b): Json<body::Cas>,
) -> ApiResult {
    let (expected, value) = (b.expected, b.value);
    let req = Request::MapCas {
        name,
        key,
        expected,
        value,
    };
    run(&api, &h, req)
}

#[utoipa::path(post, path = "/v1/bag/{name}/adopt", summary = "Adopts a gone node's elements", params(("name" = String, Path)), request_body = body::Adopt, responses((status = 200, description = "the answer", body = serde_json::Value), (status = "4XX", description = "an error", body = ErrorBody), (status = "5XX", description = "a failure", body = ErrorBody)))]
pub(super) async fn bag_adopt(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::Adopt>,
) -> ApiResult {
    run(&api, &h, Request::BagAdopt { name, from: b.from })
}

/// A read's query: `?strong=true` reads once this node holds every write
/// the variable's owner had made (a round trip to the owner).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadQuery {
    #[serde(default)]
    strong: bool,
}

impl ReadQuery {
    pub(super) fn read(self, read: Request) -> Request {
        Request::strong_if(self.strong, read)
    }
}
