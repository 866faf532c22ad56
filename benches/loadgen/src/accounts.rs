//! Accounts: shared-secret registration, logins and the sessions the scenarios act with.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::Client;
use serde_json::{Value, json};
use sha1::Sha1;
use tokio::task::JoinSet;

use crate::http::{Failure, Stats, base, fail, round3, send};
use crate::{Bench, Users};

pub fn user_name(u: &Users, i: usize) -> String {
    format!("{}{}", u.prefix, i % u.users)
}

pub struct Session {
    pub user_id: String,
    pub token: String,
}

pub async fn login(client: &Client, u: &Users, i: usize) -> Result<Value, Failure> {
    let body = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_name(u, i)},
        "password": u.password,
        "initial_device_display_name": "myelin-loadgen",
    });
    send(client.post(format!("{}/_matrix/client/v3/login", base(&u.url))).json(&body)).await
}

pub fn session_of(v: &Value) -> Option<Session> {
    Some(Session {
        user_id: v.get("user_id")?.as_str()?.to_owned(),
        token: v.get("access_token")?.as_str()?.to_owned(),
    })
}

pub async fn logout(client: &Client, url: &str, token: &str) -> Result<Value, Failure> {
    let req = client.post(format!("{}/_matrix/client/v3/logout", base(url))).bearer_auth(token);
    send(req.json(&json!({}))).await
}

/// Log in once per task (untimed), or exit: a benchmark without sessions is void.
pub async fn sessions(client: &Client, b: &Bench) -> Vec<Arc<Session>> {
    let mut set = JoinSet::new();
    for i in 0..b.concurrency {
        let (client, u) = (client.clone(), b.users.clone());
        set.spawn(async move { (i, login(&client, &u, i).await) });
    }
    let mut out: Vec<(usize, Arc<Session>)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (i, result) = joined.expect("login task panicked");
        match result.as_ref().map(session_of) {
            Ok(Some(s)) => out.push((i, Arc::new(s))),
            Ok(None) => fail(&format!("login of {} answered without user_id/access_token", user_name(&b.users, i))),
            Err(f) => fail(&format!("login of {} failed: {}", user_name(&b.users, i), f.describe())),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

/// Log the benchmark's devices out so they don't pile up across runs.
pub async fn close_sessions(client: &Client, url: &str, sess: &[Arc<Session>]) {
    let mut set = JoinSet::new();
    for s in sess {
        let (client, url, s) = (client.clone(), url.to_owned(), s.clone());
        set.spawn(async move { logout(&client, &url, &s.token).await.is_ok() });
    }
    let failed = set.join_all().await.iter().filter(|ok| !**ok).count();
    if failed > 0 {
        eprintln!("loadgen: {failed} of {} logouts after the run failed", sess.len());
    }
}

fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for part in [nonce, user, password] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

/// Register one user; `Ok(Some(answer))` if created (the answer holds an access token),
/// `Ok(None)` if it already existed.
pub async fn register(
    client: &Client,
    url: &str,
    secret: &str,
    user: &str,
    password: &str,
) -> Result<Option<Value>, Failure> {
    let endpoint = format!("{}/_synapse/admin/v1/register", base(url));
    let nonce = send(client.get(&endpoint)).await?;
    let nonce = nonce.get("nonce").and_then(Value::as_str).unwrap_or_default().to_owned();
    let body = json!({
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": false,
        "mac": registration_mac(secret, &nonce, user, password, false),
    });
    match send(client.post(&endpoint).json(&body)).await {
        Ok(answer) => Ok(Some(answer)),
        Err(f) if f.errcode().as_deref() == Some("M_USER_IN_USE") => Ok(None),
        Err(f) => Err(f),
    }
}

/// A registration's answer (or a login's, if the user existed): whether it created the user.
type Registered = Result<(bool, Value), Failure>;

/// Users PREFIX0..PREFIX{N-1} registered (or logged in, if they existed), with a session each.
pub struct Population {
    pub sessions: Vec<Arc<Session>>,
    pub created: u64,
    pub existing: u64,
    pub elapsed_s: f64,
}

/// Register `u.users` users with `concurrency` registrations in flight, keeping the session each
/// registration opens; users that exist already log in instead. Exits on any failure.
pub async fn populate(client: &Client, u: &Users, secret: &str, concurrency: usize) -> Population {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, u, secret, next) = (client.clone(), u.clone(), secret.to_owned(), next.clone());
        set.spawn(async move {
            let mut out: Vec<(usize, Registered)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= u.users {
                    break;
                }
                let name = user_name(&u, i);
                let r = match register(&client, &u.url, &secret, &name, &u.password).await {
                    Ok(Some(answer)) => Ok((true, answer)),
                    Ok(None) => login(&client, &u, i).await.map(|a| (false, a)),
                    Err(f) => Err(f),
                };
                let failed = r.is_err();
                out.push((i, r));
                if failed {
                    break;
                }
            }
            out
        });
    }
    let mut sessions: Vec<Option<Arc<Session>>> = (0..u.users).map(|_| None).collect();
    let (mut created, mut existing) = (0, 0);
    for (i, r) in set.join_all().await.into_iter().flatten() {
        match r {
            Ok((new, answer)) => {
                let Some(s) = session_of(&answer) else {
                    fail(&format!("registration or login of {} gave no access token", user_name(u, i)))
                };
                sessions[i] = Some(Arc::new(s));
                if new { created += 1 } else { existing += 1 }
            }
            Err(f) => fail(&format!("registration of {} failed: {}", user_name(u, i), f.describe())),
        }
    }
    let sessions = sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.unwrap_or_else(|| fail(&format!("no session for {}", user_name(u, i)))))
        .collect();
    Population { sessions, created, existing, elapsed_s: started.elapsed().as_secs_f64() }
}

pub async fn setup_users(client: Client, u: Users, secret: String, concurrency: usize) {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, u, secret, next) = (client.clone(), u.clone(), secret.clone(), next.clone());
        set.spawn(async move {
            let (mut created, mut existing, mut st) = (0u64, 0u64, Stats::default());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= u.users {
                    break;
                }
                match register(&client, &u.url, &secret, &user_name(&u, i), &u.password).await {
                    Ok(Some(_)) => created += 1,
                    Ok(None) => existing += 1,
                    Err(f) => st.record::<()>(Instant::now(), &Err(f)),
                }
            }
            (created, existing, st)
        });
    }
    let (mut created, mut existing, mut st) = (0, 0, Stats::default());
    for (c, e, s) in set.join_all().await {
        created += c;
        existing += e;
        st.merge(s);
    }
    println!(
        "{}",
        json!({
            "scenario": "setup-users", "url": u.url, "users": u.users, "created": created,
            "existing": existing, "errors": st.errors, "error_samples": st.error_samples(),
            "elapsed_s": round3(started.elapsed().as_secs_f64()),
        })
    );
    if st.errors > 0 {
        std::process::exit(1);
    }
}
