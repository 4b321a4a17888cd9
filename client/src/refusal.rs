//! What a node's refusal of a request or a frame means for the calls in it: whether one
//! caller's share of a merged request may fare better alone, and whether sending the
//! frame again could ever help. Every error code is named in both tables, so that a new
//! code is decided here rather than falling into a default.

use tally_codecs::wire::ErrorCode;

/// Whether a node that refused a request (with its id) as a whole may have done so for
/// some of its events only, so that another caller's share of a merged request, sent
/// alone, may be accepted. Every code is named, so that a new one is decided here.
pub(crate) fn refusal_may_spare_a_part(code: ErrorCode) -> bool {
    match code {
        // A key limited to some ledgers is checked over every event of a request at
        // once: one caller's event on another ledger refuses every caller's.
        ErrorCode::Forbidden => true,
        // About the frame or the connection (the node sends these with request id 0, or
        // while authenticating), the node's state (`busy` and `not_primary` are retried),
        // a request that is never merged (a filter, a promotion), or a reply the node
        // could not encode after applying the request (`malformed`): a share alone fares
        // no better.
        ErrorCode::BadChecksum
        | ErrorCode::TooLarge
        | ErrorCode::UnknownOperation
        | ErrorCode::UnsupportedVersion
        | ErrorCode::Misaligned
        | ErrorCode::Malformed
        | ErrorCode::Busy
        | ErrorCode::NotPrimary
        | ErrorCode::InvalidFilter
        | ErrorCode::PromotionRefused
        | ErrorCode::Unauthenticated => false,
    }
}

/// Whether a node that refused a frame with `code` would refuse it again: the frame is at
/// fault (its version, size, layout or sender), not the node's state. Every code is named,
/// so that a new one is decided here.
pub(crate) fn refusal_is_permanent(code: ErrorCode) -> bool {
    match code {
        ErrorCode::UnsupportedVersion
        | ErrorCode::UnknownOperation
        | ErrorCode::TooLarge
        | ErrorCode::Misaligned
        | ErrorCode::Malformed
        | ErrorCode::Unauthenticated
        | ErrorCode::Forbidden
        | ErrorCode::InvalidFilter
        | ErrorCode::PromotionRefused => true,
        // Bytes damaged on the way may arrive whole when sent again; the others are about
        // the node's state at the moment.
        ErrorCode::BadChecksum | ErrorCode::Busy | ErrorCode::NotPrimary => false,
    }
}
