//! rmcp's in-memory session manager, with session ids that carry this replica's prefix.
//!
//! rmcp's `LocalSessionManager` mints UUIDs inside `create_session`, with no hook for the id. Its
//! session table, its configuration and the function that builds a session from an id are public,
//! so [`ReplicaSessions`] mints the id itself, registers the session in the same table, and hands
//! every other operation to the local manager unchanged.

use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::WorkerTransport;
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker, SessionConfig, SessionError,
    create_local_session,
};
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};

use super::ReplicaId;

/// The session manager of the HTTP service: rmcp's local one, minting `<replica>.<32 hex>` ids.
pub struct ReplicaSessions {
    replica: ReplicaId,
    local: LocalSessionManager,
}

impl ReplicaSessions {
    /// A manager for `replica` whose sessions use `config`.
    pub fn new(replica: ReplicaId, config: SessionConfig) -> ReplicaSessions {
        let mut local = LocalSessionManager::default();
        local.session_config = config;
        ReplicaSessions { replica, local }
    }

    /// The replica whose prefix the ids carry.
    pub fn replica(&self) -> &ReplicaId {
        &self.replica
    }

    /// Whether the session `id` is alive here.
    pub async fn contains(&self, id: &str) -> bool {
        self.local.sessions.read().await.contains_key(id)
    }
}

impl SessionManager for ReplicaSessions {
    type Error = LocalSessionManagerError;
    type Transport = WorkerTransport<LocalSessionWorker>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let id: SessionId = self
            .replica
            .new_session_id()
            .map_err(|e| LocalSessionManagerError::SessionError(SessionError::Io(e)))?
            .into();
        let (handle, worker) = create_local_session(id.clone(), self.local.session_config.clone());
        self.local.sessions.write().await.insert(id.clone(), handle);
        Ok((id, WorkerTransport::spawn(worker)))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.local.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.local.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.local.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.local.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.local.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.local.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.local.resume(id, last_event_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_get_ids_with_the_replica_prefix_and_are_found_by_them() {
        let m = ReplicaSessions::new(ReplicaId::parse("r7").unwrap(), SessionConfig::default());
        let (id, _transport) = m.create_session().await.unwrap();
        assert_eq!(super::super::owner(&id), Some("r7"));
        assert!(m.has_session(&id).await.unwrap());
        assert!(m.contains(&id).await);
        // Control: an id this manager did not mint is not there.
        assert!(!m.contains("r7.00000000000000000000000000000000").await);
        m.close_session(&id).await.unwrap();
        assert!(!m.contains(&id).await);
    }
}
