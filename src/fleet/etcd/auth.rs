//! etcd's users and roles, for `fleet grant-host`, `grant-operator` and `revoke`.

use anyhow::{Context, Result};
use etcd_client::{Permission, PermissionType, RoleRevokePermissionOptions, UserAddOptions};

use super::Etcd;
use crate::fleet::access::Held;

/// etcd's users and roles (`fleet grant-host`, `grant-operator`, `revoke`; see
/// [`super::access::grant`]). etcd answers a user or role that does not exist with
/// FailedPrecondition "... not found": that is `None`/`false` here, not an error.
impl Etcd {
    /// The permissions of `role`, or `None` when there is no such role.
    pub fn role_permissions(&mut self, role: &str) -> Result<Option<Vec<Held>>> {
        let context = self.context(&format!("reading role {role}"));
        match self.runtime.block_on(self.client.role_get(role)) {
            Ok(response) => Ok(Some(
                response
                    .permissions()
                    .iter()
                    .map(|p| Held {
                        key: p.key().to_vec(),
                        range_end: p.range_end().to_vec(),
                        kind: p.get_type(),
                    })
                    .collect(),
            )),
            Err(error) if not_found(&error) => Ok(None),
            Err(error) => Err(error).context(context),
        }
    }

    /// The roles of `user`, or `None` when there is no such user.
    pub fn user_roles(&mut self, user: &str) -> Result<Option<Vec<String>>> {
        let context = self.context(&format!("reading user {user}"));
        match self.runtime.block_on(self.client.user_get(user)) {
            Ok(response) => Ok(Some(response.roles().to_vec())),
            Err(error) if not_found(&error) => Ok(None),
            Err(error) => Err(error).context(context),
        }
    }

    pub fn add_role(&mut self, role: &str) -> Result<()> {
        let context = self.context(&format!("adding role {role}"));
        self.runtime
            .block_on(self.client.role_add(role))
            .context(context)?;
        Ok(())
    }

    pub fn grant_permission(&mut self, role: &str, permission: &Held) -> Result<()> {
        let context = self.context(&format!("granting {permission} to role {role}"));
        let kind = match permission.kind {
            crate::fleet::access::READ => PermissionType::Read,
            crate::fleet::access::WRITE => PermissionType::Write,
            _ => PermissionType::Readwrite,
        };
        let mut grant = Permission::new(kind, permission.key.clone());
        if !permission.range_end.is_empty() {
            grant = grant.with_range_end(permission.range_end.clone());
        }
        self.runtime
            .block_on(self.client.role_grant_permission(role, grant))
            .context(context)?;
        Ok(())
    }

    pub fn revoke_permission(&mut self, role: &str, key: &[u8], range_end: &[u8]) -> Result<()> {
        let context = self.context(&format!(
            "revoking {} from role {role}",
            String::from_utf8_lossy(key)
        ));
        let options = (!range_end.is_empty())
            .then(|| RoleRevokePermissionOptions::new().with_range_end(range_end.to_vec()));
        self.runtime
            .block_on(
                self.client
                    .role_revoke_permission(role, key.to_vec(), options),
            )
            .context(context)?;
        Ok(())
    }

    /// Add `user` with `password`, or with none (etcd 3.4's `--no-password`: it can only be
    /// authenticated by a client certificate whose CN is its name).
    pub fn add_user(&mut self, user: &str, password: Option<&str>) -> Result<()> {
        let context = self.context(&format!("adding user {user}"));
        let (password, options) = match password {
            Some(password) => (password.to_string(), None),
            None => (String::new(), Some(UserAddOptions::new().with_no_pwd())),
        };
        self.runtime
            .block_on(self.client.user_add(user, password, options))
            .context(context)?;
        Ok(())
    }

    pub fn change_password(&mut self, user: &str, password: &str) -> Result<()> {
        let context = self.context(&format!("changing the password of user {user}"));
        self.runtime
            .block_on(self.client.user_change_password(user, password))
            .context(context)?;
        Ok(())
    }

    /// Whether `user` logs in with `password` (asked without changing this connection's
    /// own login); `None` when etcd's authentication is off, and it cannot tell.
    pub fn password_is(&mut self, user: &str, password: &str) -> Result<Option<bool>> {
        let context = self.context(&format!("checking the password of user {user}"));
        let mut auth = self.client.auth_client();
        match self
            .runtime
            .block_on(auth.authenticate(user.to_string(), password.to_string()))
        {
            Ok(_) => Ok(Some(true)),
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("authentication failed") =>
            {
                Ok(Some(false))
            }
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("authentication is not enabled") =>
            {
                Ok(None)
            }
            Err(error) => Err(error).context(context),
        }
    }

    /// Whether etcd enforces its users and roles (`etcdctl auth enable`): etcd 3.4 has no
    /// call that says, but a login with no user is refused one way when it is on and
    /// another when it is off.
    pub fn auth_enabled(&mut self) -> Result<bool> {
        Ok(self.password_is("", "")?.is_some())
    }

    pub fn grant_role(&mut self, user: &str, role: &str) -> Result<()> {
        let context = self.context(&format!("granting role {role} to user {user}"));
        self.runtime
            .block_on(self.client.user_grant_role(user, role))
            .context(context)?;
        Ok(())
    }

    pub fn revoke_role(&mut self, user: &str, role: &str) -> Result<()> {
        let context = self.context(&format!("revoking role {role} from user {user}"));
        self.runtime
            .block_on(self.client.user_revoke_role(user, role))
            .context(context)?;
        Ok(())
    }

    /// Delete `user`; `false` when there was none.
    pub fn delete_user(&mut self, user: &str) -> Result<bool> {
        let context = self.context(&format!("deleting user {user}"));
        match self.runtime.block_on(self.client.user_delete(user)) {
            Ok(_) => Ok(true),
            Err(error) if not_found(&error) => Ok(false),
            Err(error) => Err(error).context(context),
        }
    }

    /// Delete `role`; `false` when there was none.
    pub fn delete_role(&mut self, role: &str) -> Result<bool> {
        let context = self.context(&format!("deleting role {role}"));
        match self.runtime.block_on(self.client.role_delete(role)) {
            Ok(_) => Ok(true),
            Err(error) if not_found(&error) => Ok(false),
            Err(error) => Err(error).context(context),
        }
    }
}

/// etcd's answer for a user or role that does not exist ("etcdserver: user name not found",
/// "etcdserver: role name not found").
fn not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::FailedPrecondition
            && status.message().ends_with("name not found"))
}
