//! Group commit: the writes that arrive while a commit is under way share the next one.
//!
//! With `synchronous=FULL` every commit waits for an fsync (~0.3 ms on the reference
//! machine, so ~3,000 commits/s at best). Key creation and quota use are the writes that
//! come in floods, so they go through one writer task that runs every queued operation in
//! a single transaction, each inside its own SAVEPOINT, and acknowledges each caller only
//! after the shared COMMIT returned. Durability per acknowledged write is unchanged; an
//! operation that fails rolls back to its savepoint and leaves the others in the batch.

use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use keyward_core::model::{AuditEntry, KeyRecord};

use super::{id_text, insert_audit, insert_key, live_identity, map_err};
use crate::{Consumed, Result, StoreError};

/// Most operations sharing one commit.
const MAX_BATCH: usize = 512;

pub(super) enum Op {
    CreateKey {
        key: Box<KeyRecord>,
        audit: Box<AuditEntry>,
    },
    ConsumeRemaining {
        id: Uuid,
    },
}

pub(super) enum Done {
    Created,
    Consumed(Consumed),
}

pub(super) struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Done>>,
}

/// The handle the store keeps; the writer task stops when it is dropped.
#[derive(Clone, Debug)]
pub(super) struct GroupCommit {
    tx: mpsc::Sender<Job>,
}

impl GroupCommit {
    pub(super) fn start(writer: SqlitePool) -> GroupCommit {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(writer, rx));
        GroupCommit { tx }
    }

    pub(super) async fn submit(&self, op: Op) -> Result<Done> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { op, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?
    }
}

async fn run(writer: SqlitePool, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = commit_batch(&writer, &batch).await;
        for (job, result) in batch.drain(..).zip(results) {
            // A caller that went away no longer needs its answer.
            let _ = job.reply.send(result);
        }
    }
}

/// Runs every job in one transaction; returns one result per job.
async fn commit_batch(writer: &SqlitePool, batch: &[Job]) -> Vec<Result<Done>> {
    let mut tx = match writer.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return batch.iter().map(|_| Err(map_err_ref(&e))).collect(),
    };
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        results.push(in_savepoint(&mut tx, &job.op).await);
    }
    if let Err(e) = tx.commit().await {
        // Nothing of the batch is durable: every caller hears so.
        return batch.iter().map(|_| Err(map_err_ref(&e))).collect();
    }
    results
}

async fn in_savepoint(conn: &mut SqliteConnection, op: &Op) -> Result<Done> {
    sqlx::query("SAVEPOINT op")
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    let result = apply(conn, op).await;
    let end = if result.is_ok() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    sqlx::raw_sql(end)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    result
}

async fn apply(conn: &mut SqliteConnection, op: &Op) -> Result<Done> {
    match op {
        Op::CreateKey { key, audit } => {
            if live_identity(conn, key.identity_id).await?.is_none() {
                return Err(StoreError::Conflict(
                    "the identity does not exist or is deleted".to_owned(),
                ));
            }
            insert_key(conn, key).await?;
            insert_audit(conn, audit).await?;
            Ok(Done::Created)
        }
        Op::ConsumeRemaining { id } => {
            // One atomic statement under the write lock: no two callers take the last one.
            let left: Option<i64> = sqlx::query_scalar(
                "UPDATE keys SET remaining = remaining - 1 \
                 WHERE id = ? AND remaining > 0 RETURNING remaining",
            )
            .bind(id_text(*id))
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
            if let Some(left) = left {
                return Ok(Done::Consumed(Consumed::Taken { left }));
            }
            let row: Option<Option<i64>> =
                sqlx::query_scalar("SELECT remaining FROM keys WHERE id = ?")
                    .bind(id_text(*id))
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(map_err)?;
            Ok(Done::Consumed(match row {
                None => Consumed::Missing,
                Some(None) => Consumed::Unlimited,
                Some(Some(_)) => Consumed::Exhausted,
            }))
        }
    }
}

/// `map_err` for a borrowed error (a failed BEGIN or COMMIT answers every job).
fn map_err_ref(e: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("the store could not commit: {e}"))
}
