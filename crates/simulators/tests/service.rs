//! `loket-sim`'s settings as an operator writes them: a value it cannot work
//! with is refused at start, naming the key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use loket_runtime::Shutdown;
use loket_simulators::service::{self, Listeners, Settings};
use tokio::net::TcpListener;

#[tokio::test]
async fn zero_remembered_references_from_the_config_file_is_refused_by_run() {
    let path = std::env::temp_dir().join(format!("loket-sim-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, "remembered_references = 0\n").unwrap();
    let loaded = loket_runtime::config::load_from::<Settings>(path.to_str());
    std::fs::remove_file(&path).unwrap();
    let settings = loaded.unwrap();
    assert_eq!(settings.remembered_references, 0);

    let listeners = Listeners {
        okebayar: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        smilepayz: None,
        snapqr: None,
    };
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        service::run(settings, listeners, Shutdown::new()),
    )
    .await
    .expect("run refuses at once instead of serving")
    .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "invalid configuration: remembered_references: must be greater than 0"
    );
    assert!(Settings::default().validate().is_ok());
}

#[test]
fn loket_sim_exits_at_start_when_told_to_remember_no_reference() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loket-sim"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LOKET_")) {
        command.env_remove(name);
    }
    let mut child = command
        .env("LOKET_REMEMBERED_REFERENCES", "0")
        .env("LOKET_ADMIN_ADDR", "127.0.0.1:0")
        .env("LOKET_OKEBAYAR_ADDR", "127.0.0.1:0")
        .env("LOKET_SMILEPAYZ_ADDR", "")
        .env("LOKET_SNAPQR_ADDR", "")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("loket-sim kept running with remembered_references = 0");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!exit.success());
    assert!(
        stderr.contains("remembered_references: must be greater than 0"),
        "{stderr}"
    );
}
