//! The single-node store: one redb file under `services.storage.path`. redb calls block,
//! so every operation runs on tokio's blocking pool, never on an actix worker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;

use super::{Kind, StoreError, StoreResult};
use crate::protocol::now_ms;

/// (kind, id) → JSON text.
const DOCUMENTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("documents");
/// token → (kuid, expiry in ms since the epoch, 0 = never).
const TOKENS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("tokens");
/// Single values (the JWT secret).
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

const FILE_NAME: &str = "kuzzle-rt.redb";

const SECURITY_VERSION: &str = "security-version";

pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Only this process writes the file, so the security version is mirrored here and
    /// reading it costs nothing.
    security_version: AtomicU64,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

impl EmbeddedStore {
    pub async fn open(dir: &str) -> StoreResult<EmbeddedStore> {
        let dir = PathBuf::from(dir);
        let db = tokio::task::spawn_blocking(move || open_file(&dir))
            .await
            .map_err(failed)??;
        let store = EmbeddedStore {
            db: Arc::new(db),
            security_version: AtomicU64::new(0),
        };
        let stored = store.stored_security_version().await?;
        store.security_version.store(stored, Ordering::Release);
        Ok(store)
    }

    /// Runs `work` with the database on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(failed)?
    }

    pub async fn get(&self, kind: Kind, id: &str) -> StoreResult<Option<Value>> {
        let id = id.to_owned();
        self.run(move |db| {
            let tx = db.begin_read().map_err(failed)?;
            let table = match tx.open_table(DOCUMENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(failed(e)),
            };
            let text = table.get((kind.name(), id.as_str())).map_err(failed)?;
            text.map(|t| serde_json::from_str(t.value()).map_err(failed))
                .transpose()
        })
        .await
    }

    pub async fn put(&self, kind: Kind, id: &str, value: &Value) -> StoreResult<()> {
        let (id, text) = (id.to_owned(), value.to_string());
        self.write(move |tx| {
            tx.open_table(DOCUMENTS)
                .map_err(failed)?
                .insert((kind.name(), id.as_str()), text.as_str())
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    /// The document carries its `expiresAt`, which `Store` checks.
    pub async fn put_expiring(
        &self,
        kind: Kind,
        id: &str,
        value: &Value,
        _ttl: std::time::Duration,
    ) -> StoreResult<()> {
        self.put(kind, id, value).await
    }

    pub async fn insert_new(&self, kind: Kind, id: &str, value: &Value) -> StoreResult<bool> {
        let (id, text) = (id.to_owned(), value.to_string());
        self.write(move |tx| {
            let mut table = tx.open_table(DOCUMENTS).map_err(failed)?;
            if table
                .get((kind.name(), id.as_str()))
                .map_err(failed)?
                .is_some()
            {
                return Ok(false);
            }
            table
                .insert((kind.name(), id.as_str()), text.as_str())
                .map_err(failed)?;
            Ok(true)
        })
        .await
    }

    pub async fn delete(&self, kind: Kind, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            Ok(tx
                .open_table(DOCUMENTS)
                .map_err(failed)?
                .remove((kind.name(), id.as_str()))
                .map_err(failed)?
                .is_some())
        })
        .await
    }

    pub async fn list(&self, kind: Kind) -> StoreResult<Vec<(String, Value)>> {
        self.run(move |db| {
            let tx = db.begin_read().map_err(failed)?;
            let table = match tx.open_table(DOCUMENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(failed(e)),
            };
            let mut out = Vec::new();
            for entry in table.range((kind.name(), "")..).map_err(failed)? {
                let (key, text) = entry.map_err(failed)?;
                let (entry_kind, id) = key.value();
                if entry_kind != kind.name() {
                    break;
                }
                out.push((
                    id.to_owned(),
                    serde_json::from_str(text.value()).map_err(failed)?,
                ));
            }
            Ok(out)
        })
        .await
    }

    pub async fn put_token(
        &self,
        token: &str,
        kuid: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let (token, kuid) = (token.to_owned(), kuid.to_owned());
        let expires = ttl.map_or(0, |t| now_ms() + t.as_millis() as u64);
        self.write(move |tx| {
            tx.open_table(TOKENS)
                .map_err(failed)?
                .insert(token.as_str(), (kuid.as_str(), expires))
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    pub async fn token_owner(&self, token: &str) -> StoreResult<Option<String>> {
        Ok(self.token_life(token).await?.map(|(kuid, _)| kuid))
    }

    /// The owner of a live token and when it expires (ms since the epoch; None if never).
    pub async fn token_life(&self, token: &str) -> StoreResult<Option<(String, Option<u64>)>> {
        let token = token.to_owned();
        self.run(move |db| {
            let tx = db.begin_read().map_err(failed)?;
            let table = match tx.open_table(TOKENS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(failed(e)),
            };
            let Some(entry) = table.get(token.as_str()).map_err(failed)? else {
                return Ok(None);
            };
            let (kuid, expires) = entry.value();
            Ok(match expires {
                0 => Some((kuid.to_owned(), None)),
                at if at > now_ms() => Some((kuid.to_owned(), Some(at))),
                _ => None,
            })
        })
        .await
    }

    pub async fn delete_token(&self, token: &str) -> StoreResult<()> {
        let token = token.to_owned();
        self.write(move |tx| {
            tx.open_table(TOKENS)
                .map_err(failed)?
                .remove(token.as_str())
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    /// Live tokens of a user; expired ones met on the way are purged.
    pub async fn user_tokens(&self, kuid: &str) -> StoreResult<Vec<String>> {
        let kuid = kuid.to_owned();
        self.write(move |tx| {
            let mut table = tx.open_table(TOKENS).map_err(failed)?;
            let now = now_ms();
            let mut live = Vec::new();
            let mut expired = Vec::new();
            for entry in table.iter().map_err(failed)? {
                let (token, owner) = entry.map_err(failed)?;
                let (owner, expires) = owner.value();
                if expires != 0 && expires <= now {
                    expired.push(token.value().to_owned());
                } else if owner == kuid {
                    live.push(token.value().to_owned());
                }
            }
            for token in expired {
                table.remove(token.as_str()).map_err(failed)?;
            }
            Ok(live)
        })
        .await
    }

    pub async fn secret_or_init(&self, generated: &str) -> StoreResult<(String, bool)> {
        let generated = generated.to_owned();
        self.write(move |tx| {
            let mut table = tx.open_table(META).map_err(failed)?;
            if let Some(existing) = table.get("secret").map_err(failed)? {
                return Ok((existing.value().to_owned(), false));
            }
            table.insert("secret", generated.as_str()).map_err(failed)?;
            Ok((generated, true))
        })
        .await
    }

    pub async fn security_version(&self) -> StoreResult<u64> {
        Ok(self.security_version.load(Ordering::Acquire))
    }

    async fn stored_security_version(&self) -> StoreResult<u64> {
        self.run(|db| {
            let tx = db.begin_read().map_err(failed)?;
            let table = match tx.open_table(META) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(failed(e)),
            };
            let version = table.get(SECURITY_VERSION).map_err(failed)?;
            Ok(version.and_then(|v| v.value().parse().ok()).unwrap_or(0))
        })
        .await
    }

    pub async fn bump_security_version(&self) -> StoreResult<u64> {
        let next = self
            .write(|tx| {
                let mut table = tx.open_table(META).map_err(failed)?;
                let current: u64 = table
                    .get(SECURITY_VERSION)
                    .map_err(failed)?
                    .and_then(|v| v.value().parse().ok())
                    .unwrap_or(0);
                let next = current + 1;
                table
                    .insert(SECURITY_VERSION, next.to_string().as_str())
                    .map_err(failed)?;
                Ok(next)
            })
            .await?;
        self.security_version.store(next, Ordering::Release);
        Ok(next)
    }

    pub async fn ping(&self) -> StoreResult<()> {
        self.run(|db| db.begin_read().map(|_| ()).map_err(failed))
            .await
    }

    /// Runs `work` in one write transaction, committed when it succeeds.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&redb::WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.run(move |db| {
            let tx = db.begin_write().map_err(failed)?;
            let out = work(&tx)?;
            tx.commit().map_err(failed)?;
            Ok(out)
        })
        .await
    }
}

fn open_file(dir: &Path) -> StoreResult<Database> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot create the storage directory {}: {e}",
            dir.display()
        ))
    })?;
    let file = dir.join(FILE_NAME);
    Database::create(&file)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", file.display())))
}
