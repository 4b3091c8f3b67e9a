//! The product catalogue (`products` table: our code → provider, provider
//! product code, kind, price), held in memory and reloaded every few seconds
//! so operators' edits take effect without a restart. A code not in the
//! snapshot triggers at most one early reload per second, so a product just
//! added works almost at once without letting unknown codes hammer the
//! database.

use loket_protocol::product::is_bpjs_product_code;
use loket_protocol::{Money, ProductKind, Provider, TransactionKind};
use loket_runtime::db::BoundedPool;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::errors::ApiError;
use crate::validate::{shortened, InquiryFields};

/// Least time between two reloads triggered by unknown codes.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub code: String,
    pub provider: Provider,
    pub provider_product_code: String,
    pub kind: ProductKind,
    /// The price of a prepaid product; `None` for postpaid.
    pub price: Option<Money>,
    pub active: bool,
}

impl Product {
    /// The kind of transaction a `Purchase` of this product creates.
    pub fn purchase_kind(&self) -> Result<TransactionKind, ApiError> {
        match self.kind {
            ProductKind::Prepaid | ProductKind::PlnPrepaid => Ok(TransactionKind::PrepaidPurchase),
            ProductKind::Postpaid => Err(ApiError::FailedPrecondition(format!(
                "product {} is a postpaid bill: use Inquire, then PayBill",
                self.code
            ))),
            other => Err(self.wrong_call(other)),
        }
    }

    fn wrong_call(&self, kind: ProductKind) -> ApiError {
        ApiError::FailedPrecondition(format!(
            "product {} is a {} product: use {}",
            self.code,
            kind.as_str(),
            kind.call()
        ))
    }

    /// Refuses a product of another kind than the call needs.
    pub fn require(&self, kind: ProductKind) -> Result<(), ApiError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(self.wrong_call(self.kind))
        }
    }

    /// The kind of transaction an `Inquire` of this product creates.
    pub fn inquiry_kind(&self) -> Result<TransactionKind, ApiError> {
        match self.kind {
            ProductKind::PlnPrepaid => Ok(TransactionKind::PrepaidInquiry),
            ProductKind::Postpaid => Ok(TransactionKind::BillInquiry),
            ProductKind::Prepaid => Err(ApiError::FailedPrecondition(format!(
                "product {} is prepaid and has no inquiry: use Purchase",
                self.code
            ))),
            other => Err(self.wrong_call(other)),
        }
    }

    /// Whether this is a BPJS bill, billed by the month: its inquiry names
    /// the months to pay and the payer's phone (OkeBayar spec §4,
    /// `accnumber3` and `contactnumber`). The catalogue has no column for
    /// it, so it is read from the provider product code by the rule the
    /// OkeBayar simulator applies too ([`is_bpjs_product_code`]).
    pub fn is_bpjs(&self) -> bool {
        self.kind == ProductKind::Postpaid && is_bpjs_product_code(&self.provider_product_code)
    }

    /// Which of an inquiry's optional fields this product takes: a PLN
    /// prepaid inquiry the meter number alone, a BPJS bill its months and
    /// payer's phone, any other bill a phone line's number and a contact.
    pub fn inquiry_fields(&self) -> InquiryFields {
        if self.kind == ProductKind::PlnPrepaid {
            InquiryFields::MeterOnly
        } else if self.is_bpjs() {
            InquiryFields::Bpjs
        } else {
            InquiryFields::Bill
        }
    }

    /// The amount a purchase of this product charges.
    pub fn purchase_price(&self) -> Result<Money, ApiError> {
        self.price.ok_or_else(|| {
            ApiError::FailedPrecondition(format!("product {} has no price configured", self.code))
        })
    }
}

struct Snapshot {
    products: HashMap<String, Product>,
    loaded_at: Instant,
}

pub struct Products {
    db: BoundedPool,
    snapshot: RwLock<Arc<Snapshot>>,
    reload: tokio::sync::Mutex<()>,
}

#[derive(sqlx::FromRow)]
struct ProductRow {
    code: String,
    provider: String,
    provider_product_code: String,
    kind: String,
    price_minor: Option<i64>,
    currency: String,
    active: bool,
}

