//! The conformance kit against a real Valkey server (`scripts/valkey.sh`), each
//! case on a fresh key prefix and a simulated clock. Families this backend does
//! not claim yet are reported skipped by the kit. The state dump the kit compares
//! around rejections is every key under the case's prefix.

mod common;

use std::sync::Arc;

/// A fresh, isolated Valkey backend on a simulated clock.
async fn valkey_fixture() -> ff_conformance::Fixture {
    let backend = common::backend(Some(ff_core::SimClock::default())).await;
    let prefix = backend.config().key_prefix.clone();
    ff_conformance::Fixture::new(Arc::new(backend)).with_inspect(Arc::new(move || common::raw_dump(&prefix)))
}

ff_conformance::suite!(|| async { valkey_fixture().await });
