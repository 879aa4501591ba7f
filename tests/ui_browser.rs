//! The analyst UI in a real browser: headless Chromium driven over WebDriver
//! (chromedriver), against the service on a fresh database, a real `serve-model` suspect
//! and a worker. Signs in, submits a scan through the form, waits for the verdict on the
//! scan page, opens the similarity map, compares two fingerprints, adds a schedule and
//! reads its history; checks what a person would see and saves screenshots
//! (`PROVENANCE_SCREENSHOTS`, default `target/ui-screenshots`) that the README shows.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test-deps.sh` installs them).

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use provenance::jobs::ReferenceCache;
use provenance::model::{LoadOptions, ModelHandle};
use provenance::store::Role;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free loopback port; killed when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let driver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        assert!(
            std::path::Path::new(&driver).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser test needs Debian's chromium and chromium-driver: run scripts/test-deps.sh"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Driver { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start on port {port}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1400"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("PROVENANCE_SCREENSHOTS").unwrap_or_else(|_| "target/ui-screenshots".into()),
    );
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(shots_dir().join(name), png).expect("write screenshot");
}

/// The visible text of the page body. A page that is still loading (after a click) or
/// refreshing itself (a running scan) can swap its body under us: read again then.
async fn body_text(c: &Client) -> String {
    let mut last_error = None;
    for _ in 0..50 {
        match c.find(Locator::Css("body")).await {
            Ok(body) => match body.text().await {
                Ok(text) => return text,
                Err(e) => last_error = Some(e),
            },
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not read the page: {last_error:?}");
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.expect(css);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

/// Clicks something that loads a new page, and waits until the old page is gone (a
/// WebDriver click returns before the navigation it starts).
async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.expect("page");
    c.find(Locator::Css(css))
        .await
        .expect(css)
        .click()
        .await
        .expect("click");
    for _ in 0..200 {
        if old.text().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("clicking {css} did not load a page");
}

/// A page that failed never shows a trace or a blank page: it names the problem.
fn assert_readable_error(text: &str, expected: &str) {
    assert!(
        text.contains(expected),
        "expected {expected:?} on the page:\n{text}"
    );
    for leak in [
        "panicked",
        "stack backtrace",
        "RUST_BACKTRACE",
        "sqlx",
        "at src/",
    ] {
        assert!(
            !text.contains(leak),
            "internals on the page ({leak}):\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_analyst_signs_in_scans_a_suspect_and_reads_the_verdict_and_the_map() {
    let db = pg::TestDb::new().await;
    let model = common::smollm2().to_string_lossy().into_owned();
    let handle = ModelHandle::spawn(&model, &LoadOptions::default(), 16).expect("load");
    let suspect = pg::serve(provenance::serve::router(
        handle.clone(),
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect".into(),
            system_prompt: None,
        },
    ))
    .await;
    let (set, _) = db.register_reference("smollm2", &model).await;
    let (_, key) = db
        .store
        .create_api_key(Role::Admin, "ana")
        .await
        .expect("key");
    let base = db.api(true, &set.name).await;
    let references = ReferenceCache::new();
    references.insert(&model, handle).await;
    let stop_worker = db.spawn_worker(references);

    let driver = Driver::start().await;
    let c = browser(&driver).await;

    // Signing in: pages send a stranger to the sign-in form; a wrong key is told so.
    c.goto(&format!("{base}/ui/scans")).await.expect("goto");
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/ui/login"));
    fill(&c, "#api_key", "pvk_not_a_key").await;
    click(&c, "#sign-in").await;
    assert_readable_error(&body_text(&c).await, "That API key is not valid");
    screenshot(&c, "login.png").await;
    fill(&c, "#api_key", &key).await;
    click(&c, "#sign-in").await;
    let text = body_text(&c).await;
    assert!(
        text.contains("Scans") && text.contains("ana (admin)"),
        "{text}"
    );
    assert!(text.contains("No scans yet"), "{text}");

    // A bad submission comes back to the form with the reason and the typed values.
    c.goto(&format!("{base}/ui/scans/new")).await.expect("goto");
    fill(&c, "#suspect_url", "not a url").await;
    fill(&c, "#probes_per_kind", "two").await;
    click(&c, "#submit-scan").await;
    assert_readable_error(
        &body_text(&c).await,
        "Probes per kind must be a whole number",
    );
    // Eight probes of each kind: enough for a verdict (the demo's size).
    fill(&c, "#probes_per_kind", "8").await;
    click(&c, "#submit-scan").await;
    assert_readable_error(&body_text(&c).await, "suspect_url");
    let kept = c
        .find(Locator::Css("#suspect_url"))
        .await
        .expect("field")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(kept.as_deref(), Some("not a url"));

    // The real submission: the scan page follows the scan to its verdict.
    fill(&c, "#suspect_url", &format!("{suspect}/v1")).await;
    fill(&c, "#suspect_model", "suspect").await;
    click(&c, "#submit-scan").await;
    let scan_url = c.current_url().await.expect("url");
    assert!(scan_url.path().starts_with("/ui/scans/"), "{scan_url}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        // The page refreshes itself while the scan runs; read it as it is now.
        let text = body_text(&c).await;
        if text.contains("Verdict:") {
            break;
        }
        assert!(!text.contains("The scan failed"), "{text}");
        assert!(tokio::time::Instant::now() < deadline, "no verdict: {text}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.refresh().await.expect("refresh");
    }
    let text = body_text(&c).await;
    // The suspect is the reference served over HTTP: a copy.
    let verdict = c
        .find(Locator::Css("#verdict .verdict"))
        .await
        .expect("verdict badge")
        .text()
        .await
        .expect("text");
    assert_eq!(verdict.to_lowercase(), "identical", "{text}");
    for what in [
        "Confidence",
        "error rate held at α",
        "Signals",
        "Queries spent",
        "Suspect asks",
        "Evidence",
        "Reference",
        "Suspect",
        "logits",
    ] {
        assert!(text.contains(what), "{what:?} missing:\n{text}");
    }
    let bars = c
        .find_all(Locator::Css("#signal-bars svg rect.bar"))
        .await
        .expect("bars");
    assert!(!bars.is_empty(), "signal bars are drawn");
    screenshot(&c, "scan.png").await;

    // The list shows the scan done, with its verdict.
    c.goto(&format!("{base}/ui/scans")).await.expect("goto");
    let text = body_text(&c).await;
    assert!(
        text.contains("done") && text.contains("identical"),
        "{text}"
    );

    // The similarity map: one row (the suspect's fingerprint) against smollm2.
    c.goto(&format!("{base}/ui/map")).await.expect("goto");
    let cells = c
        .find_all(Locator::Css("#heatmap svg rect.cell"))
        .await
        .expect("cells");
    assert_eq!(cells.len(), 1, "one fingerprint against one reference");
    let svg_text = c
        .find(Locator::Css("#heatmap svg"))
        .await
        .expect("svg")
        .text()
        .await
        .expect("text");
    assert!(
        svg_text.contains("smollm2") && svg_text.contains("IDENT"),
        "{svg_text}"
    );
    screenshot(&c, "map.png").await;

    // Fingerprints: pick the two of the scan and compare them again.
    c.goto(&format!("{base}/ui/fingerprints"))
        .await
        .expect("goto");
    let radios_a = c.find_all(Locator::Css("input[name=a]")).await.expect("a");
    let radios_b = c.find_all(Locator::Css("input[name=b]")).await.expect("b");
    assert_eq!(radios_a.len(), 2, "the scan's two fingerprints");
    // Newest first: the suspect's fingerprint completes after the reference's.
    let text = body_text(&c).await;
    assert!(
        text.contains("reference") && text.contains("suspect"),
        "{text}"
    );
    screenshot(&c, "fingerprints.png").await;
    let rows = c
        .find_all(Locator::Css("#fingerprints tbody tr"))
        .await
        .expect("rows");
    let mut reference_row = 0;
    for (i, row) in rows.iter().enumerate() {
        if row.text().await.expect("text").contains("reference") {
            reference_row = i;
        }
    }
    radios_a[reference_row].click().await.expect("pick A");
    radios_b[1 - reference_row].click().await.expect("pick B");
    click(&c, "#compare-selected").await;
    click(&c, "#run-compare").await;
    let text = body_text(&c).await;
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .starts_with("/ui/comparisons/"));
    assert!(
        text.contains("Verdict:") && text.to_lowercase().contains("identical"),
        "{text}"
    );

    // Ids that are not ids are explained on the page.
    c.goto(&format!("{base}/ui/compare?a=nope&b=nope"))
        .await
        .expect("goto");
    assert_readable_error(&body_text(&c).await, "must be ids");

    // A schedule: a bad cron is explained; a good one is stored and shows its history.
    c.goto(&format!("{base}/ui/schedules")).await.expect("goto");
    fill(&c, "#schedule-form input[name=name]", "nightly").await;
    fill(&c, "#schedule-form input[name=cron]", "every night").await;
    fill(
        &c,
        "#schedule-form input[name=suspect_url]",
        &format!("{suspect}/v1"),
    )
    .await;
    fill(&c, "#schedule-form input[name=suspect_model]", "suspect").await;
    click(&c, "#schedule-form button").await;
    assert_readable_error(&body_text(&c).await, "cron");
    fill(&c, "#schedule-form input[name=cron]", "0 0 3 * * *").await;
    click(&c, "#schedule-form button").await;
    let schedule_url = c.current_url().await.expect("url");
    assert!(
        schedule_url.path().starts_with("/ui/schedules/"),
        "{schedule_url}"
    );
    assert!(body_text(&c).await.contains("No runs yet"));

    // Its runs: the scan above replayed as four nightly runs, the last two of which found
    // a different model (the verdict and logit score of the stored report changed).
    let _ = stop_worker.send(true);
    let schedule_id: uuid::Uuid = schedule_url
        .path()
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("schedule id");
    seed_runs(&db, schedule_id, &set, scan_url.path()).await;
    c.goto(schedule_url.as_str()).await.expect("goto");
    let history = c
        .find(Locator::Css("#history svg"))
        .await
        .expect("history plot")
        .text()
        .await
        .expect("text");
    assert!(history.contains("identical → unrelated"), "{history}");
    let changes = c
        .find_all(Locator::Css("#history svg line.verdict-change"))
        .await
        .expect("changes");
    assert_eq!(changes.len(), 1);
    screenshot(&c, "schedule.png").await;

    // Nonsense addresses get a page that says what is wrong.
    c.goto(&format!("{base}/ui/scans/not-a-scan"))
        .await
        .expect("goto");
    assert_readable_error(&body_text(&c).await, "is not a valid id");
    c.goto(&format!("{base}/ui/nowhere")).await.expect("goto");
    assert_readable_error(&body_text(&c).await, "no such page");

    // Signing out ends the session: pages send the browser back to the form.
    c.goto(&format!("{base}/ui/scans")).await.expect("goto");
    click(&c, "header form button").await;
    c.goto(&format!("{base}/ui/scans")).await.expect("goto");
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/ui/login"));
    c.close().await.expect("close");
}

/// Four finished runs of `schedule_id` carrying the report of the scan at `scan_path`;
/// the last two say `unrelated` with a lower logit score.
async fn seed_runs(
    db: &pg::TestDb,
    schedule_id: uuid::Uuid,
    set: &provenance::store::ProbeSetRow,
    scan_path: &str,
) {
    let scan_id: uuid::Uuid = scan_path
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("scan id");
    let scan = db.store.get_scan(scan_id).await.expect("scan");
    let report = scan.report.clone().expect("report");
    for run in 0..4 {
        let mut report = report.clone();
        let verdict = if run < 2 { "identical" } else { "unrelated" };
        if run >= 2 {
            report["verdict"] = verdict.into();
            for signal in report["signals"].as_array_mut().expect("signals") {
                if signal["name"] == "logits" {
                    signal["score"] = serde_json::json!(0.55 + 0.01 * run as f64);
                }
            }
        }
        let (row, _) = db
            .store
            .submit_scan(&provenance::store::NewScan {
                schedule_id: Some(schedule_id),
                ..pg::http_scan(&scan.suspect_source, scan.reference_model_id, set.id)
            })
            .await
            .expect("submit");
        let claimed = db
            .store
            .claim_scan("seed", 60.0)
            .await
            .expect("claim")
            .expect("a queued scan");
        assert_eq!(claimed.scan.id, row.id);
        db.store
            .finish_scan(row.id, &claimed.owner, Some(verdict), &report)
            .await
            .expect("finish");
    }
}
