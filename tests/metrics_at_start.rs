//! End-to-end: the callback receiver's `/metrics` right after it started,
//! before any callback: its callback counter is there at zero for each
//! provider it has a parser for with each result, and for a path naming no
//! provider, and its port's connection counters too; the callbacks then
//! counted land on those series, not on new ones named apart. (The receiver
//! is started by [`TestApp`], the whole of loket in one process.)

use loket_test_support::{admin, TestApp};

const CALLBACKS: &str = "loket_callback_requests_total";

fn callbacks(provider: &str, result: &str) -> String {
    format!(r#"{CALLBACKS}{{provider="{provider}",result="{result}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_receivers_counters_read_zero_right_after_start() {
    let app = TestApp::spawn().await;
    let mut zero: Vec<String> = ["okebayar", "snapqr", "smilepayz"]
        .iter()
        .flat_map(|provider| {
            [
                "accepted",
                "rejected",
                "forbidden",
                "too_large",
                "slow_body",
                "broken_body",
                "unavailable",
            ]
            .map(|result| callbacks(provider, result))
        })
        .collect();
    zero.push(callbacks("unknown", "unknown_provider"));
    zero.extend(
        ["source", "source_full", "full"].map(|reason| {
            format!(r#"loket_callback_connections_refused_total{{reason="{reason}"}}"#)
        }),
    );
    admin::assert_series_at(app.callback_admin, &zero, "0").await;
    let before = admin::get(app.callback_admin, "/metrics").await.unwrap();

    let http = reqwest::Client::new();
    let nowhere = http
        .post(format!(
            "http://{}/callback/nosuchprovider",
            app.callback_addr
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);
    let garbled = http
        .post(app.callback_url())
        .body("not a callback")
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), 400);
    admin::assert_series_at(
        app.callback_admin,
        &[
            callbacks("unknown", "unknown_provider"),
            callbacks("okebayar", "rejected"),
        ],
        "1",
    )
    .await;
    let after = admin::get(app.callback_admin, "/metrics").await.unwrap();
    assert_eq!(
        admin::labelled_series(&after, &[CALLBACKS]).len(),
        admin::labelled_series(&before, &[CALLBACKS]).len(),
        "series added by the callbacks:\n{after}"
    );
}
