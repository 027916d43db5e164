//! Stand-ins for outside services, speaking their real protocols on loopback.

pub mod provider;