fn parse_row(row: ProductRow) -> Option<Product> {
    let provider = Provider::parse(&row.provider)
        .map_err(|_| tracing::warn!(product = %row.code, provider = %row.provider, "product names an unknown provider; ignored"))
        .ok()?;
    if !provider.has_connector() {
        tracing::warn!(product = %row.code, %provider, "product routed to a provider loket has no connector for; ignored, as nothing sold through it would be sent");
        return None;
    }
    let kind = ProductKind::parse(&row.kind)?;
    // loketctl refuses a price below 1 rupiah; one set by SQL would sell
    // the product for nothing.
    if row.price_minor.is_some_and(|minor| minor < 1) {
        tracing::warn!(product = %row.code, price_minor = row.price_minor, "product has a price below 1 rupiah; ignored until fixed (loketctl products)");
        return None;
    }
    let currency = loket_protocol::Currency::parse(&row.currency)
        .map_err(|_| tracing::warn!(product = %row.code, currency = %row.currency, "product has an unsupported currency; ignored"))
        .ok()?;
    Some(Product {
        code: row.code,
        provider,
        provider_product_code: row.provider_product_code,
        kind,
        price: row.price_minor.map(|minor| Money { minor, currency }),
        active: row.active,
    })
}

impl Products {
    /// Loads the catalogue once; fails when the database does not answer.
    pub async fn load(db: BoundedPool) -> Result<Self, sqlx::Error> {
        let products = Self::fetch(&db).await?;
        Ok(Products {
            db,
            snapshot: RwLock::new(Arc::new(Snapshot {
                products,
                loaded_at: Instant::now(),
            })),
            reload: tokio::sync::Mutex::new(()),
        })
    }

    async fn fetch(db: &BoundedPool) -> Result<HashMap<String, Product>, sqlx::Error> {
        let rows: Vec<ProductRow> = db
            .run(async |connection| {
                sqlx::query_as(
                    "SELECT code, provider, provider_product_code, kind, price_minor, currency, active FROM products",
                )
                .fetch_all(connection)
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(parse_row)
            .map(|product| (product.code.clone(), product))
            .collect())
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reloads the snapshot now.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        self.refresh_if_older(Duration::ZERO).await
    }

    /// Reloads unless the snapshot is younger than `age` (checked again
    /// under the reload lock, so a burst of misses reloads once).
    async fn refresh_if_older(&self, age: Duration) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.reload.lock().await;
        if !age.is_zero() && self.current().loaded_at.elapsed() < age {
            return Ok(());
        }
        let products = Self::fetch(&self.db).await?;
        *self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(Snapshot {
            products,
            loaded_at: Instant::now(),
        });
        Ok(())
    }

