//! What a token needs to run each request (see `crate::tokens`).

use super::Request;

impl Request {
    /// What a token needs to run it: reads need read access, changes
    /// write access, forcing an owner (an operator's override) admin.
    pub fn access(&self) -> crate::Access {
        use crate::Access::{Admin, Read, Write};
        match self {
            Request::CounterGet { .. }
            | Request::RegisterGet { .. }
            | Request::SetList { .. }
            | Request::BagList { .. }
            | Request::MapGet { .. }
            | Request::MapKeys { .. }
            | Request::OwnerGet { .. }
            | Request::Strong(_)
            | Request::Vars
            | Request::Conflicts => Read,
            Request::CounterEscrow { floor: None, .. } => Read,
            Request::OwnForce { .. } => Admin,
            Request::CounterAdd { .. }
            | Request::RegisterSet { .. }
            | Request::SetChange { .. }
            | Request::BagInsert { .. }
            | Request::BagTake { .. }
            | Request::BagTransfer { .. }
            | Request::MapChange { .. }
            | Request::MapRemove { .. }
            | Request::Own { .. }
            | Request::Release { .. }
            | Request::RegisterCas { .. }
            | Request::CounterDecrIf { .. }
            | Request::CounterEscrow { .. }
            | Request::SetClaim { .. }
            | Request::MapCas { .. }
            | Request::BagAdopt { .. } => Write,
        }
    }
}
