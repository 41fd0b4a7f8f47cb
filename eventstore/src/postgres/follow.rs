//! The follower: reads what any node appended, by position, and hands it to this node's
//! subscribers and catch-up. A notification (one per committed group) only wakes it early;
//! polling by position is the truth, so a lost notification delays nothing past the poll
//! interval, and a dead listening connection is opened again in the background.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::error::StoreError;

use super::{db_error, PgShared};

const PAGE_EVENTS: usize = 1024;

/// Runs until the store is closed.
pub(crate) async fn run(shared: Arc<PgShared>) {
    let mut listening: Option<(Client, tokio::task::JoinHandle<()>)> = None;
    while !shared.closed.load(Ordering::Acquire) {
        if shared.options.notifications
            && listening
                .as_ref()
                .is_none_or(|(_, task)| task.is_finished())
        {
            listening = listen(&shared).await.ok();
        }
        tokio::select! {
            () = shared.wake_follower.notified() => {}
            () = tokio::time::sleep(shared.options.poll_interval) => {}
        }
        if shared.closed.load(Ordering::Acquire) {
            break;
        }
        match read_new(&shared).await {
            Ok(()) => shared.set_cut_off(None),
            Err(error) => {
                tracing::warn!(%error, "reading the shared log failed; polling goes on");
                shared.set_cut_off(Some(error.to_string()));
            }
        }
    }
    if let Some((_, task)) = listening {
        task.abort();
    }
}

/// Reads and hands over every event after what this node has, up to the store's head now.
pub(crate) async fn read_new(shared: &PgShared) -> Result<(), StoreError> {
    loop {
        let known = shared.known.load(Ordering::Acquire);
        let page = shared.read_after(known, PAGE_EVENTS).await?;
        let full = page.len() == PAGE_EVENTS;
        if page.is_empty() {
            return Ok(());
        }
        shared.publish(page).await;
        if !full {
            return Ok(());
        }
    }
}

/// A connection of its own that `LISTEN`s; each notification wakes the follower.
async fn listen(
    shared: &Arc<PgShared>,
) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
    let config = shared.options.config()?;
    let (client, mut connection) =
        tokio::time::timeout(shared.options.lock_timeout * 2, config.connect(NoTls))
            .await
            .map_err(|_| StoreError::Unavailable("connecting to PostgreSQL timed out".into()))?
            .map_err(db_error)?;
    let wake = Arc::clone(shared);
    let task = tokio::spawn(async move {
        loop {
            let message = futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await;
            match message {
                Some(Ok(AsyncMessage::Notification(_))) => wake.wake_follower.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::debug!(%error, "the listening connection ended");
                    return;
                }
                None => return,
            }
        }
    });
    let schema = &shared.options.schema;
    if let Err(error) = client.batch_execute(&format!("LISTEN {schema}_log")).await {
        task.abort();
        return Err(db_error(error));
    }
    Ok((client, task))
}
