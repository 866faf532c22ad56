//! Account scenarios: `login`, `whoami`, `account-data`.

use std::sync::Arc;
use std::time::Instant;

use reqwest::Client;
use serde_json::json;

use crate::Bench;
use crate::accounts::{Session, close_sessions, login, logout, session_of, sessions};
use crate::http::{Stats, base, encode_segment, send};

pub async fn bench_login(client: Client, b: Bench) {
    b.announce("login");
    let (st, elapsed) = crate::http::run_tasks(b.concurrency, b.duration, |i, deadline| {
        let (client, u) = (client.clone(), b.users.clone());
        async move {
            let mut st = Stats::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = login(&client, &u, i).await;
                st.record(t0, &r);
                if let Some(s) = r.ok().as_ref().and_then(session_of)
                    && logout(&client, &u.url, &s.token).await.is_err()
                {
                    st.untimed_errors += 1;
                }
            }
            st
        }
    })
    .await;
    crate::http::print_line(b.head("login", json!({})), st, elapsed);
}

pub async fn bench_whoami(client: Client, b: Bench, token: Option<String>) {
    let sess = match &token {
        Some(t) => {
            let shared = Arc::new(Session { user_id: String::new(), token: t.clone() });
            vec![shared; b.concurrency]
        }
        None => sessions(&client, &b).await,
    };
    let url = format!("{}/_matrix/client/v3/account/whoami", base(&b.users.url));
    b.announce("whoami");
    let (st, elapsed) = crate::http::run_tasks(b.concurrency, b.duration, |i, deadline| {
        let (client, url, s) = (client.clone(), url.clone(), sess[i].clone());
        async move {
            let mut st = Stats::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = send(client.get(&url).bearer_auth(&s.token)).await;
                st.record(t0, &r);
            }
            st
        }
    })
    .await;
    crate::http::print_line(b.head("whoami", json!({})), st, elapsed);
    if token.is_none() {
        close_sessions(&client, &b.users.url, &sess).await;
    }
}

pub async fn bench_account_data(client: Client, b: Bench, keys: u64) {
    let sess = sessions(&client, &b).await;
    let base = base(&b.users.url).to_owned();
    let keys = keys.max(1);
    b.announce("account-data");
    let (st, elapsed) = crate::http::run_tasks(b.concurrency, b.duration, |i, deadline| {
        let (client, s) = (client.clone(), sess[i].clone());
        let prefix = format!("{base}/_matrix/client/v3/user/{}/account_data/", encode_segment(&s.user_id));
        async move {
            let mut st = Stats::default();
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                let url = format!("{prefix}org.myelin.bench.{}", n % keys);
                let body = json!({"n": n, "task": i, "note": "myelin-loadgen account data"});
                let t0 = Instant::now();
                let r = send(client.put(url).bearer_auth(&s.token).json(&body)).await;
                st.record(t0, &r);
                n += 1;
            }
            st
        }
    })
    .await;
    crate::http::print_line(b.head("account-data", json!({})), st, elapsed);
    close_sessions(&client, &b.users.url, &sess).await;
}
