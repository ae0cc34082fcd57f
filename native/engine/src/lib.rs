//! NativeStore's storage engine, in plain Rust.
//!
//! It stores encoded terms (see [`format`]) in concurrent tables and knows
//! nothing about the BEAM or Elixir APIs: the NIF crate converts terms to
//! and from the byte format and maps each API call onto these structures.
//!
//! - [`format`]: the byte encoding of values, and how to walk it.
//! - [`entry`]: one stored object with its key.
//! - [`blob`]: large binaries kept out of line, shared by reference count.
//! - [`set`]: the sharded concurrent hash table with set semantics.
//! - [`bag`]: the same for `bag` and `duplicate_bag` tables (buckets per key).
//! - `segmap`: a hash shard's map, whose items stay in place while the
//!   table is fixed ([`fixation`]: `safe_fixtable/2`).
//! - [`order`]: Erlang term order over encoded values.
//! - [`ext`]: canonical form of values kept in the VM's external term
//!   format (equal terms, equal bytes).
//! - [`ordered`]: the `ordered_set` table (B-trees in term order, in key
//!   ranges with their own locks).
//! - [`prefilter`]: necessary conditions of a match specification, checked
//!   on encoded objects so that scans decode only possible matches.
//! - [`tuple_ops`]: counter and element updates of stored tuples.
//! - [`meta`]: ownership and access rules of a table.
//! - [`lock`]: hash shard locks, taken with a short spin before parking.
//! - [`reclaim`]: freeing big structures on a background thread.
//! - [`registry`]: the process registry (unique or duplicate keys).
//! - [`background`]: a worker thread for work too long for a scheduler.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod background;
pub mod bag;
pub mod blob;
pub mod entry;
pub mod ext;
pub mod fixation;
pub mod format;
pub mod lock;
pub mod map_merge;
pub mod meta;
pub mod order;
pub mod ordered;
pub mod prefilter;
pub mod reclaim;
pub mod registry;
mod segmap;
pub mod set;
pub mod tuple_ops;