    /// Keeps the snapshot fresh until `shutdown`.
    pub async fn refresh_every(&self, every: Duration, shutdown: loket_runtime::Shutdown) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = ticker.tick() => {
                    if let Err(error) = self.refresh().await {
                        tracing::warn!(%error, "product catalogue reload failed; keeping the last one");
                    }
                }
            }
        }
    }

    /// The active product `code`, or `NOT_FOUND` naming it.
    pub async fn get(&self, code: &str) -> Result<Product, ApiError> {
        let mut snapshot = self.current();
        if !snapshot.products.contains_key(code)
            && snapshot.loaded_at.elapsed() >= MISS_RELOAD_INTERVAL
        {
            if let Err(error) = self.refresh_if_older(MISS_RELOAD_INTERVAL).await {
                tracing::warn!(%error, "product catalogue reload failed");
            }
            snapshot = self.current();
        }
        match snapshot.products.get(code) {
            Some(product) if product.active => Ok(product.clone()),
            Some(_) => Err(ApiError::NotFound(format!("product {code} is not active"))),
            None => Err(ApiError::NotFound(format!(
                "product {} not found",
                shortened(code, 64)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(kind: ProductKind, price: Option<i64>) -> Product {
        Product {
            code: "P1".into(),
            provider: Provider::OkeBayar,
            provider_product_code: "S10".into(),
            kind,
            price: price.map(Money::idr),
            active: true,
        }
    }

    #[test]
    fn kinds_decide_which_calls_apply() {
        let prepaid = product(ProductKind::Prepaid, Some(10_500));
        let pln = product(ProductKind::PlnPrepaid, Some(20_000));
        let postpaid = product(ProductKind::Postpaid, None);
        assert_eq!(
            prepaid.purchase_kind().unwrap(),
            TransactionKind::PrepaidPurchase
        );
        assert_eq!(
            pln.purchase_kind().unwrap(),
            TransactionKind::PrepaidPurchase
        );
        assert_eq!(pln.inquiry_kind().unwrap(), TransactionKind::PrepaidInquiry);
        assert_eq!(
            postpaid.inquiry_kind().unwrap(),
            TransactionKind::BillInquiry
        );
        let error = postpaid.purchase_kind().unwrap_err();
        assert!(
            matches!(&error, ApiError::FailedPrecondition(m) if m.contains("postpaid")),
            "{error:?}"
        );
        let error = prepaid.inquiry_kind().unwrap_err();
        assert!(
            matches!(&error, ApiError::FailedPrecondition(m) if m.contains("Purchase")),
            "{error:?}"
        );
        assert_eq!(prepaid.purchase_price().unwrap(), Money::idr(10_500));
        assert!(postpaid.purchase_price().is_err());
    }

    /// A BPJS bill is known by its provider product code, whatever our
    /// code for it, so its inquiry's months and payer's phone are required
    /// (OkeBayar spec §4); no other product, nor a prepaid one named alike,
    /// takes months. Which codes are BPJS ones is tested with the rule
    /// (`loket_protocol::product`).
    #[test]
    fn a_bpjs_bill_is_known_by_its_provider_product_code() {
        let bill = |provider_product_code: &str| Product {
            provider_product_code: provider_product_code.into(),
            ..product(ProductKind::Postpaid, None)
        };
        assert!(bill("bpjsks").is_bpjs());
        assert!(!bill("KSBPJS").is_bpjs());
        let prepaid = Product {
            provider_product_code: "BPJSKS".into(),
            ..product(ProductKind::Prepaid, Some(10_000))
        };
        assert!(!prepaid.is_bpjs());
    }

    /// A row SQL wrote that routes a product to a provider loket has no
    /// connector for (DOKU) is ignored, so the product is not found rather
    /// than sold and never sent; the same row routed to OkeBayar is taken.
    #[test]
    fn a_product_routed_to_a_provider_without_a_connector_is_ignored() {
        let row = |provider: &str| ProductRow {
            code: "BILLX".into(),
            provider: provider.into(),
            provider_product_code: "X1".into(),
            kind: "postpaid".into(),
            price_minor: None,
            currency: "IDR".into(),
            active: true,
        };
        assert!(parse_row(row("doku")).is_none());
        let taken = parse_row(row("okebayar")).expect("an OkeBayar product");
        assert_eq!(taken.provider, Provider::OkeBayar);
    }

    #[test]
    fn wave_two_kinds_parse_and_name_their_call() {
        for kind in ProductKind::ALL {
            assert_eq!(ProductKind::parse(kind.as_str()), Some(kind));
        }
        let qr = Product {
            code: "QRCPM".into(),
            provider: Provider::SnapQr,
            ..product(ProductKind::QrCpm, None)
        };
        assert!(qr.require(ProductKind::QrCpm).is_ok());
        let error = qr.purchase_kind().unwrap_err();
        assert!(
            matches!(&error, ApiError::FailedPrecondition(m) if m == "product QRCPM is a qr_cpm product: use QrPay"),
            "{error:?}"
        );
        assert!(qr.inquiry_kind().is_err());
        let error = product(ProductKind::Prepaid, Some(1))
            .require(ProductKind::PayOut)
            .unwrap_err();
        assert!(
            matches!(&error, ApiError::FailedPrecondition(m) if m == "product P1 is a prepaid product: use Purchase"),
            "{error:?}"
        );
        let pay_in = product(ProductKind::PayIn, None);
        assert!(matches!(
            pay_in.require(ProductKind::QrCpm),
            Err(ApiError::FailedPrecondition(m)) if m.ends_with("use PayIn")
        ));
    }

    #[test]
    fn rows_with_unknown_provider_or_kind_or_a_price_of_nothing_are_skipped() {
        let priced = |provider: &str, kind: &str, price_minor| ProductRow {
            code: "P".into(),
            provider: provider.into(),
            provider_product_code: "X".into(),
            kind: kind.into(),
            price_minor,
            currency: "IDR".into(),
            active: true,
        };
        let row = |provider: &str, kind: &str| priced(provider, kind, Some(1));
        assert!(parse_row(row("okebayar", "prepaid")).is_some());
        assert!(parse_row(row("acme", "prepaid")).is_none());
        assert!(parse_row(row("okebayar", "voucher")).is_none());
        assert!(parse_row(priced("okebayar", "prepaid", Some(0))).is_none());
        assert!(parse_row(priced("okebayar", "postpaid", None)).is_some());
    }
}
