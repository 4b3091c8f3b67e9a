//! Scenario selection: the last three digits of the amount (`amount % 1000`),
//! or a payer / receiver name `SIM-NNN`, which wins. Amounts that are a
//! multiple of 1000 behave normally. The table is documented in
//! `crates/simulators/SCENARIOS.md` and served at `/_sim/scenarios`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// 000: pay-in paid / pay-out succeeds after `settle_delay_ms`.
    Normal,
    /// 001: pay-in expires (EXPIRED) after the delay.
    Expire,
    /// 002: the order fails (FAILED) after the delay; pay-out unfreezes.
    Fail,
    /// 003: stays PROCESSING (no callback); a pay-in until its
    /// `expiryPeriod`, when it expires like any unpaid pay-in.
    Stuck,
    /// 004: the ledger says FAILED but the (validly signed) callback claims
    /// SUCCESS.
    SpoofSuccess,
    /// 005: final SUCCESS, the callback is delivered twice.
    DoubleCallback,
    /// 006: SUCCESS at once; the callback's first attempt is made before the
    /// create reply, its retries (if any) after it.
    CallbackFirst,
    /// 007: the order is created, but the reply is 5009x00 "System error".
    CreatedButSystemError,
    /// 008: 429xx00 TOO_MANY_REQUESTS (nothing created).
    RateLimited,
    /// 009: 4039x04 no active channel (nothing created).
    ChannelDisabled,
    /// 010: pay-out accepted (funds frozen), reply 5029100 "channel
    /// timeout"; SUCCESS and its callback follow. 010–012 are pay-out only:
    /// spec §8.10 names the pay-out, and a pay-in with them is as 000.
    TimeoutAfterAccept,
    /// 011: pay-out accepted; the reply comes after `slow_reply_ms` (client
    /// timeout); SUCCESS follows.
    SlowReply,
    /// 012: pay-out accepted; the connection is reset instead of a reply;
    /// SUCCESS follows.
    ResetAfterAccept,
}

pub const TABLE: [(&str, &str); 13] = [
    (
        "000",
        "normal: pay-in paid / pay-out SUCCESS after settle_delay_ms, signed callback",
    ),
    ("001", "pay-in EXPIRED after the delay, EXPIRED callback"),
    (
        "002",
        "FAILED after the delay (pay-out unfrozen), FAILED callback",
    ),
    (
        "003",
        "stays PROCESSING, no callback; a pay-in then expires at its expiryPeriod (EXPIRED callback)",
    ),
    (
        "004",
        "ledger FAILED, but the signed callback claims SUCCESS (inquiry decides)",
    ),
    ("005", "SUCCESS, callback delivered twice"),
    (
        "006",
        "SUCCESS, the callback's first attempt before the create reply (retries after it)",
    ),
    ("007", "order created, reply 500 5009x00 System error"),
    ("008", "429 TOO_MANY_REQUESTS, nothing created"),
    ("009", "403 4039x04 no active channel, nothing created"),
    (
        "010",
        "pay-out only (a pay-in: as 000): accepted (frozen), reply 502 5029100 channel timeout; SUCCESS + callback later",
    ),
    (
        "011",
        "pay-out only (a pay-in: as 000): accepted, reply after slow_reply_ms (client times out); SUCCESS later",
    ),
    (
        "012",
        "pay-out only (a pay-in: as 000): accepted, connection reset instead of a reply; SUCCESS later",
    ),
];

impl Scenario {
    pub fn from_code(code: u32) -> Scenario {
        match code {
            1 => Scenario::Expire,
            2 => Scenario::Fail,
            3 => Scenario::Stuck,
            4 => Scenario::SpoofSuccess,
            5 => Scenario::DoubleCallback,
            6 => Scenario::CallbackFirst,
            7 => Scenario::CreatedButSystemError,
            8 => Scenario::RateLimited,
            9 => Scenario::ChannelDisabled,
            10 => Scenario::TimeoutAfterAccept,
            11 => Scenario::SlowReply,
            12 => Scenario::ResetAfterAccept,
            _ => Scenario::Normal,
        }
    }

    /// `SIM-NNN` in the name wins; otherwise `amount % 1000`.
    pub fn select(amount: i64, name: &str) -> Scenario {
        if let Some(code) = name
            .trim()
            .strip_prefix("SIM-")
            .and_then(|n| n.parse::<u32>().ok())
        {
            return Scenario::from_code(code);
        }
        Scenario::from_code(amount.rem_euclid(1000) as u32)
    }

    /// The final status the ledger takes, if any.
    pub fn final_status(self, pay_in: bool) -> Option<&'static str> {
        match self {
            Scenario::Stuck => None,
            Scenario::Expire if pay_in => Some("EXPIRED"),
            Scenario::Expire => Some("FAILED"),
            Scenario::Fail | Scenario::SpoofSuccess => Some("FAILED"),
            _ => Some("SUCCESS"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_amount_and_name() {
        assert_eq!(Scenario::select(150_000, ""), Scenario::Normal);
        assert_eq!(Scenario::select(150_001, ""), Scenario::Expire);
        assert_eq!(Scenario::select(150_010, ""), Scenario::TimeoutAfterAccept);
        assert_eq!(Scenario::select(150_000, "SIM-004"), Scenario::SpoofSuccess);
        assert_eq!(Scenario::select(150_999, ""), Scenario::Normal);
        assert_eq!(TABLE.len(), 13);
    }
}
