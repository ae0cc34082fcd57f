//! `native_store_nif`: the rustler glue between the BEAM and
//! `native_store_engine`. It converts terms ([`codec`]), checks arguments,
//! and calls the engine; all data structures live in the engine crate.

/// Small allocations dominate (one per stored object); mimalloc serves them
/// faster than the system allocator, especially across scheduler threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod blob;
mod codec;
mod registry;
mod table;

mod atoms {
    rustler::atoms! {
        undefined,
        none,
        set,
        ordered_set,
        bag,
        duplicate_bag,
        end_of_table = "$end_of_table",
        public,
        protected,
        private,
        more,
        done,
        ets_transfer = "ETS-TRANSFER",
        ok,
        error,
        already_registered,
        unknown_registry,
        duplicate,
        untidy,
        lt = "<",
        le = "=<",
        gt = ">",
        ge = ">=",
        eq = "==",
        dirty,
    }
}

fn load(env: rustler::Env, _info: rustler::Term) -> bool {
    table::on_load(env)
}

rustler::init!("Elixir.NativeStore.Nif", load = load);
