//! The JSON bodies of the data routes, as the HTTP API reads them.

use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Incr {
    pub(crate) by: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct SetValue {
    pub(crate) value: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct SetChange {
    #[serde(default)]
    pub(crate) add: Vec<String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct BagInsert {
    pub(crate) insert: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct BagTransfer {
    pub(crate) id: String,
    pub(crate) to: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Own {
    #[serde(default)]
    pub(crate) to: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct OwnForce {
    pub(crate) to: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Adopt {
    pub(crate) from: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Cas {
    pub(crate) expected: Option<String>,
    pub(crate) value: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct DecrIf {
    pub(crate) by: i64,
    pub(crate) floor: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Escrow {
    pub(crate) floor: i64,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Claim {
    pub(crate) member: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct MapChange {
    pub(crate) incr: Option<i64>,
    pub(crate) set: Option<String>,
    pub(crate) add: Option<String>,
}
