//! The product catalogue file operators edit (`deploy/products.toml`), parsed
//! and validated before anything touches the database. Every problem in the
//! file is reported at once, each naming the entry (position and code) and
//! the field, so one edit-and-load round fixes them all.
//!
//! ```toml
//! [[product]]
//! code = "PULSA10"                # our product code
//! provider = "okebayar"
//! provider_product_code = "S10"
//! kind = "prepaid"                # prepaid | pln_prepaid | postpaid | qr_cpm | pay_in | pay_out
//! price = 10500                   # IDR, whole rupiah; prepaid and pln_prepaid only
//! description = "Pulsa 10.000"
//! active = true                   # optional, default true
//! ```

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use loket_protocol::{ProductKind, Provider};

fn kind_names() -> String {
    ProductKind::ALL.map(ProductKind::as_str).join(", ")
}

/// One validated catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub code: String,
    pub provider: Provider,
    pub provider_product_code: String,
    pub kind: ProductKind,
    /// Whole rupiah, at least 1; `None` for products whose requests carry
    /// their amount (postpaid: the bill decides; QR, pay-in, pay-out).
    pub price: Option<i64>,
    pub description: String,
    pub active: bool,
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// 1-based position of the `[[product]]` entry; 0 for the file itself.
    pub index: usize,
    /// The entry's code when it has a readable one.
    pub code: Option<String>,
    pub field: String,
    pub problem: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index == 0 {
            return write!(f, "{}: {}", self.field, self.problem);
        }
        match &self.code {
            Some(code) => write!(
                f,
                "product #{} ({code}): {}: {}",
                self.index, self.field, self.problem
            ),
            None => write!(
                f,
                "product #{}: {}: {}",
                self.index, self.field, self.problem
            ),
        }
    }
}

/// Every problem found in a catalogue file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CatalogueErrors(pub Vec<EntryError>);

impl fmt::Display for CatalogueErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "product catalogue has {} problem(s):", self.0.len())?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

const FIELDS: [&str; 7] = [
    "code",
    "provider",
    "provider_product_code",
    "kind",
    "price",
    "description",
    "active",
];

/// Parses and validates a whole catalogue file.
pub fn parse_catalogue(text: &str) -> Result<Vec<Product>, CatalogueErrors> {
    let file_error = |field: &str, problem: String| {
        CatalogueErrors(vec![EntryError {
            index: 0,
            code: None,
            field: field.to_string(),
            problem,
        }])
    };
    let root: toml::Table = text.parse().map_err(|error: toml::de::Error| {
        file_error("file", format!("not valid TOML: {}", error.message()))
    })?;
    if let Some(key) = root.keys().find(|key| key.as_str() != "product") {
        return Err(file_error(
            key,
            "unknown top-level key (the file holds only [[product]] entries)".into(),
        ));
    }
    let entries = match root.get("product") {
        None => return Err(file_error("product", "no [[product]] entries".into())),
        Some(toml::Value::Array(entries)) => entries,
        Some(_) => {
            return Err(file_error(
                "product",
                "must be an array of tables: write each entry as [[product]]".into(),
            ))
        }
    };

    let mut errors = Vec::new();
    let mut products = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (position, entry) in entries.iter().enumerate() {
        let index = position + 1;
        let Some(table) = entry.as_table() else {
            errors.push(EntryError {
                index,
                code: None,
                field: "product".into(),
                problem: "must be a table".into(),
            });
            continue;
        };
        match validate_entry(index, table) {
            Ok(product) => {
                if let Some(first) = seen.insert(product.code.clone(), index) {
                    errors.push(EntryError {
                        index,
                        code: Some(product.code.clone()),
                        field: "code".into(),
                        problem: format!("duplicate of product #{first}"),
                    });
                } else {
                    products.push(product);
                }
            }
            Err(mut entry_errors) => errors.append(&mut entry_errors),
        }
    }
    if errors.is_empty() {
        Ok(products)
    } else {
        Err(CatalogueErrors(errors))
    }
}

/// A required text field (`text`, as read from the entry) checked by
/// `parse`; `missing` is the problem when the field is absent.
fn required<T>(
    text: Result<Option<String>, String>,
    missing: &str,
    parse: impl FnOnce(String) -> Result<T, String>,
) -> Result<T, String> {
    match text {
        Ok(Some(value)) => parse(value),
        Ok(None) => Err(missing.to_string()),
        Err(problem) => Err(problem),
    }
}

