//! Operator roles, shared by the REST and GraphQL APIs.

use std::fmt;

/// What a human operator may do. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything the API shows (never secrets).
    Viewer,
    /// Also applies and deletes workload configuration (identities, services, credentials).
    Editor,
    /// Also manages enrollment (verifiers, join tokens) and daemons.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role needed to write objects of API group `group` and kind `kind`: enrollment
    /// (the `auth` group) and daemon records are the admin's; workload configuration the editor's.
    pub fn needed_to_write(group: &str, kind: &str) -> Role {
        if group == riptides_wire::resource::AUTH_GROUP || kind == "Daemon" {
            Role::Admin
        } else {
            Role::Editor
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
