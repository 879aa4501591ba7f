//! The analyst UI over plain HTTP (no browser): sign-in and session cookies, CSRF,
//! roles, clear pages for bad input, escaping, and pagination over thousands of stored
//! fingerprints. The browser end to end is `ui_browser.rs`.

#[path = "common/pg.rs"]
mod pg;

use std::collections::HashSet;

use futures::future::join_all;
use provenance::store::Role;
use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};
use serde_json::json;

fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// The value of cookie `name` in a response's Set-Cookie headers, with its attributes.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("cookie value")
}

/// The hidden `csrf` field of a page's first form.
fn csrf_field(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("csrf field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

/// Signs in with `key`; returns the session cookie header value and a CSRF token.
async fn sign_in(c: &Client, base: &str, key: &str) -> (String, String) {
    let resp = c
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .expect("login page");
    let login_cookie = cookie_value(&set_cookie(&resp, "pv_login").expect("login cookie"));
    let csrf = csrf_field(&resp.text().await.expect("html"));
    let resp = c
        .post(format!("{base}/ui/login"))
        .header("cookie", format!("pv_login={login_cookie}"))
        .form(&[("api_key", key), ("csrf", &csrf)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&resp, "pv_session").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session.contains(attr), "{attr} missing: {session}");
    }
    let cookie = format!("pv_session={}", cookie_value(&session));
    let page = c
        .get(format!("{base}/ui/scans/new"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("form")
        .text()
        .await
        .expect("html");
    (cookie, csrf_field(&page))
}

async fn page(c: &Client, url: &str, cookie: &str) -> (StatusCode, String) {
    let resp = c
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    (resp.status(), resp.text().await.expect("body"))
}

/// Follows "Older →" links from `first` to the end; returns every page's body. Prints
/// the page times (reported, never asserted).
async fn all_pages(c: &Client, base: &str, first: &str, cookie: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut times = Vec::new();
    let mut url = format!("{base}{first}");
    loop {
        let started = std::time::Instant::now();
        let (status, html) = page(c, &url, cookie).await;
        times.push(started.elapsed());
        assert_eq!(status, StatusCode::OK, "{url}: {html}");
        let next = html
            .find(r#"id="next-page" href=""#)
            .map(|at| unescape(html[at + 21..].split('"').next().expect("href")));
        pages.push(html);
        match next {
            Some(href) => url = format!("{base}{href}"),
            None => {
                times.sort();
                eprintln!(
                    "{first}: {} pages, median {:.1} ms, slowest {:.1} ms",
                    pages.len(),
                    times[times.len() / 2].as_secs_f64() * 1e3,
                    times[times.len() - 1].as_secs_f64() * 1e3
                );
                return pages;
            }
        }
    }
}

/// Undoes the HTML escaping of an attribute value (minijinja escapes `/` too).
fn unescape(text: &str) -> String {
    text.replace("&#x2f;", "/").replace("&amp;", "&")
}

fn no_internals(html: &str) {
    for leak in ["panicked", "stack backtrace", "sqlx", "src/"] {
        assert!(!html.contains(leak), "internals shown ({leak}): {html}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_forms_and_roles_behave() {
    let db = pg::TestDb::new().await;
    let (set, reference) = db.register_stub_reference().await;
    // Private targets refused, as in production.
    let base = db.api(false, &set.name).await;
    let (admin_row, admin_key) = db
        .store
        .create_api_key(Role::Admin, "ada")
        .await
        .expect("key");
    let (_, submitter_key) = db
        .store
        .create_api_key(Role::Submitter, "sam")
        .await
        .expect("key");
    let c = client();

    // Strangers are sent to sign in; the style sheet is public.
    let resp = c.get(format!("{base}/ui/scans")).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/ui/login");
    let resp = c
        .get(format!("{base}/ui/style.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("text/css"));

    // A sign-in form posted without its own token (another site's form) is refused.
    let resp = c
        .post(format!("{base}/ui/login"))
        .form(&[("api_key", admin_key.as_str()), ("csrf", "forged")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let html = resp.text().await.expect("html");
    assert!(
        html.contains("this form has expired or came from another page"),
        "{html}"
    );

    let (cookie, csrf) = sign_in(&c, &base, &admin_key).await;
    let (status, html) = page(&c, &format!("{base}/ui/scans"), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("ada (admin)"));

    // Forms without the session's token are refused and change nothing.
    for token in ["", "wrong"] {
        let resp = c
            .post(format!("{base}/ui/scans"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", token),
                ("suspect_url", "https://api.example.com/v1"),
                ("reference", "smollm2"),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    let none = db
        .store
        .list_scans(&provenance::store::ScanFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(none.items.is_empty(), "a refused form queued a scan");

    // Bad input comes back on the form with the reason, the values kept and escaped.
    let resp = c
        .post(format!("{base}/ui/scans"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("suspect_url", "http://127.0.0.1:9/v1"),
            ("suspect_model", "<script>alert(1)</script>"),
            ("reference", "smollm2"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.expect("html");
    assert!(html.contains("suspect_url"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;"), "{html}");
    assert!(!html.contains("<script>alert(1)"), "unescaped input");
    no_internals(&html);

    // A double-clicked submission (same form token) queues one scan.
    let form = [
        ("csrf", csrf.as_str()),
        ("form_token", "once"),
        ("suspect_url", "https://api.example.com/v1"),
        ("suspect_model", "<b>bold</b>"),
        ("reference", "smollm2"),
        ("early_stop", "on"),
    ];
    let mut locations = HashSet::new();
    for _ in 0..2 {
        let resp = c
            .post(format!("{base}/ui/scans"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        locations.insert(
            resp.headers()["location"]
                .to_str()
                .expect("loc")
                .to_string(),
        );
    }
    assert_eq!(locations.len(), 1, "{locations:?}");
    let (status, html) = page(&c, &format!("{base}/ui/scans"), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("&lt;b&gt;bold&lt;") && !html.contains("<b>bold</b>"));
    assert!(html.contains("queued"));

    // Identify: a refused address comes back on the form; a good one queues one scan
    // per reference and shows them on its page.
    let resp = c
        .post(format!("{base}/ui/identifications"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("suspect_url", "http://127.0.0.1:9/v1"),
            ("suspect_model", "<i>it</i>"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.expect("html");
    assert!(
        html.contains("suspect_url") && html.contains("&lt;i&gt;it&lt;"),
        "{html}"
    );
    no_internals(&html);
    let resp = c
        .post(format!("{base}/ui/identifications"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("suspect_url", "https://api.example.com/v1"),
            ("suspect_model", "their-model"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"]
        .to_str()
        .expect("loc")
        .to_string();
    assert!(location.starts_with("/ui/identifications/"), "{location}");
    let (status, html) = page(&c, &format!("{base}{location}"), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("smollm2") && html.contains("queued"),
        "{html}"
    );
    assert!(html.contains("scan has finished yet"), "{html}");
    let (status, html) = page(&c, &format!("{base}/ui/identifications"), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(location.trim_start_matches("/ui/identifications/")),
        "{html}"
    );

    // Bad addresses and unknown things get a page that says so.
    let (status, html) = page(&c, &format!("{base}/ui/scans/12"), &cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("is not a valid id"));
    let (status, html) = page(
        &c,
        &format!("{base}/ui/scans/{}", uuid::Uuid::new_v4()),
        &cookie,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("not found"));
    let (status, html) = page(&c, &format!("{base}/ui/scans?status=sleeping"), &cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("unknown status"));
    no_internals(&html);
    let resp = c
        .post(format!("{base}/ui/compare"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.expect("html");
    assert!(html.contains("Content-Type"), "{html}");
    no_internals(&html);

    // A submitter signs in but may not browse fingerprints or schedules.
    let (sub_cookie, _) = sign_in(&c, &base, &submitter_key).await;
    for path in ["/ui/fingerprints", "/ui/map", "/ui/schedules"] {
        let (status, html) = page(&c, &format!("{base}{path}"), &sub_cookie).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(html.contains("role may not do that"), "{html}");
    }
    // Nor see the admin's scan.
    let (_, html) = page(&c, &format!("{base}/ui/scans"), &sub_cookie).await;
    assert!(html.contains("No scans yet"), "{html}");
    let (_, html) = page(&c, &format!("{base}/ui/identifications"), &sub_cookie).await;
    assert!(html.contains("No identifications yet"), "{html}");
    let (status, _) = page(&c, &format!("{base}{location}"), &sub_cookie).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revoking the key ends its sessions.
    db.store.revoke_api_key(admin_row.id).await.expect("revoke");
    let resp = c
        .get(format!("{base}/ui/scans"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    // Sign-out ends a session too.
    let (_, sub_csrf) = (sub_cookie.clone(), {
        let (_, html) = page(&c, &format!("{base}/ui/scans"), &sub_cookie).await;
        csrf_field(&html)
    });
    let resp = c
        .post(format!("{base}/ui/logout"))
        .header("cookie", &sub_cookie)
        .form(&[("csrf", sub_csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = c
        .get(format!("{base}/ui/scans"))
        .header("cookie", &sub_cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let _ = reference;
}

/// The models page: an analyst registers a reference behind its owner's URL (the model
/// name it serves required, private addresses refused as everywhere), and sees it listed;
/// a submitter may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_behind_a_url_is_registered_from_the_models_page() {
    let db = pg::TestDb::new().await;
    let (set, _) = db.register_stub_reference().await;
    let base = db.api(false, &set.name).await;
    let (_, analyst_key) = db
        .store
        .create_api_key(Role::Analyst, "ana")
        .await
        .expect("key");
    let (_, submitter_key) = db
        .store
        .create_api_key(Role::Submitter, "sam")
        .await
        .expect("key");
    let c = client();
    let (cookie, _) = sign_in(&c, &base, &analyst_key).await;
    let (status, html) = page(&c, &format!("{base}/ui/models"), &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("model-form"), "{html}");
    let csrf = csrf_field(&html);
    let post = |fields: Vec<(&'static str, String)>| {
        let mut form = vec![
            ("csrf", csrf.clone()),
            ("name", "owned".to_string()),
            ("role", "reference".to_string()),
            ("kind", "http".to_string()),
        ];
        form.extend(fields);
        c.post(format!("{base}/ui/models"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
    };
    let resp = post(vec![("source", "https://api.example.com/v1".into())])
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.expect("html");
    assert!(html.contains("served_model is required"), "{html}");
    no_internals(&html);
    let resp = post(vec![
        ("source", "http://127.0.0.1:9/v1".into()),
        ("served_model", "m".into()),
    ])
    .await
    .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = post(vec![
        ("source", "https://api.example.com/v1".into()),
        ("served_model", "owner-model".into()),
    ])
    .await
    .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&c, &format!("{base}/ui/models"), &cookie).await;
    assert!(
        unescape(&html).contains("https://api.example.com/v1"),
        "{html}"
    );
    assert!(html.contains("owner-model"), "{html}");
    no_internals(&html);
    let row = db.store.find_model("owned").await.expect("stored");
    assert_eq!(row.served_model, "owner-model");

    let (sub_cookie, _) = sign_in(&c, &base, &submitter_key).await;
    let (status, _) = page(&c, &format!("{base}/ui/models"), &sub_cookie).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_the_map_page_through_thousands_of_fingerprints() {
    // Long form: PROVENANCE_UI_SCANS=5000 (10 000 fingerprints) with --nocapture.
    let n_scans: usize = std::env::var("PROVENANCE_UI_SCANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| n % 50 == 0 && *n >= 50)
        .unwrap_or(1000);
    let db = pg::TestDb::new().await;
    let (set, reference) = db.register_stub_reference().await;
    for chunk in (0..n_scans).collect::<Vec<_>>().chunks(16) {
        join_all(chunk.iter().map(|&i| {
            let store = db.store.clone();
            let (set_id, reference_id) = (set.id, reference.id);
            async move {
                let (scan, ids) =
                    pg::seed_scan(&store, i, reference_id, set_id, Some(reference_id)).await;
                // A comparison whose logit score is i/1000.
                let report = json!({"signals": [{"name": "logits", "score": i as f64 / 1000.0}]});
                store
                    .add_comparison(ids[0], ids[1], Some(scan), &report, None)
                    .await
                    .expect("comparison");
            }
        }))
        .await;
    }
    let (_, key) = db
        .store
        .create_api_key(Role::Analyst, "ana")
        .await
        .expect("key");
    let base = db.api(true, &set.name).await;
    let c = client();
    let (cookie, _) = sign_in(&c, &base, &key).await;

    // Every fingerprint exactly once across the pages, 50 to a page.
    let pages = all_pages(&c, &base, "/ui/fingerprints", &cookie).await;
    assert_eq!(pages.len(), 2 * n_scans / 50);
    let mut seen = HashSet::new();
    for html in &pages {
        for part in html.split(r#"name="a" value=""#).skip(1) {
            assert!(
                seen.insert(part[..36].to_string()),
                "a fingerprint listed twice"
            );
        }
    }
    assert_eq!(seen.len(), 2 * n_scans);

    // Filters carry over to the next page.
    let pages = all_pages(&c, &base, "/ui/fingerprints?status=complete", &cookie).await;
    assert_eq!(pages.len(), 2 * n_scans / 50);
    assert!(
        all_pages(&c, &base, "/ui/fingerprints?status=partial", &cookie).await[0]
            .contains("No fingerprints match")
    );

    // The map: one row per compared (suspect-side) fingerprint, each score printed.
    let pages = all_pages(&c, &base, "/ui/map", &cookie).await;
    assert_eq!(pages.len(), n_scans / 50);
    let cells: usize = pages
        .iter()
        .map(|h| h.matches(r#"class="cell""#).count())
        .sum();
    assert_eq!(cells, n_scans);
    assert!(
        pages[0].contains(&format!("{:.3}", (n_scans - 1) as f64 / 1000.0)),
        "the newest comparison first"
    );
    assert!(
        pages.last().expect("last").contains(">0.00<")
            || pages.last().expect("last").contains(">0.00 ")
    );
}
