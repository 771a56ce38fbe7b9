//! The cluster's credentials: the store of principals and secrets in the master's state
//! directory, the `bramble credentials` and `bramble broker-config` commands, and the embedded
//! broker's login check.
//!
//! # Layout
//!
//! - [`store`]: `STATE_DIR/credentials.toml` (mode 0600 in a 0700 directory, written atomically),
//!   created on first use with the master principal and the operator `admin`.
//! - [`random`]: secrets and salts from the kernel; [`time`]: issue times as RFC 3339.
//! - [`commands`]: `bramble credentials add|remove|list` and `bramble broker-config mosquitto`;
//!   [`cli`]: their command lines, and the master's start-up with its store.
//! - [`authenticator`]: the embedded broker's check of each CONNECT (username, password, client
//!   id bound to that password), with [`client_ids`] saying which base client ids each principal
//!   may use.
//! - [`reload`]: a running master re-reads the store when it changes.
//! - [`grants`]: the operator's grants (`authorization.toml`): which frameworks may run, how.
//! - [`mosquitto`]: the password file, ACL file and configuration snippet for Mosquitto.

pub mod authenticator;
pub mod cli;
pub mod client_ids;
pub mod commands;
pub mod grants;
pub mod mosquitto;
pub mod random;
pub mod reload;
pub mod store;
pub mod time;

pub use authenticator::Authenticator;
pub use store::{Opened, Store, StoreError, DEFAULT_STATE_DIR};
