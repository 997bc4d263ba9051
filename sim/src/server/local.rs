//! A server on loopback for tests and tools ([`LocalServer`]), and its kubeconfig.

use std::net::SocketAddr;

/// A kubeconfig for `kubectl` and kube-rs clients of the server at `url`.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth-sim\n  cluster:\n    server: {url}\nusers:\n- name: berth-sim\n  user: {{}}\ncontexts:\n- name: berth-sim\n  context:\n    cluster: berth-sim\n    user: berth-sim\ncurrent-context: berth-sim\n"
    )
}

/// [`kubeconfig`] whose user sends `token` as its bearer token: the server takes the token
/// for the user's name ([`super::Audit`]).
pub fn kubeconfig_with_token(url: &str, token: &str) -> String {
    kubeconfig(url).replace("  user: {}\n", &format!("  user:\n    token: {token}\n"))
}

/// A running [`ApiServer`](super::ApiServer) on loopback; stops when dropped.
#[derive(Debug)]
pub struct LocalServer {
    pub addr: SocketAddr,
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LocalServer {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for `kubectl` and kube-rs clients.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }

    /// Stops and waits for the server to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
