//! The QRIS string a QRIS pay-in returns in `channel.qrString` (spec §5:
//! "EMV string"): an EMVCo merchant-presented QR payload, a run of data
//! objects each written as a two-digit tag, a two-digit length (of the
//! value, in characters) and the value, ending with tag 63, the
//! CRC-16/CCITT-FALSE of everything before that CRC's own value. A
//! customer's app refuses a QR whose lengths or CRC are wrong, so the
//! simulator must not hand one out.

/// The most characters EMVCo allows in a merchant name (tag 59).
const MERCHANT_NAME_MAX_CHARS: usize = 25;

// ASSUMED: the spec gives no QR content. The values below are plausible
// for an Indonesian dynamic QRIS; the simulated order's tradeNo stands in
// for the merchant account, so every order's QR is its own.
const ACQUIRER_ID: &str = "ID.CO.SMILEPAYZ.WWW";
const MERCHANT_CATEGORY_CODE: &str = "5999";
const MERCHANT_CITY: &str = "JAKARTA";
/// ISO 4217 numeric code of the rupiah.
const CURRENCY_IDR: &str = "360";

/// The QRIS payload of a pay-in of `amount` (whole rupiah) with `trade_no`,
/// made out to `merchant_name`.
pub(crate) fn qris_string(trade_no: &str, amount: i64, merchant_name: &str) -> String {
    let merchant_account = [data_object("00", ACQUIRER_ID), data_object("01", trade_no)].concat();
    let mut payload = [
        // Payload format indicator, then 12: a dynamic QR, for one payment
        // of a set amount.
        data_object("00", "01"),
        data_object("01", "12"),
        data_object("26", &merchant_account),
        data_object("52", MERCHANT_CATEGORY_CODE),
        data_object("53", CURRENCY_IDR),
        data_object("54", &amount.to_string()),
        data_object("58", "ID"),
        data_object("59", &printable_name(merchant_name)),
        data_object("60", MERCHANT_CITY),
    ]
    .concat();
    // The CRC covers its own tag and length too, not its value.
    payload.push_str("6304");
    let crc = crc16_ccitt_false(payload.as_bytes());
    payload.push_str(&format!("{crc:04X}"));
    payload
}

/// One data object: tag, length of `value` in two digits, `value`. Every
/// value here is ASCII (so bytes are characters) and under 100 characters:
/// the tradeNo the simulator makes, an amount of at most 12 digits
/// (the simulator's cap), constants and a name cut to 25.
fn data_object(tag: &str, value: &str) -> String {
    debug_assert!(value.is_ascii() && value.len() < 100, "{tag}: {value}");
    format!("{tag}{:02}{value}", value.len())
}

/// The merchant name as tag 59 can hold it: printable ASCII only (the
/// length counts characters, and EMVCo's character set for it is ASCII),
/// at most 25 characters; a name with none left is written `MERCHANT`.
fn printable_name(name: &str) -> String {
    let printable: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MERCHANT_NAME_MAX_CHARS)
        .collect();
    let printable = printable.trim();
    if printable.is_empty() {
        "MERCHANT".into()
    } else {
        printable.into()
    }
}

/// CRC-16/CCITT-FALSE, the checksum of EMVCo QR tag 63: polynomial 0x1021,
/// initial value 0xFFFF, bits not reflected, no final XOR.
pub fn crc16_ccitt_false(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0xFFFF, |crc, byte| {
        (0..8).fold(crc ^ (u16::from(*byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data objects of `payload` as (tag, value), or why it is not a
    /// well-formed run of them.
    fn data_objects(mut payload: &str) -> Result<Vec<(&str, &str)>, String> {
        let mut objects = Vec::new();
        while !payload.is_empty() {
            let head = payload.get(..4).ok_or(format!("short head: {payload}"))?;
            let length: usize = head[2..].parse().map_err(|_| format!("length: {head}"))?;
            let value = payload
                .get(4..4 + length)
                .ok_or(format!("short value: {payload}"))?;
            objects.push((&head[..2], value));
            payload = &payload[4 + length..];
        }
        Ok(objects)
    }

    #[test]
    fn the_crc_is_ccitt_false() {
        // The catalogue check value of CRC-16/CCITT-FALSE.
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
        assert_eq!(crc16_ccitt_false(b""), 0xFFFF);
    }

    #[test]
    fn every_length_matches_its_value_and_the_crc_covers_all_before_it() {
        for (amount, name) in [
            (10_000, "loket"),
            (
                999_999_999_999,
                "A merchant name far longer than twenty-five",
            ),
            (1, "Toko Ümit ☕"),
            (150_000, "☕"),
        ] {
            let qr = qris_string("10124123012000000000001", amount, name);
            let objects = data_objects(&qr).unwrap();
            let tags: Vec<&str> = objects.iter().map(|(tag, _)| *tag).collect();
            assert_eq!(
                tags,
                ["00", "01", "26", "52", "53", "54", "58", "59", "60", "63"],
                "{qr}"
            );
            let value = |tag| objects.iter().find(|(t, _)| *t == tag).unwrap().1;
            assert_eq!(value("54"), amount.to_string());
            assert!(value("59").len() <= MERCHANT_NAME_MAX_CHARS, "{qr}");
            assert!(!value("59").is_empty(), "{qr}");
            let account = data_objects(value("26")).unwrap();
            assert_eq!(account[1], ("01", "10124123012000000000001"));
            let (covered, crc) = qr.split_at(qr.len() - 4);
            assert_eq!(
                crc,
                format!("{:04X}", crc16_ccitt_false(covered.as_bytes()))
            );
        }
    }
}
