//! The binlog source: connect to MySQL/MariaDB as a replica, stream the
//! binlog, decode row images into [`crate::event::ChangeEvent`]s.

pub mod checks;
