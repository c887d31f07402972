//! The local strategy's records, kept consistent with each other: `Credential` (username
//! → `{"kuid", "hash"}`) and `Login` (kuid → `{"username"}`). Controllers go through
//! these calls rather than writing the two kinds themselves.

use serde_json::{Value, json};

use super::{Kind, Store, StoreResult};

/// A user's local credentials.
pub struct LocalCredential {
    pub kuid: String,
    /// The PHC string of the password's hash.
    pub hash: String,
}

impl Store {
    /// The credentials of `username`, if someone has that username.
    pub async fn credential(&self, username: &str) -> StoreResult<Option<LocalCredential>> {
        let record = self.get(Kind::Credential, username).await?;
        Ok(record.map(|r| LocalCredential {
            kuid: text(&r, "kuid"),
            hash: text(&r, "hash"),
        }))
    }

    /// The username of `kuid`'s local credentials, if it has some.
    pub async fn username_of(&self, kuid: &str) -> StoreResult<Option<String>> {
        let login = self.get(Kind::Login, kuid).await?;
        Ok(login.and_then(|l| l.get("username").and_then(Value::as_str).map(str::to_owned)))
    }

    /// Gives `kuid` the credentials `username`/`hash`; false (and nothing written) when
    /// the username is taken.
    pub async fn add_credentials(
        &self,
        kuid: &str,
        username: &str,
        hash: &str,
    ) -> StoreResult<bool> {
        let record = json!({"kuid": kuid, "hash": hash});
        if !self.insert_new(Kind::Credential, username, &record).await? {
            return Ok(false);
        }
        self.put(Kind::Login, kuid, &json!({"username": username}))
            .await?;
        Ok(true)
    }

    /// Replaces `kuid`'s credentials `from` with `to`/`hash` (the same username or a new
    /// one); false (and nothing written) when a new username is taken.
    pub async fn replace_credentials(
        &self,
        kuid: &str,
        from: &str,
        to: &str,
        hash: &str,
    ) -> StoreResult<bool> {
        let record = json!({"kuid": kuid, "hash": hash});
        if from == to {
            self.put(Kind::Credential, from, &record).await?;
            return Ok(true);
        }
        if !self.insert_new(Kind::Credential, to, &record).await? {
            return Ok(false);
        }
        self.delete(Kind::Credential, from).await?;
        self.put(Kind::Login, kuid, &json!({"username": to}))
            .await?;
        Ok(true)
    }

    /// Removes `kuid`'s local credentials, if it has some.
    pub async fn remove_credentials(&self, kuid: &str) -> StoreResult<()> {
        if let Some(username) = self.username_of(kuid).await? {
            self.delete(Kind::Credential, &username).await?;
        }
        self.delete(Kind::Login, kuid).await?;
        Ok(())
    }
}

fn text(record: &Value, field: &str) -> String {
    record
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
