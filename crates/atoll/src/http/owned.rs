//! The HTTP routes of owned variables: who owns one, changes of owner,
//! the strong operations, a bag share's adoption, and the query that makes
//! a read strong (docs/ownership.md).

use super::{body, run, Api, ApiResult, Request};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;

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

pub(super) async fn counter_escrow(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::Escrow>,
) -> ApiResult {
    let floor = Some(b.floor);
    run(&api, &h, Request::CounterEscrow { name, floor })
}

pub(super) async fn counter_escrow_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    run(&api, &h, Request::CounterEscrow { name, floor: None })
}

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

pub(super) async fn set_claim(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::Claim>,
) -> ApiResult {
    let member = b.member;
    run(&api, &h, Request::SetClaim { name, member })
}

pub(super) async fn owner_get(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    run(&api, &h, Request::OwnerGet { name })
}

pub(super) async fn owner_own(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Option<Json<body::Own>>,
) -> ApiResult {
    let to = body.and_then(|Json(b)| b.to);
    run(&api, &h, Request::Own { name, to })
}

pub(super) async fn owner_release(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    run(&api, &h, Request::Release { name })
}

pub(super) async fn owner_force(
    State(api): State<Api>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(b): Json<body::OwnForce>,
) -> ApiResult {
    run(&api, &h, Request::OwnForce { name, to: b.to })
}

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
#[derive(Deserialize)]
pub(super) struct ReadQuery {
    #[serde(default)]
    strong: bool,
}

impl ReadQuery {
    pub(super) fn read(self, read: Request) -> Request {
        Request::strong_if(self.strong, read)
    }
}