fn validate_entry(index: usize, table: &toml::Table) -> Result<Product, Vec<EntryError>> {
    let code_hint = table
        .get("code")
        .and_then(toml::Value::as_str)
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(str::to_string);
    let mut errors = Vec::new();
    let mut fail = |field: &str, problem: String| {
        errors.push(EntryError {
            index,
            code: code_hint.clone(),
            field: field.to_string(),
            problem,
        })
    };

    let unknown: BTreeSet<&String> = table
        .keys()
        .filter(|key| !FIELDS.contains(&key.as_str()))
        .collect();
    for key in unknown {
        fail(
            key,
            format!("unknown field (expected one of {})", FIELDS.join(", ")),
        );
    }

    let text = |field: &str| -> Result<Option<String>, String> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::String(value)) => Ok(Some(value.trim().to_string())),
            Some(other) => Err(format!("must be a string, found {}", other.type_str())),
        }
    };

    let code = required(text("code"), "required", |code| {
        if code.is_empty() {
            return Err("must not be empty".into());
        }
        check_code(&code).map(|()| code)
    })
    .map_err(|problem| fail("code", problem))
    .ok();

    let provider = required(text("provider"), "required", |name| {
        let provider = Provider::parse(&name).map_err(|error| error.to_string())?;
        if !provider.has_connector() {
            return Err(format!(
                "loket has no {provider} connector, so nothing sold through it would ever be sent"
            ));
        }
        Ok(provider)
    })
    .map_err(|problem| fail("provider", problem))
    .ok();

    let provider_product_code = required(text("provider_product_code"), "required", |value| {
        if value.is_empty() {
            Err("must not be empty".into())
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("must not contain spaces or control characters".into())
        } else if value.len() > 64 {
            Err("at most 64 characters".into())
        } else {
            Ok(value)
        }
    })
    .map_err(|problem| fail("provider_product_code", problem))
    .ok();

    let missing_kind = format!("required (one of {})", kind_names());
    let kind = required(text("kind"), &missing_kind, |value| {
        ProductKind::parse(&value)
            .ok_or_else(|| format!("{value:?} is not one of {}", kind_names()))
    })
    .map_err(|problem| fail("kind", problem))
    .ok();

    let price = match table.get("price") {
        None => None,
        Some(toml::Value::Integer(value)) if *value <= 0 => {
            fail(
                "price",
                format!("{value} is not a price: it must be at least 1 rupiah"),
            );
            None
        }
        Some(toml::Value::Integer(value)) => Some(*value),
        Some(toml::Value::Float(_)) => {
            fail(
                "price",
                "must be a whole number of rupiah (an integer, no decimals)".into(),
            );
            None
        }
        Some(other) => {
            fail(
                "price",
                format!(
                    "must be an integer (whole rupiah), found {}",
                    other.type_str()
                ),
            );
            None
        }
    };
    match (kind, table.contains_key("price")) {
        (Some(ProductKind::Postpaid), true) => fail(
            "price",
            "must not be set for a postpaid product (the bill decides the amount)".into(),
        ),
        (Some(kind), true) if !kind.is_priced() => fail(
            "price",
            format!(
                "must not be set for a {} product (each request carries its amount)",
                kind.as_str()
            ),
        ),
        (Some(kind), false) if kind.is_priced() => {
            fail("price", format!("required for a {} product", kind.as_str()))
        }
        _ => {}
    }
    // The QR and pay-in/pay-out flows exist only at their provider, and
    // those providers offer nothing else.
    if let (Some(kind), Some(provider)) = (kind, provider) {
        let offered = ProductKind::ALL
            .into_iter()
            .filter(|k| k.only_provider() == Some(provider))
            .collect::<Vec<_>>();
        match kind.only_provider() {
            Some(only) if only != provider => fail(
                "provider",
                format!(
                    "a {} product is served by {only}, not {provider}",
                    kind.as_str()
                ),
            ),
            None if !offered.is_empty() => fail(
                "kind",
                format!(
                    "{provider} offers only {} products",
                    offered
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            _ => {}
        }
    }

    let description = match text("description") {
        Ok(value) => value.unwrap_or_default(),
        Err(problem) => {
            fail("description", problem);
            String::new()
        }
    };

    let active = match table.get("active") {
        None => true,
        Some(toml::Value::Boolean(value)) => *value,
        Some(other) => {
            fail(
                "active",
                format!("must be true or false, found {}", other.type_str()),
            );
            true
        }
    };

    match (code, provider, provider_product_code, kind) {
        (Some(code), Some(provider), Some(provider_product_code), Some(kind))
            if errors.is_empty() =>
        {
            Ok(Product {
                code,
                provider,
                provider_product_code,
                kind,
                price,
                description,
                active,
            })
        }
        _ => Err(errors),
    }
}

/// Our product codes: 1–32 characters, upper-case letters, digits, `_`, `-`.
fn check_code(code: &str) -> Result<(), String> {
    if code.len() > 32 {
        return Err("at most 32 characters".into());
    }
    if let Some(bad) = code
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
    {
        return Err(format!(
            "{bad:?} not allowed (use upper-case letters, digits, '_' and '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[product]]
code = "PULSA10"
provider = "okebayar"
provider_product_code = "S10"
kind = "prepaid"
price = 10500
description = "Pulsa 10.000"

[[product]]
code = "PLNPOST"
provider = "OkeBayar"
provider_product_code = "PLNPOST"
kind = "postpaid"
active = false
"#;

    fn errors_of(text: &str) -> Vec<String> {
        parse_catalogue(text)
            .expect_err("should fail")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_a_good_file() {
        let products = parse_catalogue(GOOD).expect("valid");
        assert_eq!(products.len(), 2);
        assert_eq!(
            products[0],
            Product {
                code: "PULSA10".into(),
                provider: Provider::OkeBayar,
                provider_product_code: "S10".into(),
                kind: ProductKind::Prepaid,
                price: Some(10_500),
                description: "Pulsa 10.000".into(),
                active: true,
            }
        );
        assert_eq!(products[1].kind, ProductKind::Postpaid);
        assert_eq!(products[1].price, None);
        assert!(!products[1].active);
        assert_eq!(products[1].description, "");
    }

    /// DOKU has a code catalogue in loket but no connector: a product routed
    /// to it would be accepted and never sent, so the file is refused,
    /// naming the entry and the field.
    #[test]
    fn a_product_routed_to_a_provider_without_a_connector_is_refused() {
        let text = r#"
[[product]]
code = "BILLX"
provider = "doku"
provider_product_code = "X1"
kind = "postpaid"
"#;
        assert_eq!(
            errors_of(text),
            vec![
                "product #1 (BILLX): provider: loket has no doku connector, so nothing sold \
                 through it would ever be sent"
            ]
        );
    }

    #[test]
    fn missing_price_names_entry_and_field() {
        let text = r#"
[[product]]
code = "PULSA10"
provider = "okebayar"
provider_product_code = "S10"
kind = "prepaid"
price = 10500

[[product]]
code = "PLN20"
provider = "okebayar"
provider_product_code = "PLN20"
kind = "pln_prepaid"
"#;
        assert_eq!(
            errors_of(text),
            vec!["product #2 (PLN20): price: required for a pln_prepaid product"]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = r#"
[[product]]
code = "BAD CODE"
provider = "acme"
provider_product_code = ""
kind = "voucher"
price = 10.5
colour = "red"

[[product]]
provider = "okebayar"
provider_product_code = "X"
kind = "postpaid"
price = 1000
active = "yes"
"#;
        let errors = errors_of(text);
        let expected = [
            "product #1 (BAD CODE): colour: unknown field",
            "product #1 (BAD CODE): code: ' ' not allowed",
            "product #1 (BAD CODE): provider: unknown provider \"acme\"",
            "product #1 (BAD CODE): provider_product_code: must not be empty",
            "product #1 (BAD CODE): kind: \"voucher\" is not one of prepaid, pln_prepaid, postpaid",
            "product #1 (BAD CODE): price: must be a whole number of rupiah",
            "product #2: code: required",
            "product #2: price: must not be set for a postpaid product",
            "product #2: active: must be true or false, found string",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, prefix) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(prefix),
                "{error:?} should start with {prefix:?}"
            );
        }
    }

    #[test]
    fn negative_price_and_wrong_types() {
        let text = r#"
[[product]]
code = "P1"
provider = 7
provider_product_code = "S1"
kind = "prepaid"
price = -5
"#;
        assert_eq!(
            errors_of(text),
            vec![
                "product #1 (P1): provider: must be a string, found integer",
                "product #1 (P1): price: -5 is not a price: it must be at least 1 rupiah",
            ]
        );
        let free = text
            .replace("provider = 7", "provider = \"okebayar\"")
            .replace("-5", "0");
        assert_eq!(
            errors_of(&free),
            vec!["product #1 (P1): price: 0 is not a price: it must be at least 1 rupiah"]
        );
    }

    #[test]
    fn duplicate_codes_are_refused() {
        let text = r#"
[[product]]
code = "A"
provider = "okebayar"
provider_product_code = "S1"
kind = "postpaid"

[[product]]
code = "A"
provider = "okebayar"
provider_product_code = "S2"
kind = "postpaid"
"#;
        assert_eq!(
            errors_of(text),
            vec!["product #2 (A): code: duplicate of product #1"]
        );
    }

    #[test]
    fn file_level_problems() {
        assert!(errors_of("product = 3")[0].starts_with("product: must be an array of tables"));
        assert!(errors_of("")[0].contains("no [[product]] entries"));
        assert!(errors_of("[[product]\n")[0].starts_with("file: not valid TOML"));
        assert!(
            errors_of("[[products]]\ncode='A'")[0].starts_with("products: unknown top-level key")
        );
    }

    #[test]
    fn the_seed_prices_are_what_the_simulator_charges() {
        let seed = parse_catalogue(include_str!("../../../deploy/products.toml")).expect("valid");
        let prices = loket_simulators::okebayar::default_prices();
        for product in seed.iter().filter(|p| p.kind.is_priced()) {
            assert_eq!(
                prices.get(&product.provider_product_code).copied(),
                product.price,
                "{}: the simulator's harga for {} differs from the seed price",
                product.code,
                product.provider_product_code
            );
        }
    }

    #[test]
    fn the_seed_file_is_valid() {
        let seed = include_str!("../../../deploy/products.toml");
        let products = parse_catalogue(seed).expect("deploy/products.toml is valid");
        assert!(products
            .iter()
            .any(|p| p.code == "PULSA10" && p.price == Some(10_500)));
        // The ingress's default products for QrPay, PayIn and PayOut.
        for (code, provider, kind) in [
            ("QRCPM", Provider::SnapQr, ProductKind::QrCpm),
            ("PAYIN", Provider::Smilepayz, ProductKind::PayIn),
            ("PAYOUT", Provider::Smilepayz, ProductKind::PayOut),
        ] {
            let product = products
                .iter()
                .find(|p| p.code == code)
                .unwrap_or_else(|| panic!("{code} missing from the seed"));
            assert_eq!(
                (product.provider, product.kind, product.price),
                (provider, kind, None)
            );
        }
    }

    #[test]
    fn qr_and_payment_products_need_no_price_and_their_provider() {
        let entry = |code: &str, provider: &str, kind: &str, price: &str| {
            format!(
                "[[product]]\ncode = \"{code}\"\nprovider = \"{provider}\"\n\
                 provider_product_code = \"{code}\"\nkind = \"{kind}\"\n{price}\n"
            )
        };
        let good = [
            entry("QRCPM", "snapqr", "qr_cpm", ""),
            entry("PAYIN", "smilepayz", "pay_in", ""),
            entry("PAYOUT", "smilepayz", "pay_out", ""),
        ]
        .join("\n");
        let products = parse_catalogue(&good).expect("valid");
        assert_eq!(
            products.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [ProductKind::QrCpm, ProductKind::PayIn, ProductKind::PayOut]
        );
        assert!(products.iter().all(|p| p.price.is_none()));
        assert_eq!(
            errors_of(&entry("QRCPM", "snapqr", "qr_cpm", "price = 1000")),
            vec!["product #1 (QRCPM): price: must not be set for a qr_cpm product (each request carries its amount)"]
        );
        assert_eq!(
            errors_of(&entry("PAYIN", "okebayar", "pay_in", "")),
            vec!["product #1 (PAYIN): provider: a pay_in product is served by smilepayz, not okebayar"]
        );
        assert_eq!(
            errors_of(&entry("PULSA", "snapqr", "prepaid", "price = 1000")),
            vec!["product #1 (PULSA): kind: snapqr offers only qr_cpm products"]
        );
        assert_eq!(
            errors_of(&entry("OUT", "smilepayz", "postpaid", "")),
            vec!["product #1 (OUT): kind: smilepayz offers only pay_in, pay_out products"]
        );
    }
}
