//! A fresh PostgreSQL database per test on 127.0.0.1:5432 (user postgres, trust auth),
//! dropped when the guard goes.
#![allow(dead_code)]

use provenance::store::Store;
use sqlx::{Connection, Executor, PgConnection};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: Store,
}

impl TestDb {
    /// Creates the database and applies the migrations.
    pub async fn new() -> TestDb {
        let name = format!("provenance_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(ADMIN_URL)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (user postgres)");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let store = Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        TestDb { name, url, store }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime guarantee, so a short-lived thread does the work.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            // Not `pool.close()`: its connections belong to the test's runtime, which is
            // blocked on this join, so closing would wait forever. FORCE ends them instead.
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(ADMIN_URL).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}
