//! Running the server: bind the listeners (client API over HTTP, federation over TLS), serve until
//! SIGINT/SIGTERM, then let in-flight requests finish and close the database.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use crate::{config::Config, service::Services, storage::Storage};

/// Serves until a shutdown signal. Prints the bound client address on stdout, so scripts that
/// asked for port 0 learn the real one.
pub async fn serve(config: Config) -> Result<(), String> {
    let storage = Storage::open(&config.database).map_err(|e| e.to_string())?;
    let services = Services::new(config, storage).await.map_err(|e| e.to_string())?;
    let config = services.config.clone();
    let shutdown = shutdown_signal();
    for variable in &config.ignored_variables {
        tracing::info!("ignoring {variable}: it names no setting");
    }
    services.start_appservices().await.map_err(|e| e.to_string())?;
    services.start_pushers();

    let listener = TcpListener::bind(config.listen.client)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen.client))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Bound before the client address is announced, so that whoever waits for that line can
    // use both.
    let federation = match (config.listen.federation, &config.tls.cert, &config.tls.key) {
        (Some(federation), Some(cert), Some(key)) => {
            let tls = crate::tls::server_config(cert, key)?;
            let tcp = TcpListener::bind(federation).await.map_err(|e| format!("cannot listen on {federation}: {e}"))?;
            let listener = crate::tls::TlsListener::new(tcp, tls).map_err(|e| e.to_string())?;
            let address = axum::serve::Listener::local_addr(&listener).map_err(|e| e.to_string())?;
            tracing::info!("federation API listening on https://{address}");
            println!("myelin: federation on https://{address}");
            Some(listener)
        }
        _ => None,
    };
    tracing::info!(server_name = %config.server_name, "client API listening on http://{address}");
    println!("myelin: listening on http://{address}");

    crate::allocator::return_free_memory_periodically();
    tokio::spawn(Services::run_presence_sweeps(Arc::downgrade(&services)));
    tokio::spawn(Services::run_device_list_updates(Arc::downgrade(&services)));
    if let Err(e) = services.federation.sender.resume() {
        tracing::error!(error = %e, "cannot read the outbound federation queues");
    }
    let app = crate::api::router(services.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let mut servers = Vec::new();
    let client_stopped = until_stopped();
    servers.push(tokio::spawn(async move {
        // Without TCP_NODELAY, a small write that follows another (a WebSocket update after an
        // answer) waits for the peer's delayed ACK: 40 ms of latency for nothing.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app).with_graceful_shutdown(client_stopped).await
    }));
    if let Some(listener) = federation {
        let app = crate::api::federation_router(services.clone()).into_make_service();
        let federation_stopped = until_stopped();
        servers.push(tokio::spawn(async move {
            axum::serve(listener, app).with_graceful_shutdown(federation_stopped).await
        }));
    }

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    services.shutdown.send_replace(true);
    stop.send_replace(true);
    let grace = Duration::from_secs(config.limits.shutdown_grace_secs);
    let finished = async {
        // What the sender did not deliver stays queued for the next start.
        services.federation.sender.shutdown().await;
        for server in servers {
            server.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
        // Upgraded connections (WebSockets) are outside axum's graceful shutdown; each holds the
        // services until it has sent its close frame.
        while Arc::strong_count(&services) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, String>(())
    };
    match tokio::time::timeout(grace, finished).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("requests still running after {grace:?}; closing anyway"),
    }
    close(services);
    Ok(())
}

/// Drops the services; the storage's drop writes what is queued and flushes the database.
fn close(services: Arc<Services>) {
    match Arc::try_unwrap(services) {
        Ok(services) => drop(services),
        Err(_) => tracing::warn!("requests still hold the database; its log keeps every write"),
    }
}

/// Installs the SIGINT/SIGTERM handlers at once (so a signal right after start-up is not fatal)
/// and resolves when one arrives.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
